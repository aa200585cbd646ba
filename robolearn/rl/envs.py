"""Chunk-level environments for RL fine-tuning: one decision = one action chunk."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from robolearn.policies.history import ObsHistory


class ActionChunkWrapper(gym.Wrapper):
    """Execute an action chunk per `step` and observe the last `n_obs_steps` observations.

    The outer MDP of DPPO (Ren et al. 2024, Sec. 4.1): an action is a chunk of shape
    (n_action_steps, Da), executed one action per env step until the chunk ends or the
    episode does; the chunk's reward is the sum of the step rewards. The observation is a
    dict of (n_obs_steps, ...) histories, oldest first, padded at the episode start by
    repeating the first observation (as training windows are). `info["env_steps"]` counts
    the env steps the chunk took.
    """

    def __init__(self, env: gym.Env, n_obs_steps: int, n_action_steps: int):
        super().__init__(env)
        self.n_obs_steps, self.n_action_steps = n_obs_steps, n_action_steps
        self.observation_space = spaces.Dict({
            k: spaces.Box(np.repeat(s.low[None], n_obs_steps, 0), np.repeat(s.high[None], n_obs_steps, 0),
                          dtype=s.dtype)
            for k, s in env.observation_space.spaces.items()})
        a = env.action_space
        self.action_space = spaces.Box(np.repeat(a.low[None], n_action_steps, 0),
                                       np.repeat(a.high[None], n_action_steps, 0), dtype=a.dtype)
        self._history = ObsHistory(n_obs_steps)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._history.reset()
        self._history.push(obs)
        return self._history.stacked(), info

    def step(self, chunk):
        chunk = np.asarray(chunk)
        if chunk.shape != self.action_space.shape:
            raise ValueError(f"action chunk must have shape {self.action_space.shape}, got {chunk.shape}")
        total, terminated, truncated, info, n = 0.0, False, False, {}, 0
        for action in chunk:
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._history.push(obs)
            total += float(reward)
            n += 1
            if terminated or truncated:
                break
        return self._history.stacked(), total, terminated, truncated, {**info, "env_steps": n}


def make_chunk_vector_env(env_id: str, env_kwargs: dict, n_envs: int, n_obs_steps: int, n_action_steps: int,
                          vectorization: str = "sync") -> gym.vector.VectorEnv:
    """`n_envs` chunk-level envs, auto-reset in the same step (`info["final_obs"]`/`["final_info"]`).

    vectorization: "sync" (one process; the faster choice for state-based MuJoCo tasks on few
    cores, see bench/finetune.py) or "async" (one process per env, fork-safe "spawn").
    """
    def make():
        return ActionChunkWrapper(gym.make(env_id, **env_kwargs), n_obs_steps, n_action_steps)

    if vectorization == "sync":
        return gym.vector.SyncVectorEnv([make] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv([make] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
