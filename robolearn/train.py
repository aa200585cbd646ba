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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.datasets import LinearNormalizer, SequenceDataset
from robolearn.datasets.collection import collect_dataset
from robolearn.datasets.dataset import describe_fingerprint, same_dataset
from robolearn.datasets.formats.common import imported_from
from robolearn.datasets.replay_buffer import DatasetError
from robolearn.distributed import Distributed, distributed_run
from robolearn.errors import CheckpointError, UserError
from robolearn.outputs import check_apart, check_writable
from robolearn.policies import EMA
from robolearn.policies.checkpoint import (
    CheckpointManager,
    load_policy,
    numpy_rng_state,
    restore_numpy_rng,
    save_policy,
)
from robolearn.policies.config import config_from_target
from robolearn.policies.diffusion import check_dataset_matches
from robolearn.policies.train_state import TrainState
from robolearn.sim.evaluation import evaluate_split, format_results, selection_eval
from robolearn.tasks import Task, load_task

#: types and ranges of the values `robolearn train` takes (configs/train.yaml, configs/policy/diffusion_*.yaml)
TRAIN_RULES = {
    "seed": Int(), "threads": Int(min=1, optional=True), "resume": Bool(), "collect_if_missing": Bool(),
    "allow_dataset_change": Bool(), "collect.n_episodes": Int(min=1), "collect.seed": Int(),
    "training.steps": Int(min=1), "training.batch_size": Int(min=1), "training.lr": Float(min=0, min_open=True),
    "training.weight_decay": Float(min=0), "training.warmup_steps": Int(min=0),
    "training.grad_clip": Float(min=0, min_open=True), "training.val_ratio": Float(min=0, max=0.9),
    "training.max_train_episodes": Int(min=1, optional=True), "training.log_every": Int(min=1),
    "training.val_every": Int(min=1), "training.eval_every": Int(min=1), "training.checkpoint_every": Int(min=1),
    "training.ema.power": Float(min=0, min_open=True), "training.ema.inv_gamma": Float(min=0, min_open=True),
    "training.ema.max_decay": Float(min=0, max=1), "eval.n_episodes": Int(min=0), "eval.final_n_episodes": Int(min=0),
    "eval.n_video": Int(min=0), "eval.seed": Int(), "eval.selection_seed": Int(),
    "policy.horizon": Int(min=1, max=4096), "policy.n_obs_steps": Int(min=1, max=1024),
    "policy.n_action_steps": Int(min=1, max=4096), "policy.num_train_timesteps": Int(min=1, max=100000),
    "policy.num_inference_steps": Int(min=1, max=100000), "policy.kernel_size": Int(min=1, max=63),
    "policy.n_groups": Int(min=1), "policy.step_embed_dim": Int(min=1, max=65536),
}


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


