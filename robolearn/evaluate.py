"""Policy evaluation in simulation: success rate with a confidence interval, videos, JSON results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym
import imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import robolearn.sim  # noqa: F401  (registers the envs)
from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.errors import UserError
from robolearn.policies.checkpoint import CheckpointError, load_policy
from robolearn.policies.runner import PolicyRunner
from robolearn.value import ValueGuidedPolicy, load_q_function


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% for z = 1.96) of a binomial proportion successes / n."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def evaluate_policy(policy, env_id: str, seeds, env_kwargs: dict | None = None, video_path: str | None = None,
                    n_video: int = 3, sampling_seed: int = 0, progress: bool = True) -> dict:
    """Run one episode per seed, all envs stepped together in a gymnasium SyncVectorEnv.

    Args:
        policy: a chunked policy (see `PolicyRunner`).
        seeds: env reset seeds, one episode each.
        video_path: if given, the first `n_video` episodes are rendered off-screen and
            written one after another to this mp4.
        sampling_seed: seeds the policy's sampling noise, so an evaluation is reproducible.

    Returns:
        {"success_rate", "ci95": [lo, hi], "n_episodes", "mean_length" (steps),
         "successes": [bool per seed], "lengths": [...], "seeds": [...], "video": path or None,
         "seconds": wall time}
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
    frames: list[list[np.ndarray]] = [[envs.envs[i].render()] for i in range(n_video)]
    max_steps = envs.envs[0].unwrapped.max_episode_steps
    bar = tqdm(total=n, desc="eval", unit="ep", disable=not progress, leave=False)
    for t in range(max_steps):
        action = runner.act(obs)
        obs, _, terminated, truncated, info = envs.step(action)
        for i in range(n_video):
            if not done[i]:
                frames[i].append(envs.envs[i].render())
        finished = (terminated | truncated) & ~done
        success[finished] = info["is_success"][finished]
        lengths[finished] = t + 1
        done |= finished
        bar.update(int(finished.sum()))
        if done.all():
            break
    bar.close()
    envs.close()
    video = None
    if n_video:
        Path(video_path).parent.mkdir(parents=True, exist_ok=True)
        fps = envs.metadata.get("render_fps", 20)
        imageio.mimsave(video_path, [f for ep in frames for f in ep], fps=fps, macro_block_size=8)
        video = str(video_path)
    k = int(success.sum())
    return {"success_rate": k / n, "ci95": list(wilson_interval(k, n)), "n_episodes": n,
            "mean_length": float(lengths.mean()), "successes": success.tolist(), "lengths": lengths.tolist(),
            "seeds": seeds, "video": video, "seconds": time.perf_counter() - t0}


def selection_eval(policy, env_id: str, seeds, env_kwargs: dict, writer, step: int, best: float,
                   label: str) -> tuple[dict, bool, float]:
    """Periodic evaluation during training on checkpoint-selection seeds: logs eval/success_rate and
    eval/mean_length at `step`, prints a line, and returns (results, is_new_best, best_so_far).
    A tie with the best so far counts as a new best: the later checkpoint has trained longer."""
    results = evaluate_policy(policy, env_id, seeds, env_kwargs, progress=False)
    writer.add_scalar("eval/success_rate", results["success_rate"], step)
    writer.add_scalar("eval/mean_length", results["mean_length"], step)
    tqdm.write(f"{label}: {format_results(results)}")
    return results, results["success_rate"] >= best, max(best, results["success_rate"])


def format_results(results: dict) -> str:
    lo, hi = results["ci95"]
    return (f"success {results['success_rate']:.1%} ({sum(results['successes'])}/{results['n_episodes']}, "
            f"95% CI {lo:.1%}-{hi:.1%}), mean episode length {results['mean_length']:.1f} steps")


def with_reranking(policy, value_checkpoint: str, rerank: DictConfig, device: str = "cpu") -> ValueGuidedPolicy:
    """Wrap `policy` in value-guided re-ranking with the Q-function checkpoint `value_checkpoint`.

    Raises:
        UserError: the checkpoint cannot be loaded or does not fit the policy, or bad rerank options.
    """
    try:
        q_function = load_q_function(value_checkpoint, device=device)
        return ValueGuidedPolicy(policy, q_function, k=int(rerank.k), temperature=float(rerank.temperature),
                                 selection=str(rerank.selection))
    except (CheckpointError, ValueError) as exc:
        raise UserError(f"value={value_checkpoint}: {exc}") from exc


#: types and ranges of the values `robolearn eval` takes (configs/eval.yaml)
EVAL_RULES = {"n_episodes": Int(min=1), "seed": Int(), "n_video": Int(min=0), "use_ema": Bool(),
              "rerank.k": Int(min=1, max=4096), "rerank.temperature": Float(min=0),
              "num_inference_steps": Int(min=1, max=100000, optional=True), "threads": Int(min=1, optional=True)}


def run_eval(cfg: DictConfig) -> dict:
    """Hydra task `robolearn eval checkpoint=...`: evaluate a checkpoint on fixed seeds.

    Raises:
        UserError: no checkpoint, a damaged checkpoint, or a value of the wrong type or range (`EVAL_RULES`).
    """
    check_config(cfg, EVAL_RULES)
    if cfg.checkpoint is None:
        raise UserError("give a checkpoint folder: robolearn eval checkpoint=runs/.../checkpoints/latest")
    try:
        policy = load_policy(cfg.checkpoint, use_ema=cfg.use_ema, device=cfg.device or "cpu",
                             sampler=cfg.sampler, num_inference_steps=cfg.num_inference_steps)
    except CheckpointError as exc:
        raise UserError(str(exc)) from exc
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.value is not None:
        policy = with_reranking(policy, cfg.value, cfg.rerank, device=cfg.device or "cpu")
    out = Path(cfg.output_dir)
    seeds = range(cfg.seed, cfg.seed + cfg.n_episodes)
    env_kwargs = OmegaConf.to_container(cfg.task.env_kwargs, resolve=True)
    results = evaluate_policy(policy, cfg.task.env_id, seeds, env_kwargs,
                              video_path=str(out / "eval.mp4") if cfg.n_video else None, n_video=cfg.n_video)
    results.update(checkpoint=str(cfg.checkpoint), policy_class=type(policy).__name__,
                   sampler=getattr(policy.config, "sampler", None),
                   num_inference_steps=getattr(policy.config, "num_inference_steps", None),
                   value=None if cfg.value is None else str(cfg.value),
                   rerank=None if cfg.value is None else OmegaConf.to_container(cfg.rerank))
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_results.json").write_text(json.dumps(results, indent=1))
    print(f"{cfg.checkpoint}: {format_results(results)}")
    print(f"results: {out / 'eval_results.json'}" + (f"   video: {results['video']}" if results["video"] else ""))
    return results
