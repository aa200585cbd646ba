"""Observation histories: the last `n_obs_steps` observations, padded at an episode start by repeating the
first one (as `SequenceSampler` pads training windows). One helper for the runner, the chunk-level RL env,
the ROS 2 policy node and the offline Q-learning windows."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np


class ObsHistory:
    """The last `n_obs_steps` observations {key: array}, oldest first.

    Args:
        n_obs_steps: To.
        keys: the observation keys kept (default: every key of the first observation).
        axis: where the time axis goes in `stacked()`: 0 for one env ({key: (To, *shape)}), 1 for a batch of
            envs stepped together ({key: (B, To, *shape)} from observations (B, *shape)).
    """

    def __init__(self, n_obs_steps: int, keys: Iterable[str] | None = None, axis: int = 0):
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        self.n_obs_steps, self.axis = int(n_obs_steps), int(axis)
        self.keys = None if keys is None else list(keys)
        self._steps: deque = deque(maxlen=self.n_obs_steps)

    def __len__(self) -> int:
        return len(self._steps)

    def reset(self) -> None:
        """Forget every observation (call at an episode start)."""
        self._steps.clear()

    def push(self, obs: Mapping[str, np.ndarray]) -> None:
        """Add the latest observation; the first one after `reset` fills the whole history."""
        keys = self.keys if self.keys is not None else list(obs)
        missing = [k for k in keys if k not in obs]
        if missing:
            raise ValueError(f"observation lacks {missing}; it has {sorted(obs)}")
        current = {k: np.asarray(obs[k]) for k in keys}
        if not self._steps:
            self._steps.extend([current] * self.n_obs_steps)
        else:
            self._steps.append(current)

    def stacked(self) -> dict[str, np.ndarray]:
        """{key: (To, *shape)} (axis 0) or {key: (B, To, *shape)} (axis 1).

        Raises:
            ValueError: nothing pushed since the last reset.
        """
        if not self._steps:
            raise ValueError("the observation history is empty: push an observation first")
        return {k: np.stack([step[k] for step in self._steps], axis=self.axis) for k in self._steps[0]}


def history_indices(steps: np.ndarray, episode_start: np.ndarray, n_obs_steps: int) -> np.ndarray:
    """Flat buffer indices (N, To) of the observation history ending at each of `steps` (N,), edge-padded at
    the start of its episode (`episode_start` (N,), the first index of each step's episode)."""
    offsets = np.arange(-int(n_obs_steps) + 1, 1)
    return np.maximum(np.asarray(steps)[:, None] + offsets, np.asarray(episode_start)[:, None])
