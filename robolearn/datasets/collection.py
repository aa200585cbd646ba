"""Collecting demonstrations: run a task's scripted expert and append its episodes to a replay buffer."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from robolearn.datasets.replay_buffer import NotAReplayBufferError, ReplayBuffer
from robolearn.errors import UserError
from robolearn.tasks import Task

#: buffer attribute with the collection's progress (not compared on resume)
PROGRESS_ATTR = "robolearn_collection"


def run_expert_episode(env: gym.Env, expert, seed: int) -> dict:
    """Roll out one expert episode from `env.reset(seed=seed)`.

    `expert` has `reset(obs, rng)` and `act(obs) -> action`; the episode ends when the env terminates or
    truncates (gymnasium's TimeLimit or the env's own limit).

    Returns per-step arrays, each (T, ...): the observation keys, `action` (T, Da) float32 in the env's
    units, `reward` (T,) float32, `done` (T,) bool (True on the last step), `success` (T,) bool
    (`info["is_success"]`), `timestamp` (T,) s since the episode start, and, when the env samples a world
    (`robolearn.sim.world`), `world` (T, P) float32: the episode's world parameters (`info["world"]` after the
    reset, in its order) on every step.
    """
    obs, reset_info = env.reset(seed=seed)
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
    if "world" in reset_info:
        values = np.array(list(reset_info["world"].values()), dtype=np.float32)
        out["world"] = np.repeat(values[None], len(out["action"]), axis=0)
    return out


def collect_dataset(output: str | Path, task: Task, n_episodes: int, seed: int = 0, image_obs: bool = False,
                    overwrite: bool = False) -> Path:
    """Collect `n_episodes` episodes of the task's scripted expert into the replay buffer at `output`.

    Attempt j is reset with seed `seed + j`. With the task's `keep_failed: false` only successful episodes
    are kept, and attempts continue until `n_episodes` are; the seeds of the discarded attempts are recorded
    in the buffer attribute `robolearn_collection.discarded_seeds`. In a world other than the nominal one
    (`task.with_world`), each episode's sampled world parameters are stored as the per-step key `world`,
    named by the attribute `robolearn.world_params`. If `output` already holds a replay buffer,
    collection resumes where it stopped (the attempts made are recorded in the buffer); `overwrite=True`
    starts afresh and replaces only an existing replay buffer (never another folder or file, see
    `ReplayBuffer.create`). Each episode is committed atomically as it finishes, so an interrupted
    collection keeps every finished episode. The dataset is locked for writing while collection runs.

    Args:
        image_obs: ask the env for camera images too (env kwarg `image_obs`). Every camera the env gives
            (the task's `env_kwargs` may name them) is stored, as uint8 (`ReplayBuffer`'s image chunks).

    Raises:
        UserError: n_episodes < 1, a task without an expert or a simulator, an existing dataset that was
            collected with other settings, or an `output` that exists and is not a replay buffer.
        LockError: another process is writing `output`.
        DatasetError: `overwrite=True` and `output` is not a replaceable dataset (`NotAReplayBufferError`
            for anything that is not a replay buffer).
    """
    output = Path(output)
    if n_episodes < 1:
        raise UserError(f"n_episodes must be >= 1, got {n_episodes}")
    if task.env_id is None or not task.expert:
        raise UserError(f"task {task.name} has no simulator and scripted expert to collect with")
    env_kwargs = {**task.env_kwargs, **({"image_obs": True} if image_obs else {})}
    attrs = {"robolearn": {"env_id": task.env_id, "env_kwargs": env_kwargs, "expert": task.expert,
                           "keep_failed": task.keep_failed, "seed": int(seed)}}
    if "world" in env_kwargs:
        from robolearn.sim.world import world_param_names

        attrs["robolearn"]["world_params"] = world_param_names()
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
    try:
        expert = task.make_expert()
    except Exception as exc:
        buffer.close()
        raise UserError(f"task {task.name}: cannot build the expert {task.expert.get('_target_')} ({exc})") from exc
    with buffer:
        return _collect_into(buffer, output, task, env_kwargs, expert, n_episodes, seed)


def _collect_into(buffer: ReplayBuffer, output: Path, task: Task, env_kwargs: dict, expert, n_episodes: int,
                  seed: int) -> Path:
    start = buffer.n_episodes
    progress = buffer.attrs.get(PROGRESS_ATTR, {})
    attempts = int(progress.get("attempts", start))
    discarded = list(progress.get("discarded_seeds", []))
    env = gym.make(task.env_id, **env_kwargs)
    successes = int(sum(buffer.get_episode(i, ["success"])["success"][-1] for i in range(start)))
    t0 = time.perf_counter()
    kept = start
    bar = tqdm(total=n_episodes, initial=start, desc="collect", unit="ep")
    while kept < n_episodes:
        episode = run_expert_episode(env, expert, seed=seed + attempts)
        attempts += 1
        success = bool(episode["success"][-1])
        if success or task.keep_failed:
            buffer.add_episode(episode)
            kept += 1
            successes += success
            bar.update(1)
        else:
            discarded.append(seed + attempts - 1)
        buffer.update_attrs({PROGRESS_ATTR: {"attempts": attempts, "discarded_seeds": discarded}})
        bar.set_postfix(attempts=attempts, kept_success=f"{successes / max(kept, 1):.0%}", steps=buffer.n_steps)
    bar.close()
    env.close()
    elapsed = time.perf_counter() - t0
    n = buffer.n_episodes
    print(f"{output}: {n} episodes, {buffer.n_steps} steps, expert success {successes}/{n} "
          f"({successes / n:.1%}) of kept episodes; {attempts} attempts in all"
          + ("" if task.keep_failed else " (failed ones discarded)")
          + f"; collected {n - start} episodes in {elapsed:.1f} s")
    return output
