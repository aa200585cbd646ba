"""`robolearn collect`: run the scripted expert and write demonstrations to a zarr replay buffer."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import robolearn.sim  # noqa: F401  (registers robolearn/Lift-v0)
from robolearn.datasets import ReplayBuffer
from robolearn.errors import UserError
from robolearn.sim import LiftExpert


def run_expert_episode(env: gym.Env, expert: LiftExpert, seed: int, image_key: str | None = None) -> dict:
    """Roll out one expert episode from `env.reset(seed=seed)`.

    Returns per-step arrays, each (T, ...): the observation keys, `action` (T, 6) rad,
    `reward` (T,) float32, `done` (T,) bool (True on the last step), `success` (T,) bool
    (`info["is_success"]`), and `timestamp` (T,) s since the episode start.
    """
    obs, _ = env.reset(seed=seed)
    expert.reset(obs, np.random.default_rng(seed))
    dt = 1.0 / env.metadata["render_fps"]
    steps: dict[str, list] = {k: [] for k in obs}
    steps.update(action=[], reward=[], done=[], success=[], timestamp=[])
    for t in range(10**9):
        action = expert.act(obs)
        for k, v in obs.items():
            steps[k].append(v)
        next_obs, reward, terminated, truncated, info = env.step(action)
        steps["action"].append(np.asarray(action, dtype=np.float32))
        steps["reward"].append(np.float32(reward))
        steps["done"].append(terminated or truncated)
        steps["success"].append(bool(info["is_success"]))
        steps["timestamp"].append(t * dt)
        obs = next_obs
        if terminated or truncated:
            break
    out = {k: np.stack(v) for k, v in steps.items()}
    out["timestamp"] = out["timestamp"].astype(np.float64)
    return out


def collect(cfg: DictConfig) -> Path:
    """Hydra task: collect `cfg.n_episodes` expert episodes into `cfg.output`.

    If `cfg.output` already holds a replay buffer, collection resumes: episodes are
    appended until there are `n_episodes` (episode i always uses seed `cfg.seed + i`);
    `overwrite=true` starts afresh. Each episode is committed atomically as it finishes.
    """
    output = Path(cfg.output)
    if cfg.n_episodes < 1:
        raise UserError(f"n_episodes must be >= 1, got {cfg.n_episodes}")
    if cfg.action_noise < 0:
        raise UserError(f"action_noise must be >= 0 rad, got {cfg.action_noise}")
    env_kwargs = OmegaConf.to_container(cfg.task.env_kwargs, resolve=True)
    env_kwargs["image_obs"] = bool(cfg.image_obs)
    attrs = {"robolearn": {"env_id": cfg.task.env_id, "env_kwargs": env_kwargs, "expert": "LiftExpert",
                           "action_noise": float(cfg.action_noise), "seed": int(cfg.seed)}}
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not cfg.overwrite:
        buffer = ReplayBuffer.open(output, mode="a")
        if buffer.attrs.get("robolearn", attrs["robolearn"]) != attrs["robolearn"]:
            raise UserError(f"{output} was collected with other settings {buffer.attrs.get('robolearn')}; "
                            "pass overwrite=true or another output=")
    else:
        buffer = ReplayBuffer.create(output, overwrite=bool(cfg.overwrite), attrs=attrs)
    start = buffer.n_episodes
    chunks = {"image": (1, *env_kwargs.get("image_size", (96, 96)), 3)} if cfg.image_obs else None

    env = gym.make(cfg.task.env_id, **env_kwargs)
    expert = LiftExpert(control_hz=env_kwargs.get("control_hz", 20), action_noise=cfg.action_noise)
    successes = int(sum(buffer.get_episode(i, ["success"])["success"][-1] for i in range(start)))
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.n_episodes), initial=start, total=cfg.n_episodes, desc="collect", unit="ep")
    for i in bar:
        episode = run_expert_episode(env, expert, seed=int(cfg.seed) + i)
        buffer.add_episode(episode, chunks=chunks)
        successes += bool(episode["success"][-1])
        bar.set_postfix(success=f"{successes / (i + 1):.0%}", steps=buffer.n_steps)
    bar.close()
    env.close()
    elapsed = time.perf_counter() - t0
    n = buffer.n_episodes
    print(f"{output}: {n} episodes, {buffer.n_steps} steps, expert success {successes}/{n} "
          f"({successes / n:.1%}); collected {n - start} episodes in {elapsed:.1f} s")
    return output
