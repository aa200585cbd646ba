"""Policy rollouts in simulation: one episode per seed in a gymnasium vector env, the success rate with a
Wilson interval, the Push-T score (mean over episodes of each episode's maximum reward), videos."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import imageio
import numpy as np
import torch
from tqdm import tqdm

from robolearn.policies.runner import PolicyRunner

#: what `evaluate_policy` can rank checkpoints by (a task's `metric`)
METRICS = ("success_rate", "mean_score")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for z = 1.96) of a binomial proportion successes / n."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def evaluate_policy(policy, env_id: str, seeds, env_kwargs: dict | None = None, video_path: str | None = None,
                    n_video: int = 3, sampling_seed: int = 0, progress: bool = True,
                    max_steps: int | None = None) -> dict:
    """Run one episode per seed, all envs stepped together in a gymnasium SyncVectorEnv.

    An episode ends when its env terminates or truncates (gymnasium's TimeLimit from the registration's
    `max_episode_steps`, or the env's own time limit); `max_steps` optionally caps every episode as well.

    Args:
        policy: a chunked policy (`robolearn.policies.base.Policy`, run by `PolicyRunner`).
        seeds: env reset seeds, one episode each.
        video_path: if given, the first `n_video` episodes are rendered off-screen and
            written one after another to this mp4, with the policy's camera views (its rgb observations)
            beside the scene.
        sampling_seed: seeds the policy's sampling noise, so an evaluation is reproducible.

    Returns:
        {"success_rate", "ci95": [lo, hi], "mean_score" (the mean over episodes of each episode's
         maximum reward: Push-T's metric, Chi et al. 2023, Sec. 5), "n_episodes", "mean_length" (steps),
         "successes": [bool per seed], "max_rewards": [...], "lengths": [...], "seeds": [...],
         "video": path or None, "seconds": wall time}
    """
    seeds = [int(s) for s in seeds]
    n = len(seeds)
    env_kwargs = dict(env_kwargs or {})
    n_video = min(n_video, n) if video_path else 0

    def make(i):
        return lambda: gym.make(env_id, render_mode="rgb_array" if i < n_video else None, **env_kwargs)

    envs = gym.vector.SyncVectorEnv([make(i) for i in range(n)])
    t0 = time.perf_counter()
    obs, _ = envs.reset(seed=seeds)
    generator = torch.Generator(device=policy.device).manual_seed(sampling_seed)
    runner = PolicyRunner(policy, generator=generator)
    done = np.zeros(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    lengths = np.zeros(n, dtype=int)
    cameras = [k for k, f in policy.obs_features.items() if f.type == "rgb"]

    def frame(i: int) -> np.ndarray:  # the scene, with the policy's own camera views beside it
        return with_camera_views(envs.envs[i].render(), [obs[k][i] for k in cameras])

    frames: list[list[np.ndarray]] = [[frame(i)] for i in range(n_video)]
    max_rewards = np.full(n, -np.inf)
    limit = max_steps or envs.envs[0].spec.max_episode_steps
    bar = tqdm(total=n, desc="eval", unit="ep", disable=not progress, leave=False)
    t = 0
    while not done.all():
        action = runner.act(obs)
        obs, reward, terminated, truncated, info = envs.step(action)
        for i in range(n_video):
            if not done[i]:
                frames[i].append(frame(i))
        max_rewards[~done] = np.maximum(max_rewards[~done], reward[~done])
        t += 1
        if limit is not None and t >= limit:
            truncated = np.ones(n, dtype=bool)
        finished = (terminated | truncated) & ~done
        success[finished] = info["is_success"][finished]
        lengths[finished] = t
        done |= finished
        bar.update(int(finished.sum()))
    bar.close()
    envs.close()
    video = None
    if n_video:
        Path(video_path).parent.mkdir(parents=True, exist_ok=True)
        fps = envs.metadata.get("render_fps", 20)
        imageio.mimsave(video_path, [f for ep in frames for f in ep], fps=fps, macro_block_size=8)
        video = str(video_path)
    return summarize(seeds, success.tolist(), max_rewards.tolist(), lengths.tolist(), video, time.perf_counter() - t0)


def summarize(seeds: list[int], successes: list[bool], max_rewards: list[float], lengths: list[int],
              video: str | None, seconds: float) -> dict:
    """`evaluate_policy`'s results from per-episode outcomes (lists in seed order)."""
    n, k = len(seeds), int(np.sum(successes))
    return {"success_rate": k / n, "ci95": list(wilson_interval(k, n)), "mean_score": float(np.mean(max_rewards)),
            "n_episodes": n, "mean_length": float(np.mean(lengths)), "successes": list(successes),
            "max_rewards": list(max_rewards), "lengths": list(lengths), "seeds": list(seeds), "video": video,
            "seconds": seconds}


def merge_results(parts: list[dict]) -> dict:
    """One result from `evaluate_policy` results on disjoint seed sets (e.g. one per rank of a distributed run),
    episodes ordered by seed; the video is the first part's that has one; seconds the slowest part's."""
    rows = sorted((seed, s, r, n) for p in parts if p for seed, s, r, n in
                  zip(p["seeds"], p["successes"], p["max_rewards"], p["lengths"]))
    seeds, successes, rewards, lengths = (list(col) for col in zip(*rows))
    video = next((p["video"] for p in parts if p and p.get("video")), None)
    return summarize(seeds, successes, rewards, lengths, video, max(p["seconds"] for p in parts if p))


def evaluate_split(dist, policy, env_id: str, seeds, env_kwargs: dict, **kwargs) -> dict:
    """`evaluate_policy` with the seeds split across the ranks of `dist` (a `robolearn.distributed.Distributed`;
    rank r runs every world_size-th seed from r) and the results gathered on every rank; the video comes from
    rank 0's episodes."""
    if not dist.enabled:
        return evaluate_policy(policy, env_id, seeds, env_kwargs, **kwargs)
    if not dist.is_main:
        kwargs = {**kwargs, "video_path": None, "progress": False}
    share = dist.split(list(seeds))
    part = evaluate_policy(policy, env_id, share, env_kwargs, **kwargs) if share else None
    return merge_results(dist.gather(part))


def with_camera_views(scene: np.ndarray, views: list[np.ndarray]) -> np.ndarray:
    """A video frame: the scene (H, W, 3) uint8 with the camera images `views` (each (h, w, 3) uint8) stacked in
    a column to its right, each scaled (nearest pixel) to H / len(views) rows. No views: the scene itself."""
    if not views:
        return scene
    height = scene.shape[0] // len(views)
    column = []
    for view in views:
        rows = np.arange(height) * view.shape[0] // height
        width = max(1, round(view.shape[1] * height / view.shape[0]))
        column.append(view[rows][:, np.arange(width) * view.shape[1] // width])
    width = max(v.shape[1] for v in column)
    column = np.concatenate([np.pad(v, ((0, 0), (0, width - v.shape[1]), (0, 0))) for v in column])
    column = np.pad(column, ((0, scene.shape[0] - column.shape[0]), (0, 0), (0, 0)))
    return np.concatenate([scene, column], axis=1)


def selection_eval(policy, env_id: str, seeds, env_kwargs: dict, writer, step: int, best: float,
                   label: str, metric: str = "success_rate", evaluate=evaluate_policy) -> tuple[dict, bool, float]:
    """Periodic evaluation during training on checkpoint-selection seeds: logs eval/success_rate,
    eval/mean_score and eval/mean_length at `step`, prints a line, and returns (results, is_new_best,
    best_so_far) by the task's `metric` (one of `METRICS`). A tie with the best so far counts as a new best:
    the later checkpoint has trained longer.

    `evaluate` runs the episodes (`evaluate_policy`, or a distributed run's split-and-gather); `writer` may be
    None (a rank that does not log).

    Raises:
        ValueError: an unknown metric.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    results = evaluate(policy, env_id, seeds, env_kwargs, progress=False)
    if writer is not None:
        for key in ("success_rate", "mean_score", "mean_length"):
            writer.add_scalar(f"eval/{key}", results[key], step)
        tqdm.write(f"{label}: {format_results(results)}")
    return results, results[metric] >= best, max(best, results[metric])


def format_results(results: dict) -> str:
    lo, hi = results["ci95"]
    return (f"success {results['success_rate']:.1%} ({sum(results['successes'])}/{results['n_episodes']}, "
            f"95% CI {lo:.1%}-{hi:.1%}), mean score {results['mean_score']:.3f}, "
            f"mean episode length {results['mean_length']:.1f} steps")
