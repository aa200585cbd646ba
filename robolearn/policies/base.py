"""The interface every robolearn policy offers to runners, evaluation, fine-tuning, re-ranking and nodes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from robolearn.policies.features import ObsFeature


@runtime_checkable
class Policy(Protocol):
    """A chunked policy over observation histories (structural: any class with these members is one).

    Observations are {key: (B, n_obs_steps, *shape)} in raw units, oldest first, for the keys of
    `obs_features`; chunks are raw actions (B, n_action_steps, Da) whose first action belongs to the latest
    observation.
    """

    @property
    def obs_features(self) -> dict[str, ObsFeature]: ...

    @property
    def n_obs_steps(self) -> int: ...

    @property
    def n_action_steps(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def predict_action(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The chunk to execute: (B, n_action_steps, Da)."""
        ...

    def sample_chunks(self, obs: dict, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """K candidate chunks per observation, in one batched pass: (B, k, n_action_steps, Da)."""
        ...
