"""Run a chunked policy one action at a time: observation history in, one action out."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from robolearn.policies.history import ObsHistory


class PolicyRunner:
    """Keeps the last `n_obs_steps` observations and a queue of planned actions.

    `act(obs)` appends the observation to the history (`ObsHistory`: at the first call the history is
    filled by repeating it, as the training windows are padded) and, when the action queue is empty, asks
    the policy for a new chunk of `n_action_steps` actions whose first action belongs to this latest
    observation. Works for a batch of B environments stepped together.

    Args:
        policy: a `robolearn.policies.base.Policy`.
        generator: optional torch generator for reproducible sampling.
    """

    def __init__(self, policy, generator: torch.Generator | None = None):
        self.policy = policy
        self.generator = generator
        self.history = ObsHistory(policy.n_obs_steps, keys=list(policy.obs_features), axis=1)
        self.reset()

    def reset(self) -> None:
        """Forget the history and the queued actions (call at an episode start)."""
        self.history.reset()
        self.queue: deque = deque()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """obs: {key: (B, *shape)} for the current step -> actions (B, Da) as float32 numpy."""
        self.history.push(obs)
        if not self.queue:
            stacked = {k: torch.from_numpy(v) for k, v in self.history.stacked().items()}
            chunk = self.policy.predict_action(stacked, generator=self.generator)  # (B, Ta, Da)
            self.queue.extend(chunk.detach().cpu().numpy().transpose(1, 0, 2))
        return self.queue.popleft()
