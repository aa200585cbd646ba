"""Episode splits and the (observation history, action horizon) window sampler.

Windows follow the reference Diffusion Policy `SequenceSampler` (Chi et al. 2023): every
window of `sequence_length` steps that starts between `-pad_before` and
`L - sequence_length + pad_after` in an episode of length L, with steps outside the
episode filled by repeating its first or last frame (edge-replicate padding). With
pad_before = n_obs_steps - 1 and pad_after = n_action_steps - 1 every step of every episode
can be the "current" step and the executed actions always reach the episode's end.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def episode_split(n_episodes: int, val_ratio: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split by whole episodes.

    Returns (train_mask, val_mask), each (n_episodes,) bool. With val_ratio > 0 and at least
    two episodes, validation gets at least one episode and training keeps at least one.

    Raises:
        ValueError: val_ratio outside [0, 1) or n_episodes < 1.
    """
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if n_episodes < 1:
        raise ValueError(f"need at least one episode to split, got {n_episodes}")
    n_val = 0
    if val_ratio > 0 and n_episodes > 1:
        n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    val_mask = np.zeros(n_episodes, dtype=bool)
    val_mask[np.random.default_rng(seed).choice(n_episodes, size=n_val, replace=False)] = True
    return ~val_mask, val_mask


class SequenceSampler:
    """Fixed-length windows over the selected episodes of in-memory episode data.

    Args:
        data: {key: array (n_steps, ...)}, all episodes concatenated.
        episode_ends: (n_episodes,) cumulative episode ends.
        sequence_length: steps per window (the action horizon).
        pad_before, pad_after: steps a window may extend before an episode's start or past
            its end (edge-replicated); clamped to [0, sequence_length - 1].
        episode_mask: (n_episodes,) bool, which episodes to draw from (default: all).
        key_first_k: {key: k} to return only the first k steps of the window for `key`
            (e.g. observations need only the n_obs_steps history).

    `sampler[i]` returns {key: (sequence_length or k, ...)}. An episode shorter than
    sequence_length - pad_before - pad_after contributes no windows.
    """

    def __init__(self, data: Mapping[str, np.ndarray], episode_ends: np.ndarray, sequence_length: int,
                 pad_before: int = 0, pad_after: int = 0, episode_mask: np.ndarray | None = None,
                 key_first_k: Mapping[str, int] | None = None):
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
        episode_ends = np.asarray(episode_ends, dtype=np.int64)
        if episode_mask is None:
            episode_mask = np.ones(len(episode_ends), dtype=bool)
        if len(episode_mask) != len(episode_ends):
            raise ValueError(f"episode_mask has {len(episode_mask)} entries for {len(episode_ends)} episodes")
        pad_before = int(np.clip(pad_before, 0, sequence_length - 1))
        pad_after = int(np.clip(pad_after, 0, sequence_length - 1))
        self.data = data
        self.sequence_length = sequence_length
        self.key_first_k = dict(key_first_k or {})
        starts = np.concatenate([[0], episode_ends[:-1]])
        rows = []  # (episode start, episode length, window offset within the episode)
        for start, end, keep in zip(starts, episode_ends, episode_mask):
            if not keep:
                continue
            length = end - start
            offsets = np.arange(-pad_before, length - sequence_length + pad_after + 1)
            rows.append(np.stack([np.full_like(offsets, start), np.full_like(offsets, length), offsets], 1))
        self._windows = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
        self._steps = np.arange(sequence_length)

    def __len__(self) -> int:
        return len(self._windows)

    def indices(self, i) -> np.ndarray:
        """Buffer indices of window(s) i: (sequence_length,) for an int, (len(i), sequence_length)
        for an array of window ids. Clipping to the episode is what edge-replicates."""
        start, length, offset = np.moveaxis(self._windows[i], -1, 0)
        steps = offset[..., None] + self._steps
        return start[..., None] + np.clip(steps, 0, length[..., None] - 1)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)} windows)")
        idx = self.indices(i)
        return {key: values[idx[: self.key_first_k.get(key, self.sequence_length)]]
                for key, values in self.data.items()}
