"""`robolearn train`: Diffusion Policy training with validation, evaluation rollouts, checkpoints, resume."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from diffusers.optimization import get_cosine_schedule_with_warmup
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from robolearn.collect import collect_dataset
from robolearn.datasets import SequenceDataset
from robolearn.devices import pick_device
from robolearn.errors import UserError
from robolearn.evaluate import evaluate_policy, format_results, selection_eval
from robolearn.policies import EMA, DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.checkpoint import (CheckpointManager, load_policy, numpy_rng_state,
                                           optimizer_from_safetensors, optimizer_to_safetensors, restore_numpy_rng,
                                           save_policy)
from robolearn.policies.diffusion import check_dataset_matches

POLICY_CONFIG_KEYS = set(DiffusionPolicyConfig.__dataclass_fields__) - {"obs_keys", "obs_dims", "action_dim"}


class BatchStream:
    """Shuffled mini-batches of window ids, epoch after epoch, from a resumable numpy RNG."""

    def __init__(self, n_windows: int, batch_size: int, rng: np.random.Generator):
        if n_windows == 0:
            raise UserError("the training split has no windows (episodes too short for the horizon?)")
        self.n, self.batch_size, self.rng = n_windows, min(batch_size, n_windows), rng
        self.order, self.pos = rng.permutation(n_windows), 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        ids = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return ids

    def state(self) -> dict:
        return {"rng": numpy_rng_state(self.rng), "order": self.order.tolist(), "pos": self.pos}

    def restore(self, state: dict) -> None:
        self.rng = restore_numpy_rng(state["rng"])
        self.order, self.pos = np.asarray(state["order"]), int(state["pos"])


def to_device(batch: dict, device: torch.device) -> dict:
    return {"obs": {k: v.to(device, non_blocking=True) for k, v in batch["obs"].items()},
            "action": batch["action"].to(device, non_blocking=True)}


@torch.no_grad()
def validation_loss(policy: DiffusionPolicy, val: SequenceDataset, device: torch.device, batch_size: int,
                    seed: int) -> float:
    """Mean denoising loss over every validation window, with fixed noise (comparable across steps)."""
    if len(val) == 0:
        return float("nan")
    generator = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    policy.eval()
    for start in range(0, len(val), batch_size):
        ids = np.arange(start, min(start + batch_size, len(val)))
        loss = policy.compute_loss(to_device(val.get_batch(ids), device), generator=generator)
        total, count = total + float(loss) * len(ids), count + len(ids)
    policy.train()
    return total / count


def train(cfg: DictConfig) -> dict:
    """Hydra task `robolearn train` (configs/train.yaml). Returns the final evaluation results."""
    t_start = time.perf_counter()
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    tc, ec = cfg.training, cfg.eval
    run_dir = Path(cfg.run_dir)
    env_kwargs = OmegaConf.to_container(cfg.task.env_kwargs, resolve=True)
    dataset_path = Path(cfg.dataset)

    if not dataset_path.exists():
        if not cfg.collect_if_missing:
            raise UserError(f"dataset {dataset_path} not found (collect_if_missing=false)")
        print(f"dataset {dataset_path} is missing: collecting it with the scripted expert")
        collect_dataset(dataset_path, cfg.task.env_id, env_kwargs, n_episodes=int(cfg.collect.n_episodes),
                        seed=int(cfg.collect.seed))
    t_collected = time.perf_counter()

    pc = cfg.policy
    if not str(pc.name).startswith("diffusion"):
        raise UserError(f"robolearn train trains Diffusion Policies (policy=diffusion_unet, diffusion_unet_ddpm20); "
                        f"policy={pc.name} belongs to robolearn finetune")
    data = SequenceDataset(dataset_path, list(cfg.task.obs_keys), cfg.task.action_key, horizon=pc.horizon,
                           n_obs_steps=pc.n_obs_steps, n_action_steps=pc.n_action_steps, val_ratio=tc.val_ratio,
                           seed=cfg.seed, max_train_episodes=tc.max_train_episodes)
    val = data.validation()
    torch.manual_seed(cfg.seed)
    policy_cfg = DiffusionPolicyConfig(obs_keys=list(cfg.task.obs_keys), obs_dims=list(data.obs_dims.values()),
                                       action_dim=data.action_dim,
                                       **{k: v for k, v in OmegaConf.to_container(pc).items() if k in POLICY_CONFIG_KEYS})
    policy = DiffusionPolicy(policy_cfg, data.fit_normalizer()).to(device)
    ema = EMA(policy, power=tc.ema.power, inv_gamma=tc.ema.inv_gamma, max_decay=tc.ema.max_decay)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=tc.lr, betas=tuple(tc.betas),
                                  weight_decay=tc.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, tc.warmup_steps, tc.steps)
    batches = BatchStream(len(data), tc.batch_size, np.random.default_rng(cfg.seed))
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    saved_config = {"policy": OmegaConf.to_container(pc), "task": OmegaConf.to_container(cfg.task, resolve=True),
                    "dataset": str(dataset_path), "training": OmegaConf.to_container(tc)}

    step, best_success = 0, -1.0
    if checkpoints.latest is not None:
        if not cfg.resume:
            raise UserError(f"{run_dir} already holds checkpoints; pass another run_name= or resume=true")
        step, best_success = resume(checkpoints, saved_config, data, policy, ema, optimizer, scheduler, batches)
        print(f"resumed from {checkpoints.latest.resolve()} at step {step}")

    n_params = sum(p.numel() for p in policy.model.parameters())
    print(f"training {n_params / 1e6:.2f}M-parameter U-Net on {device} ({torch.get_num_threads()} threads): "
          f"{len(data)} train / {len(val)} val windows from {dataset_path}")
    writer = SummaryWriter(str(run_dir / "tb"))
    selection_seeds = range(ec.selection_seed, ec.selection_seed + ec.n_episodes)
    has_sim = cfg.task.env_id is not None  # a real robot's task has no simulator to evaluate in

    def save(at_step: int, is_best: bool) -> None:
        opt_tensors, opt_meta = optimizer_to_safetensors(optimizer)
        tensors = {**opt_tensors, "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["cuda_rng"] = torch.cuda.get_rng_state()
        meta = {"step": at_step, "best_success": best_success, "ema_step": ema.step, "optimizer": opt_meta,
                "scheduler": scheduler.state_dict(), "batches": batches.state()}
        checkpoints.save(at_step, lambda folder: save_policy(folder, policy, ema.averaged, saved_config),
                         tensors, meta, is_best=is_best)

    policy.train()
    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    loss_ema = None
    t_train = time.perf_counter()
    while step < tc.steps:
        batch = to_device(data.get_batch(batches.next()), device)
        loss = policy.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(policy)
        step += 1
        loss_value = loss.detach().item()
        loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value
        bar.update(1)
        if step % tc.log_every == 0:
            writer.add_scalar("train/loss", loss_value, step)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        if step % tc.val_every == 0 or step == tc.steps:
            writer.add_scalar("val/loss", validation_loss(policy, val, device, tc.batch_size, cfg.seed), step)
        is_best = False
        if has_sim and ec.n_episodes and (step % tc.eval_every == 0 or step == tc.steps):
            _, is_best, best_success = selection_eval(ema.averaged, cfg.task.env_id, selection_seeds, env_kwargs,
                                                      writer, step, best_success, f"step {step}: selection eval")
        if step % tc.checkpoint_every == 0 or step == tc.steps or is_best:
            save(step, is_best)
        writer.flush()
    bar.close()
    train_seconds = time.perf_counter() - t_train

    final_ckpt = checkpoints.best or checkpoints.latest
    if not has_sim or not ec.final_n_episodes:
        writer.close()
        print(f"\ncheckpoint: {final_ckpt}  (no simulator evaluation for task {cfg.task.name})")
        print(f"logs:       tensorboard --logdir {run_dir / 'tb'}")
        print(f"time: train {train_seconds / 60:.1f} min (this run)")
        return {"checkpoint": str(final_ckpt.resolve()), "train_steps": step}
    final_seeds = range(ec.seed, ec.seed + ec.final_n_episodes)
    print(f"final evaluation of {final_ckpt.resolve().name} ({'best' if checkpoints.best else 'latest'}) "
          f"on {len(final_seeds)} held-out test seeds from {ec.seed}")
    final_policy = load_policy(final_ckpt, device=device)
    results = evaluate_policy(final_policy, cfg.task.env_id, final_seeds, env_kwargs,
                              video_path=str(run_dir / "eval.mp4"), n_video=ec.n_video)
    results.update(checkpoint=str(final_ckpt.resolve()), train_steps=step,
                   train_seconds_this_run=train_seconds, collect_seconds=t_collected - t_start)
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    writer.add_scalar("eval/final_success_rate", results["success_rate"], step)
    writer.close()
    print(f"\n{format_results(results)}")
    print(f"checkpoint: {final_ckpt}  (latest: {checkpoints.latest})")
    print(f"video:      {results['video']}")
    print(f"results:    {run_dir / 'eval_results.json'}")
    print(f"logs:       tensorboard --logdir {run_dir / 'tb'}")
    print(f"time: collect {t_collected - t_start:.0f} s, train {train_seconds / 60:.1f} min (this run), "
          f"total {(time.perf_counter() - t_start) / 60:.1f} min")
    return results


def resume(checkpoints: CheckpointManager, saved_config: dict, data: SequenceDataset, policy, ema, optimizer,
           scheduler, batches: BatchStream) -> tuple[int, float]:
    """Load model, EMA, optimizer, scheduler, batch order and RNG state from `latest`."""
    folder = checkpoints.latest
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    previous = saved.get("train", {})
    for key in ("policy", "dataset"):
        if previous.get(key) != saved_config[key]:
            raise UserError(f"{folder} was trained with {key}={previous.get(key)}, this run has "
                            f"{key}={saved_config[key]}; pass another run_name= to start a new run")
    try:
        check_dataset_matches(DiffusionPolicyConfig.from_dict(saved["policy"]), data)
    except ValueError as exc:
        raise UserError(f"cannot resume {folder}: {exc}") from exc
    policy.model.load_state_dict(load_file(folder / "model.safetensors"))
    ema.averaged.model.load_state_dict(load_file(folder / "ema.safetensors"))
    tensors, meta = checkpoints.load_train_state(folder)
    optimizer_from_safetensors(optimizer, tensors, meta["optimizer"])
    scheduler.load_state_dict(meta["scheduler"])
    batches.restore(meta["batches"])
    torch.set_rng_state(tensors["torch_rng"])
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda_rng"])
    ema.step = int(meta["ema_step"])
    best = meta["best_success"]
    return int(meta["step"]), (-1.0 if best is None or math.isnan(best) else float(best))
