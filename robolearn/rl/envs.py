"""Chunk-level environments for RL fine-tuning: one decision = one action chunk."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import CloudpickleWrapper, batch_space

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


def _concat(parts: list, sizes: list[int]):
    """Concatenate per-worker batches along the env axis: arrays, dicts of them (recursively), and info dicts,
    whose keys a worker may lack (its envs reported none: filled with zeros, False masks or None)."""
    present = [p for p in parts if p is not None]
    if isinstance(present[0], dict):
        keys = list(dict.fromkeys(k for p in present for k in p))
        return {k: _concat([None if p is None else p.get(k) for p in parts], sizes) for k in keys}
    template = np.asarray(present[0])

    def missing(n: int) -> np.ndarray:  # as gymnasium's VectorEnv._add_info fills envs without the key
        if template.dtype == object:
            return np.full(n, None, dtype=object)
        return np.zeros((n, *template.shape[1:]), template.dtype)

    return np.concatenate([np.asarray(p) if p is not None else missing(n) for p, n in zip(parts, sizes)])


def _worker(pipe, env_fns: CloudpickleWrapper, autoreset_mode: AutoresetMode) -> None:
    """A worker process: a `SyncVectorEnv` of its share of the envs, driven by (command, data) messages."""
    envs = None
    try:
        envs = gym.vector.SyncVectorEnv(env_fns.fn, autoreset_mode=autoreset_mode)
        pipe.send(("ok", (envs.single_observation_space, envs.single_action_space, envs.metadata)))
        while True:
            command, data = pipe.recv()
            if command == "close":
                break
            result = envs.reset(seed=data[0], options=data[1]) if command == "reset" else envs.step(data)
            pipe.send(("ok", result))
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:
        pipe.send(("error", traceback.format_exc()))
    finally:
        if envs is not None:
            envs.close()
        pipe.close()


class WorkerVectorEnv(gym.vector.VectorEnv):
    """`len(env_fns)` envs stepped by `n_workers` processes, each a `SyncVectorEnv` of a contiguous share.

    Between gymnasium's `SyncVectorEnv` (one process: the envs step one after another) and `AsyncVectorEnv` (one
    process per env: on few cores the messages cost more than the envs' steps), for CPU-bound simulators on a
    machine with a core or more per worker (bench/dppo_speed.py). Observations, rewards and infos are returned
    in env order, as a `SyncVectorEnv` of all the envs with the same `autoreset_mode` would return them.

    Raises:
        ValueError: n_workers < 1.
        RuntimeError: a worker raised (its traceback is in the message) or died.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], n_workers: int = 2,
                 autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        super().__init__()
        self.num_envs = len(env_fns)
        bounds = np.linspace(0, self.num_envs, min(n_workers, self.num_envs) + 1).round().astype(int)
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._sizes = [s.stop - s.start for s in self._slices]
        context = multiprocessing.get_context("spawn")  # fork-safe with torch and MuJoCo's GL contexts
        self._pipes, self._processes = [], []
        for part in self._slices:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, CloudpickleWrapper(list(env_fns[part])),
                                                            autoreset_mode), daemon=True)
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)
        self._closed = False
        observation_space, action_space, metadata = self._receive()[0]
        self.single_observation_space, self.single_action_space = observation_space, action_space
        self.observation_space = batch_space(observation_space, self.num_envs)
        self.action_space = batch_space(action_space, self.num_envs)
        self.metadata = metadata

    def _receive(self) -> list:
        results, errors = [], []
        for i, pipe in enumerate(self._pipes):
            try:
                status, payload = pipe.recv()
            except EOFError:
                status, payload = "error", f"worker {i} exited (exit code {self._processes[i].exitcode})"
            (results if status == "ok" else errors).append(payload)
        if errors:
            self.close()
            raise RuntimeError("an env worker failed:\n" + "\n".join(errors))
        return results

    def _gather(self, results: list) -> tuple:
        return tuple(_concat([r[i] for r in results], self._sizes) for i in range(len(results[0])))

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        """Reset every env; `seed`: one int (env i gets seed + i), one per env, or None."""
        seeds = [None] * self.num_envs if seed is None else (
            [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed))
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset seed: expected {self.num_envs} seeds, got {len(seeds)}")
        for pipe, part in zip(self._pipes, self._slices):
            pipe.send(("reset", (seeds[part], options)))
        return self._gather(self._receive())

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"step: expected actions for {self.num_envs} envs, got shape {actions.shape}")
        for pipe, part in zip(self._pipes, self._slices):
            pipe.send(("step", actions[part]))
        return self._gather(self._receive())

    def close_extras(self, **kwargs) -> None:
        if self._closed:
            return
        self._closed = True
        for pipe, process in zip(self._pipes, self._processes):
            if process.is_alive():
                try:
                    pipe.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
        for pipe, process in zip(self._pipes, self._processes):
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
            pipe.close()


def make_chunk_vector_env(env_id: str, env_kwargs: dict, n_envs: int, n_obs_steps: int, n_action_steps: int,
                          vectorization: str = "sync", n_workers: int = 2) -> gym.vector.VectorEnv:
    """`n_envs` chunk-level envs, auto-reset in the same step (`info["final_obs"]`/`["final_info"]`).

    vectorization: "sync" (one process), "workers" (`n_workers` processes, each stepping its share of the envs:
    `WorkerVectorEnv`; the faster choice for state-based MuJoCo tasks on 2 cores, bench/dppo_speed.py) or
    "async" (gymnasium's one process per env); the processes start with "spawn" (fork-safe).

    Raises:
        ValueError: an unknown vectorization.
    """
    def make():
        return ActionChunkWrapper(gym.make(env_id, **env_kwargs), n_obs_steps, n_action_steps)

    if vectorization == "sync":
        return gym.vector.SyncVectorEnv([make] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    if vectorization == "workers":
        return WorkerVectorEnv([make] * n_envs, n_workers, autoreset_mode=AutoresetMode.SAME_STEP)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv([make] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    raise ValueError(f"vectorization must be 'sync', 'workers' or 'async', got {vectorization!r}")
