"""Reward labels for offline RL on demonstration datasets.

Datasets written by `robolearn collect` already carry per-step `reward` and `success`. Teleoperated
recordings usually carry neither; `label_rewards` gives any dataset rewards by one of these
conventions (each returns a per-step reward and a per-step `terminal` flag, both (N,)):

- ``dataset``: the stored `reward` key as it is; a step is terminal where the episode ends in
  success (the simulator terminates on success; a failed episode was cut off by the time limit).
- ``sparse``: 1 on the last step of a successful episode, which is terminal; 0 elsewhere.
- ``vgps``: -1 per step, 0 on the last `num_final_steps` steps of a successful episode, which are
  terminal (the convention V-GPS trains its Q-function with; Nakamoto et al. 2024, Sec. 4, and the
  released code with num_final_steps = 3). Failed episodes get -1 to their very end.

Which episodes succeeded comes from the dataset's per-step `success` key (its value on an episode's
last step), or, where a dataset has no `success` key, every episode counts as a successful
demonstration; `failed_episodes` marks exceptions by index.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from robolearn.datasets.replay_buffer import DatasetError, ReplayBuffer

REWARD_CONVENTIONS = ("dataset", "sparse", "vgps")


def episode_success(buffer: ReplayBuffer, failed_episodes: Iterable[int] = ()) -> np.ndarray:
    """Per-episode success (n_episodes,) bool: the `success` key's last step, else True; then
    `failed_episodes` (indices) set to False.

    Raises:
        DatasetError: an index in failed_episodes is out of range.
    """
    n = buffer.n_episodes
    if "success" in buffer.keys:
        success = buffer.array("success")[:][buffer.episode_ends - 1].astype(bool).reshape(n)
    else:
        success = np.ones(n, dtype=bool)
    for i in failed_episodes:
        if not 0 <= int(i) < n:
            raise DatasetError(f"failed_episodes: episode {i} does not exist ({buffer.path} has {n} episodes)")
        success[int(i)] = False
    return success


def label_rewards(episode_ends: np.ndarray, success: np.ndarray, convention: str,
                  stored_reward: np.ndarray | None = None, num_final_steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-step (reward (N,) float32, terminal (N,) bool) under `convention` (see the module docstring).

    Args:
        episode_ends: (E,) int, exclusive end step of each episode (the zarr `meta/episode_ends`).
        success: (E,) bool per episode.
        convention: one of `REWARD_CONVENTIONS`.
        stored_reward: (N,) the dataset's `reward` key; needed for "dataset".
        num_final_steps: "vgps" only: how many final steps of a success get reward 0 (>= 1).

    Raises:
        ValueError: an unknown convention, num_final_steps < 1, or lengths that disagree.
        DatasetError: "dataset" convention on a dataset without a `reward` key.
    """
    if convention not in REWARD_CONVENTIONS:
        raise ValueError(f"reward convention must be one of {REWARD_CONVENTIONS}, got {convention!r}")
    episode_ends = np.asarray(episode_ends, dtype=np.int64)
    success = np.asarray(success, dtype=bool)
    if len(success) != len(episode_ends):
        raise ValueError(f"success has {len(success)} entries for {len(episode_ends)} episodes")
    n = int(episode_ends[-1]) if len(episode_ends) else 0
    starts = np.concatenate([[0], episode_ends[:-1]])
    terminal = np.zeros(n, dtype=bool)
    if convention == "dataset":
        if stored_reward is None:
            raise DatasetError("reward convention 'dataset' needs a `reward` key in the dataset; "
                               "use reward convention 'sparse' or 'vgps' to label it")
        reward = np.asarray(stored_reward, dtype=np.float32).reshape(-1)
        if len(reward) != n:
            raise ValueError(f"stored_reward has {len(reward)} steps, episode_ends say {n}")
        terminal[episode_ends[success] - 1] = True
        return reward.copy(), terminal
    if convention == "sparse":
        reward = np.zeros(n, dtype=np.float32)
        reward[episode_ends[success] - 1] = 1.0
        terminal[episode_ends[success] - 1] = True
        return reward, terminal
    if num_final_steps < 1:
        raise ValueError(f"num_final_steps must be >= 1, got {num_final_steps}")
    reward = np.full(n, -1.0, dtype=np.float32)
    for start, end in zip(starts[success], episode_ends[success]):
        final = slice(max(int(start), int(end) - num_final_steps), int(end))
        reward[final] = 0.0
        terminal[final] = True
    return reward, terminal
