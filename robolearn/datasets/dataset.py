"""A torch Dataset of Diffusion Policy training windows over a zarr replay buffer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from robolearn.datasets.formats.common import SPLITS_ATTR
from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.datasets.replay_buffer import DatasetError, ReplayBuffer, is_image
from robolearn.datasets.sampler import SequenceSampler, episode_split


def data_fingerprint(data: dict[str, np.ndarray], episode_ends: np.ndarray) -> dict:
    """What identifies loaded training data, by content: {"episodes", "steps", "sha256"} where the hash
    covers `episode_ends` and every key (name and values). The same data under another path has the same
    fingerprint; any added, removed or changed step changes it."""
    digest = hashlib.sha256(np.ascontiguousarray(episode_ends, dtype=np.int64).tobytes())
    for key in sorted(data):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(data[key]).tobytes())
    return {"episodes": int(len(episode_ends)), "steps": int(episode_ends[-1]), "sha256": digest.hexdigest()}


def same_dataset(previous: dict, current: dict) -> bool:
    """Whether a run's saved config `previous` and this run's `current` (each with `dataset`, a path, and
    `dataset_fingerprint`) name the same data: by fingerprint, or for runs saved before fingerprints
    existed, by the resolved path."""
    if previous.get("dataset_fingerprint") is not None:
        return previous["dataset_fingerprint"] == current["dataset_fingerprint"]
    return Path(str(previous.get("dataset"))).resolve() == Path(current["dataset"]).resolve()


def describe_fingerprint(fingerprint: dict | None) -> str:
    """A `data_fingerprint` in a few words, for messages."""
    if not fingerprint:
        return "unknown content"
    return f"{fingerprint['episodes']} episodes, {fingerprint['steps']} steps, sha256 {fingerprint['sha256'][:12]}"


def load_arrays(buffer: ReplayBuffer, obs_keys: list[str], other_keys: list[str]
                ) -> tuple[dict[str, np.ndarray], dict[str, tuple], list[str]]:
    """Load `obs_keys` and `other_keys` of `buffer` into memory for training.

    Returns (data, obs_shapes, image_keys): data {key: (T, D) float32}, except camera images (uint8
    (T, H, W, C)), which stay uint8 (a float copy would take 4x the memory); obs_shapes {obs key: per-step
    shape as stored, (1,) for scalars}; image_keys the camera keys among `obs_keys`.

    Raises:
        DatasetError: as `ReplayBuffer.load`, or a key that does not hold numbers (text in a foreign store).
    """
    for key in [*obs_keys, *other_keys]:
        if key in buffer.keys and np.dtype(buffer.array(key).dtype).kind not in "biuf":
            raise DatasetError(f"{buffer.path}: `{key}` holds {buffer.array(key).dtype} values, not numbers; "
                               "observations and actions must be numbers (leave the key out)")
    data = buffer.load([*obs_keys, *other_keys])
    obs_shapes = {k: tuple(data[k].shape[1:]) or (1,) for k in obs_keys}
    image_keys = [k for k in obs_keys if is_image(data[k])]
    data = {k: v if k in image_keys else v.reshape(len(v), -1).astype(np.float32) for k, v in data.items()}
    return data, obs_shapes, image_keys


def recorded_split(buffer: ReplayBuffer) -> tuple[np.ndarray, np.ndarray] | None:
    """(train_mask, val_mask) from the dataset's `splits` attribute ({"valid": [episode, ...], "train": [...]}),
    or None when it records no `valid` list. Without a `train` list, training takes every other episode.

    Raises:
        DatasetError: an episode index out of range.
    """
    splits = buffer.attrs.get(SPLITS_ATTR) or {}
    if "valid" not in splits:
        return None
    n = buffer.n_episodes
    masks = []
    for name in ("train", "valid"):
        listed = splits.get(name)
        if listed is None:
            masks.append(None)
            continue
        index = np.asarray(listed, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= n):
            raise DatasetError(f"{buffer.path}: splits.{name} lists episodes outside 0..{n - 1}")
        mask = np.zeros(n, bool)
        mask[index] = True
        masks.append(mask)
    train_mask, val_mask = masks
    return (~val_mask if train_mask is None else train_mask), val_mask


class SequenceDataset(torch.utils.data.Dataset):
    """Windows of (observation history, action horizon) for training a chunked policy.

    The chosen keys of the buffer are loaded into memory once (camera images as uint8). Item i is::

        {"obs": {key: float32 tensor (n_obs_steps, *shape_key); uint8 for camera keys},
         "action": float32 tensor (horizon, D_action)}

    where obs step n_obs_steps-1 is the "current" step and action[n_obs_steps-1] is the
    first action to execute at it (the reference Diffusion Policy convention).
    Padding: pad_before = n_obs_steps - 1, pad_after = n_action_steps - 1, edge-replicated.

    Args:
        buffer: a `ReplayBuffer` or a path to one.
        obs_keys: observation keys under `data/`.
        action_key: the action key under `data/`.
        horizon, n_obs_steps, n_action_steps: window sizes (steps).
        val_ratio, seed: episode-level validation split (`episode_split`); a dataset that records its own split
            (the attribute `splits` with `valid` and optionally `train` episode lists, e.g. robomimic's masks kept
            by `robolearn dataset import`) uses that instead.
        split: "train" or "val".
        max_train_episodes: optionally keep a seeded random subset of training episodes.

    Raises:
        FileNotFoundError, DatasetError: as `ReplayBuffer.open` / `ReplayBuffer.load`, and
            if the buffer has no episodes or no windows for the split.
        ValueError: inconsistent window sizes.
    """

    def __init__(self, buffer: ReplayBuffer | str | os.PathLike, obs_keys, action_key: str = "action",
                 horizon: int = 16, n_obs_steps: int = 2, n_action_steps: int = 8, val_ratio: float = 0.1,
                 seed: int = 0, split: str = "train", max_train_episodes: int | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 1 <= n_obs_steps <= horizon or not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(f"need 1 <= n_obs_steps <= horizon and 1 <= n_action_steps <= "
                             f"horizon - n_obs_steps + 1; got horizon={horizon}, n_obs_steps={n_obs_steps}, "
                             f"n_action_steps={n_action_steps}")
        if not isinstance(buffer, ReplayBuffer):
            buffer = ReplayBuffer.open(buffer)
        if buffer.n_episodes == 0:
            raise DatasetError(f"{buffer.path} has no episodes")
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        #: per-step shape of each observation key as stored (e.g. (9, 2) for Push-T's keypoints), and the camera
        #: keys (kept uint8; the image encoder maps each sampled window's pixels to [-1, 1])
        self.data, self.obs_shapes, self.image_keys = load_arrays(buffer, self.obs_keys, [action_key])
        self.episode_ends = buffer.episode_ends
        self.path = buffer.path
        recorded = recorded_split(buffer)
        train_mask, val_mask = recorded or episode_split(buffer.n_episodes, val_ratio, seed)
        if not train_mask.any():
            why = (f"the split it records (attribute `{SPLITS_ATTR}`) puts every episode in `valid`" if recorded
                   else f"val_ratio={val_ratio} leaves none")
            raise DatasetError(f"{buffer.path}: no training episodes among its {buffer.n_episodes}: {why}; training "
                               "needs at least one episode outside the validation split")
        if max_train_episodes is not None and train_mask.sum() > max_train_episodes:
            keep = np.random.default_rng(seed).choice(np.flatnonzero(train_mask), max_train_episodes, replace=False)
            train_mask = np.zeros_like(train_mask)
            train_mask[keep] = True
        self.train_mask, self.val_mask = train_mask, val_mask
        self.split = split
        self.sampler = self._make_sampler(train_mask if split == "train" else val_mask)

    def _make_sampler(self, episode_mask: np.ndarray) -> SequenceSampler:
        return SequenceSampler(
            self.data, self.episode_ends, sequence_length=self.horizon, pad_before=self.n_obs_steps - 1,
            pad_after=self.n_action_steps - 1, episode_mask=episode_mask,
            key_first_k={k: self.n_obs_steps for k in self.obs_keys})

    @property
    def obs_dims(self) -> dict[str, int]:
        """Per-key observation size D_key (the product of its shape)."""
        return {k: int(np.prod(self.obs_shapes[k])) for k in self.obs_keys}

    @property
    def action_dim(self) -> int:
        return self.data[self.action_key].shape[1]

    def fingerprint(self) -> dict:
        """The training data's `data_fingerprint`."""
        return data_fingerprint(self.data, self.episode_ends)

    def validation(self) -> SequenceDataset:
        """The validation windows over the same in-memory data (no reload)."""
        val = object.__new__(SequenceDataset)
        val.__dict__.update(self.__dict__)
        val.split = "val"
        val.sampler = self._make_sampler(self.val_mask)
        return val

    def fit_normalizer(self) -> LinearNormalizer:
        """Fit min/max normalization on the training episodes only (low-dim obs keys and action; images
        have the fixed [0, 255] -> [-1, 1] map of their encoder instead of statistics)."""
        ends = self.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        rows = np.concatenate([np.arange(s, e) for s, e, m in zip(starts, ends, self.train_mask) if m])
        return LinearNormalizer.fit({k: v[rows] for k, v in self.data.items() if k not in self.image_keys})

    def __len__(self) -> int:
        return len(self.sampler)

    def get_batch(self, ids: np.ndarray) -> dict:
        """Windows `ids` gathered in one vectorized step (faster than a DataLoader for in-memory data).

        Returns {"obs": {key: (B, n_obs_steps, *shape_key)}, "action": (B, horizon, Da)}: float32 tensors,
        and uint8 (B, n_obs_steps, H, W, C) for camera keys (only the sampled frames are gathered).
        """
        idx = self.sampler.indices(np.asarray(ids))
        obs_idx = idx[:, :self.n_obs_steps]
        return {"obs": {k: torch.from_numpy(self.data[k][obs_idx].reshape(*obs_idx.shape, *self.obs_shapes[k]))
                        for k in self.obs_keys},
                "action": torch.from_numpy(self.data[self.action_key][idx])}

    def __getitem__(self, i: int) -> dict:
        window = self.sampler[i]
        return {"obs": {k: torch.from_numpy(window[k].reshape(-1, *self.obs_shapes[k])) for k in self.obs_keys},
                "action": torch.from_numpy(window[self.action_key])}
