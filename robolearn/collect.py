"""`robolearn collect`: run the scripted expert and write demonstrations to a zarr replay buffer."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import robolearn.sim  # noqa: F401  (registers robolearn/Lift-v0)
from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.datasets import NotAReplayBufferError, ReplayBuffer
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


def collect_dataset(output: str | Path, env_id: str, env_kwargs: dict, n_episodes: int, seed: int = 0,
                    action_noise: float = 0.0, failure_rate: float = 0.0, max_retries: int = 0,
                    image_obs: bool = False, overwrite: bool = False) -> Path:
    """Collect `n_episodes` expert episodes into the replay buffer at `output`.

    If `output` already holds a replay buffer, collection resumes: episodes are appended
    until there are `n_episodes` (episode i always uses seed `seed + i`); `overwrite=True`
    starts afresh. Each episode is committed atomically as it finishes, so an interrupted
    collection keeps every finished episode.

    Mixed-quality data: `action_noise` (rad, std on every joint target) and `failure_rate`
    (probability of an injected mistake per episode, see `LiftExpert`); the per-step
    `success` key tells which episodes still succeeded. Demonstrations with recoveries:
    `max_retries` >= 1 lets the expert reopen and grasp again after a missed grasp.

    `overwrite=True` replaces only an existing replay buffer (never another folder or file, see
    `ReplayBuffer.create`). The dataset is locked for writing while collection runs.

    Raises:
        UserError: n_episodes < 1, action_noise < 0 (rad), failure_rate outside [0, 1],
            max_retries < 0, an existing dataset that was collected with other settings, or an
            `output` that exists and is not a replay buffer.
        LockError: another process is writing `output`.
        DatasetError: `overwrite=True` and `output` is not a replaceable dataset (`NotAReplayBufferError`
            for anything that is not a replay buffer).
    """
    output = Path(output)
    if n_episodes < 1:
        raise UserError(f"n_episodes must be >= 1, got {n_episodes}")
    if action_noise < 0:
        raise UserError(f"action_noise must be >= 0 rad, got {action_noise}")
    if not 0.0 <= failure_rate <= 1.0:
        raise UserError(f"failure_rate must be in [0, 1], got {failure_rate}")
    if max_retries < 0:
        raise UserError(f"max_retries must be >= 0, got {max_retries}")
    env_kwargs = {**env_kwargs, "image_obs": bool(image_obs)}
    attrs = {"robolearn": {"env_id": env_id, "env_kwargs": env_kwargs, "expert": "LiftExpert",
                           "action_noise": float(action_noise), "seed": int(seed)}}
    if failure_rate > 0:  # absent for clean data, so older clean datasets still resume
        attrs["robolearn"]["failure_rate"] = float(failure_rate)
    if max_retries > 0:
        attrs["robolearn"]["max_retries"] = int(max_retries)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not overwrite:
        try:
            buffer = ReplayBuffer.open(output, mode="a")
        except NotAReplayBufferError:
            raise UserError(f"{output} exists and is not a robolearn dataset; collect writes only datasets, "
                            "so choose another output= (nothing was changed)") from None
        if buffer.attrs.get("robolearn", attrs["robolearn"]) != attrs["robolearn"]:
            buffer.close()
            raise UserError(f"{output} was collected with other settings {buffer.attrs.get('robolearn')}; "
                            "pass overwrite=true or another output=")
    else:
        buffer = ReplayBuffer.create(output, overwrite=overwrite, attrs=attrs)
    with buffer:
        return _collect_into(buffer, output, env_id, env_kwargs, n_episodes, seed, action_noise, failure_rate,
                             max_retries, image_obs)


def _collect_into(buffer: ReplayBuffer, output: Path, env_id: str, env_kwargs: dict, n_episodes: int, seed: int,
                  action_noise: float, failure_rate: float, max_retries: int, image_obs: bool) -> Path:
    start = buffer.n_episodes
    chunks = {"image": (1, *env_kwargs.get("image_size", (96, 96)), 3)} if image_obs else None

    env = gym.make(env_id, **env_kwargs)
    expert = LiftExpert(control_hz=env_kwargs.get("control_hz", 20), action_noise=action_noise,
                        failure_rate=failure_rate, max_retries=max_retries)
    successes = int(sum(buffer.get_episode(i, ["success"])["success"][-1] for i in range(start)))
    t0 = time.perf_counter()
    bar = tqdm(range(start, n_episodes), initial=start, total=n_episodes, desc="collect", unit="ep")
    for i in bar:
        episode = run_expert_episode(env, expert, seed=seed + i)
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


#: types and ranges of the values `robolearn collect` takes (configs/collect.yaml)
COLLECT_RULES = {"n_episodes": Int(min=1), "seed": Int(), "action_noise": Float(min=0), "failure_rate": Float(min=0, max=1),
                 "max_retries": Int(min=0), "image_obs": Bool(), "overwrite": Bool()}


def collect(cfg: DictConfig) -> Path:
    """Hydra task `robolearn collect` (see `collect_dataset` and configs/collect.yaml).

    Raises:
        UserError: a value of the wrong type or range (`COLLECT_RULES`), or as `collect_dataset`.
    """
    check_config(cfg, COLLECT_RULES)
    return collect_dataset(cfg.output, cfg.task.env_id, OmegaConf.to_container(cfg.task.env_kwargs, resolve=True),
                           n_episodes=int(cfg.n_episodes), seed=int(cfg.seed), action_noise=float(cfg.action_noise),
                           failure_rate=float(cfg.failure_rate), max_retries=int(cfg.max_retries),
                           image_obs=bool(cfg.image_obs), overwrite=bool(cfg.overwrite))
