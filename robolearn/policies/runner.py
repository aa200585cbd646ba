"""Run a chunked policy one action at a time: observation history in, one action out."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch


class PolicyRunner:
    """Keeps the last `n_obs_steps` observations and a queue of planned actions.

    `act(obs)` appends the observation to the history (at the first call the history is
    filled by repeating it, as the training windows are padded) and, when the action queue
    is empty, asks the policy for a new chunk of `n_action_steps` actions whose first action
    belongs to this latest observation. Works for a batch of B environments stepped together.

    Args:
        policy: any object with `obs_keys`, `n_obs_steps` and
            `predict_action({key: (B, n_obs_steps, D)}) -> (B, n_action_steps, Da)`.
        generator: optional torch generator for reproducible sampling.
    """

    def __init__(self, policy, generator: torch.Generator | None = None):
        self.policy = policy
        self.generator = generator
        self.reset()

    def reset(self) -> None:
        """Forget the history and the queued actions (call at an episode start)."""
        self.history: deque = deque(maxlen=self.policy.n_obs_steps)
        self.queue: deque = deque()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """obs: {key: (B, D_key)} for the current step -> actions (B, Da) as float32 numpy."""
        current = {k: np.asarray(obs[k], dtype=np.float32) for k in self.policy.obs_keys}
        if not self.history:
            self.history.extend([current] * self.policy.n_obs_steps)
        else:
            self.history.append(current)
        if not self.queue:
            stacked = {k: torch.from_numpy(np.stack([h[k] for h in self.history], axis=1))
                       for k in self.policy.obs_keys}
            chunk = self.policy.predict_action(stacked, generator=self.generator)  # (B, Ta, Da)
            self.queue.extend(chunk.detach().cpu().numpy().transpose(1, 0, 2))
        return self.queue.popleft()