class PolicyLoss(torch.nn.Module):
    """The policy's denoising loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.policy.compute_loss(batch, noise=noise, timesteps=timesteps)


def training_noise(seed: int, step: int, batch_size: int, policy) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise (B, horizon, Da) and diffusion steps (B,) of training step `step`'s global batch, drawn from a
    generator seeded by (seed, step): the same on every rank and after a resume, so N ranks that each take their
    rows train exactly as one process with the whole batch."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    noise = torch.randn((batch_size, policy.horizon, policy.action_dim), generator=generator)
    return noise, torch.randint(0, policy.config.num_train_timesteps, (batch_size,), generator=generator)


def to_device(batch: dict, device: torch.device) -> dict:
    return {"obs": {k: v.to(device, non_blocking=True) for k, v in batch["obs"].items()},
            "action": batch["action"].to(device, non_blocking=True)}


@torch.no_grad()
def validation_loss(policy, val: SequenceDataset, device: torch.device, batch_size: int,
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
    check_config(cfg, TRAIN_RULES)
    check_apart({"run_dir": cfg.run_dir}, {"dataset": cfg.dataset})
    check_writable(cfg.run_dir, "run_dir")
    if not Path(cfg.dataset).exists() and cfg.collect_if_missing:
        check_writable(cfg.dataset, "dataset")  # it will be collected
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    with distributed_run(cfg.device, cfg.run_dir) as (dist, device):  # torchrun: one process per rank
        return _train(cfg, device, Path(cfg.run_dir), t_start, dist)


def _train(cfg: DictConfig, device: torch.device, run_dir: Path, t_start: float, dist: Distributed) -> dict:
    tc, ec = cfg.training, cfg.eval
    task = load_task(cfg.task, cfg.world)
    env_kwargs = task.env_kwargs
    dataset_path = Path(cfg.dataset)

    if not dataset_path.exists() and dist.is_main:
        if not cfg.collect_if_missing:
            raise UserError(f"dataset {dataset_path} not found (collect_if_missing=false)")
        print(f"dataset {dataset_path} is missing: collecting it with the scripted expert")
        collect_dataset(dataset_path, task, n_episodes=int(cfg.collect.n_episodes), seed=int(cfg.collect.seed))
    dist.barrier()  # the other ranks wait for rank 0's collection
    t_collected = time.perf_counter()
    try:
        task = task.with_dataset_features(dataset_path)  # `obs_features: from_dataset` (task=imported)
    except ValueError as exc:
        raise UserError(f"task {task.name}: {exc}") from None

    pc = cfg.policy
    for key in ("horizon", "n_obs_steps", "n_action_steps"):
        if key not in pc:
            raise UserError(f"robolearn train trains policies by denoising action sequences (policy=diffusion_unet, "
                            f"diffusion_unet_ddpm20); policy={pc.get('name')} has no `{key}`")
    try:
        data = SequenceDataset(dataset_path, task.obs_keys, task.action_key, horizon=pc.horizon,
                               n_obs_steps=pc.n_obs_steps, n_action_steps=pc.n_action_steps, val_ratio=tc.val_ratio,
                               seed=cfg.seed, max_train_episodes=tc.max_train_episodes)
    except DatasetError as exc:
        if "missing key" in str(exc) and imported_from(dataset_path):
            raise DatasetError(f"{exc} (the dataset was imported from {imported_from(dataset_path)}: train it with "
                               "task=imported, which takes its keys as they are)") from None
        raise
    val = data.validation()
    try:
        policy_cfg = config_from_target(OmegaConf.to_container(pc, resolve=True), obs_features=task.features_spec,
                                        action_dim=data.action_dim)
        check_dataset_matches(policy_cfg, data)
    except ValueError as exc:
        raise UserError(f"policy={pc.get('name')}: {exc}") from None
    has_sim = task.env_id is not None  # a real robot's task has no simulator to evaluate in
    if has_sim:
        check_dataset_fits_env(data, task)
    torch.manual_seed(cfg.seed)
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    if checkpoints.has_checkpoints and not cfg.resume:
        raise UserError(f"{run_dir} already holds checkpoints; pass another run_name= or resume=true")
    start = checkpoints.resume_point(str(cfg.resume_from))  # read back first: a damaged one is named
    # A resumed run keeps the normalizer it was trained with; only a new run fits one.
    normalizer = LinearNormalizer.load(start / "normalizer.json") if start is not None else data.fit_normalizer()
    try:
        policy = policy_cfg.build(normalizer).to(device)
    except ValueError as exc:  # e.g. cameras too small for the image encoder
        raise UserError(f"policy={pc.get('name')}: {exc}") from None
    if not hasattr(policy, "compute_loss"):
        raise UserError(f"policy={pc.get('name')} ({type(policy).__name__}) is not trained by denoising; "
                        "robolearn finetune trains it")
    ema = EMA(policy, power=tc.ema.power, inv_gamma=tc.ema.inv_gamma, max_decay=tc.ema.max_decay)
    # every trainable module of the policy: the denoiser, the observation encoder (image encoders), ...
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, tc.warmup_steps, tc.steps)
    batches = BatchStream(len(data), tc.batch_size, np.random.default_rng(cfg.seed))
    state = TrainState(optimizers={"policy": optimizer}, schedulers={"lr": scheduler})
    saved_config = {"policy": OmegaConf.to_container(pc, resolve=True),
                    "task": OmegaConf.to_container(cfg.task, resolve=True),
                    "dataset": str(dataset_path), "dataset_fingerprint": data.fingerprint(),
                    "training": OmegaConf.to_container(tc, resolve=True)}

    step, best = 0, -1.0
    if start is not None:
        step, best = resume(start, saved_config, data, policy, ema, state, batches,
                            allow_dataset_change=bool(cfg.allow_dataset_change))
        print(f"resumed from {start.resolve()} at step {step}")

    n_params = sum(p.numel() for p in params)
    if dist.is_main:
        print(f"training a {n_params / 1e6:.2f}M-parameter {type(policy).__name__} on {device} "
              f"({torch.get_num_threads()} threads{dist.processes}): {len(data)} train / {len(val)} val windows from "
              f"{dataset_path}")
    writer = SummaryWriter(str(run_dir / "tb")) if dist.is_main else None
    selection_seeds = range(ec.selection_seed, ec.selection_seed + ec.n_episodes)
    # DDP averages the ranks' gradients; every rank holds the same parameters, EMA and optimizer state
    loss_fn = (DistributedDataParallel(PolicyLoss(policy), device_ids=[device.index] if device.type == "cuda" else None,
                                       broadcast_buffers=False)  # buffers (normalizer statistics) never change
               if dist.enabled else PolicyLoss(policy))

    def evaluate(*args, **kwargs):
        return evaluate_split(dist, *args, **kwargs)

    def save(at_step: int, is_best: bool) -> None:
        if not dist.is_main:
            return
        tensors, meta = state.pack(step=at_step, best=best, ema_step=ema.step, batches=batches.state())
        checkpoints.save(at_step, lambda folder: save_policy(folder, policy, ema.averaged, saved_config),
                         tensors, meta, is_best=is_best)

    policy.train()
    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True, disable=not dist.is_main)
    loss_ema = None
    t_train = time.perf_counter()
    while step < tc.steps:
        ids = batches.next()
        rows = dist.shard(np.arange(len(ids)))
        noise, timesteps = training_noise(cfg.seed, step, len(ids), policy)  # the global batch's draws
        batch = to_device(data.get_batch(ids[rows]), device)
        loss = loss_fn(batch, noise[rows], timesteps[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(policy)
        step += 1
        loss_value = loss.detach().item()
        loss_ema = loss_value if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_value
        bar.update(1)
        if writer is not None:  # rank 0 logs; the other ranks train and join the evaluations
            if step % tc.log_every == 0:
                writer.add_scalar("train/loss", loss_value, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if step % tc.val_every == 0 or step == tc.steps:
                writer.add_scalar("val/loss", validation_loss(policy, val, device, tc.batch_size, cfg.seed), step)
        is_best = False
        if has_sim and ec.n_episodes and (step % tc.eval_every == 0 or step == tc.steps):
            _, is_best, best = selection_eval(ema.averaged, task.env_id, selection_seeds, env_kwargs, writer, step,
                                              best, f"step {step}: selection eval", metric=task.metric,
                                              evaluate=evaluate)
        if step % tc.checkpoint_every == 0 or step == tc.steps or is_best:
            save(step, is_best)
        if writer is not None:
            writer.flush()
    bar.close()
    train_seconds = time.perf_counter() - t_train
    dist.barrier()  # rank 0's last checkpoint is written before any rank reads it

    final_ckpt = checkpoints.best or checkpoints.latest
    if not dist.is_main:
        if has_sim and ec.final_n_episodes:
            evaluate(load_policy(final_ckpt, device=device), task.env_id,
                     range(ec.seed, ec.seed + ec.final_n_episodes), env_kwargs)
        return {"checkpoint": str(final_ckpt.resolve()), "train_steps": step}
    if not has_sim or not ec.final_n_episodes:
        writer.close()
        print(f"\ncheckpoint: {final_ckpt}  (no simulator evaluation for task {task.name})")
        print(f"logs:       tensorboard --logdir {run_dir / 'tb'}")
        print(f"time: train {train_seconds / 60:.1f} min (this run)")
        return {"checkpoint": str(final_ckpt.resolve()), "train_steps": step}
    final_seeds = range(ec.seed, ec.seed + ec.final_n_episodes)
    print(f"final evaluation of {final_ckpt.resolve().name} ({'best' if checkpoints.best else 'latest'}) "
          f"on {len(final_seeds)} held-out test seeds from {ec.seed}")
    final_policy = load_policy(final_ckpt, device=device)
    results = evaluate(final_policy, task.env_id, final_seeds, env_kwargs,
                       video_path=str(run_dir / "eval.mp4"), n_video=ec.n_video)
    results.update(checkpoint=str(final_ckpt.resolve()), world=task.world, world_config=task.world_config,
                   train_steps=step,
                   train_seconds_this_run=train_seconds, collect_seconds=t_collected - t_start)
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    writer.add_scalar("eval/final_success_rate", results["success_rate"], step)
    writer.add_scalar("eval/final_mean_score", results["mean_score"], step)
    writer.close()
    print(f"\n{format_results(results)}")
    print(f"checkpoint: {final_ckpt}  (latest: {checkpoints.latest})")
    print(f"video:      {results['video']}")
    print(f"results:    {run_dir / 'eval_results.json'}")
    print(f"logs:       tensorboard --logdir {run_dir / 'tb'}")
    print(f"time: collect {t_collected - t_start:.0f} s, train {train_seconds / 60:.1f} min (this run), "
          f"total {(time.perf_counter() - t_start) / 60:.1f} min")
    return results


def check_dataset_fits_env(data: SequenceDataset, task: Task) -> None:
    """Before the first step: the task's env must provide the features the dataset was checked against
    (`check_dataset_matches`) and take actions of the dataset's size.

    Raises:
        UserError: an observation key the env does not provide or gives in another shape (naming the key and
            both shapes), or another action size.
    """
    try:
        task.check_env(action_dim=data.action_dim, source=f"dataset {data.path}")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def resume(folder: Path, saved_config: dict, data: SequenceDataset, policy, ema: EMA,
           state: TrainState, batches: BatchStream, allow_dataset_change: bool = False) -> tuple[int, float]:
    """Load the policy (every module), EMA, optimizer, scheduler, batch order and RNG state from the checkpoint
    `folder` (`CheckpointManager.resume_point`: `latest` unless resume_from= says otherwise).

    The dataset must be the one the run was trained on, compared by content (`SequenceDataset.fingerprint`:
    episodes, steps, a hash of the data), not by path. With `allow_dataset_change` a changed dataset is
    accepted: training continues with the run's saved normalizer and a new batch order.

    Raises:
        UserError: another policy config, a changed dataset without `allow_dataset_change`, or a train state
            this version cannot resume.
    """
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    previous = saved.get("train", {})
    if previous.get("policy") != saved_config["policy"]:
        raise UserError(f"{folder} was trained with policy={previous.get('policy')}, this run has "
                        f"policy={saved_config['policy']}; pass another run_name= to start a new run")
    old, new = previous.get("dataset_fingerprint"), saved_config["dataset_fingerprint"]
    same = same_dataset(previous, saved_config)
    if not same:
        if not allow_dataset_change:
            raise UserError(f"{folder} was trained on a different dataset ({describe_fingerprint(old)}) than "
                            f"{saved_config['dataset']} is now ({describe_fingerprint(new)}); pass another "
                            "run_name= to start a new run, or allow_dataset_change=true to continue on the new data")
        print(f"note: the dataset changed since {folder} ({describe_fingerprint(old)} -> "
              f"{describe_fingerprint(new)}): continuing with the run's normalizer and a new batch order")
    try:
        check_dataset_matches(policy.config, data)
    except ValueError as exc:
        raise UserError(f"cannot resume {folder}: {exc}") from exc
    try:
        counters = state.restore(*CheckpointManager.load_train_state(folder))
    except CheckpointError as exc:
        raise UserError(f"cannot resume {folder}: {exc}") from None
    policy.load_state_dict(load_file(folder / "model.safetensors"))
    ema.averaged.load_state_dict(load_file(folder / "ema.safetensors"))
    if same:
        batches.restore(counters["batches"])
    ema.step = int(counters["ema_step"])
    best = counters["best"]
    return int(counters["step"]), (-1.0 if best is None or math.isnan(best) else float(best))
