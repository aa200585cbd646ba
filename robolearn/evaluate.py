"""`robolearn eval`: evaluate a checkpoint in simulation on fixed seeds (success rate with a confidence
interval, the mean score, videos, JSON results; the rollouts are `robolearn.sim.evaluation`'s)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.errors import UserError
from robolearn.outputs import check_apart, check_writable, write_text_or_keep
from robolearn.policies.checkpoint import CheckpointError, load_policy
from robolearn.policies.features import check_features
from robolearn.sim.evaluation import evaluate_policy, format_results
from robolearn.tasks import load_task
from robolearn.value import ValueGuidedPolicy, load_q_function


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
        UserError: no checkpoint, a damaged checkpoint, a task without a simulator, a checkpoint whose
            observation features the task's env does not provide (naming the key), or a value of the wrong
            type or range (`EVAL_RULES`).
    """
    check_config(cfg, EVAL_RULES)
    check_apart({"output_dir": cfg.output_dir}, {"checkpoint": cfg.checkpoint, "value": cfg.value})
    check_writable(cfg.output_dir, "output_dir")  # before the rollouts: their results are never lost
    task = load_task(cfg.task, cfg.world)
    if task.env_id is None:
        raise UserError(f"task {task.name} has no simulator to evaluate in")
    if cfg.checkpoint is None:
        raise UserError("give a checkpoint folder: robolearn eval checkpoint=runs/.../checkpoints/latest")
    try:
        policy = load_policy(cfg.checkpoint, use_ema=cfg.use_ema, device=cfg.device or "cpu",
                             sampler=cfg.sampler, num_inference_steps=cfg.num_inference_steps, inference=cfg.inference)
    except CheckpointError as exc:
        raise UserError(str(exc)) from exc
    except ValueError as exc:  # a bad sampler, num_inference_steps or inference override
        raise UserError(f"{cfg.checkpoint}: {exc}") from exc
    try:
        check_features(policy.obs_features, task.env_shapes()[0], f"task={task.name} (env {task.env_id})")
    except ValueError as exc:
        raise UserError(f"{cfg.checkpoint} does not fit {exc}; pass the task it was trained on (task=...)") from None
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.value is not None:
        policy = with_reranking(policy, cfg.value, cfg.rerank, device=cfg.device or "cpu")
    out = Path(cfg.output_dir)
    seeds = range(cfg.seed, cfg.seed + cfg.n_episodes)
    results = evaluate_policy(policy, task.env_id, seeds, task.env_kwargs,
                              video_path=str(out / "eval.mp4") if cfg.n_video else None, n_video=cfg.n_video)
    results.update(checkpoint=str(cfg.checkpoint), world=task.world, world_config=task.world_config,
                   policy_class=type(policy).__name__,
                   sampler=getattr(policy.config, "sampler", None),
                   num_inference_steps=getattr(policy.config, "num_inference_steps", None),
                   inference=getattr(policy.config, "inference", None),
                   value=None if cfg.value is None else str(cfg.value),
                   rerank=None if cfg.value is None else OmegaConf.to_container(cfg.rerank))
    write_text_or_keep(out / "eval_results.json", json.dumps(results, indent=1), "evaluation results")
    print(f"{cfg.checkpoint} in world {task.world}: {format_results(results)}")
    print(f"results: {out / 'eval_results.json'}" + (f"   video: {results['video']}" if results["video"] else ""))
    return results
