"""`robolearn train-value`: offline Q-learning (Cal-QL or IQL) over action chunks on a zarr dataset.

The Q-function scores (observation history, action chunk) pairs of the same shape as the policy it
will re-rank (`n_obs_steps`, `n_action_steps`); `robolearn eval checkpoint=... value=...` uses it.
TensorBoard logs, safetensors checkpoints, and exact resume from `<run_dir>/checkpoints/latest`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.datasets import LinearNormalizer
from robolearn.datasets.dataset import describe_fingerprint, same_dataset
from robolearn.datasets.rewards import REWARD_CONVENTIONS
from robolearn.distributed import Distributed, distributed_run
from robolearn.errors import CheckpointError, UserError
from robolearn.outputs import check_apart, check_writable
from robolearn.policies.checkpoint import (
    CheckpointManager,
)
from robolearn.policies.features import check_features
from robolearn.policies.train_state import TrainState
from robolearn.tasks import load_task
from robolearn.value import (
    ChunkTransitions,
    OfflineQConfig,
    OfflineQLearner,
    QFunction,
    QFunctionConfig,
    save_q_function,
)

#: types and ranges of the values `robolearn train-value` takes (configs/train_value.yaml)
TRAIN_VALUE_RULES = {
    "seed": Int(), "threads": Int(min=1, optional=True), "resume": Bool(), "n_obs_steps": Int(min=1),
    "n_action_steps": Int(min=1), "gamma": Float(min=0, max=1), "reward.num_final_steps": Int(min=0),
    "network.n_critics": Int(min=1, max=64), "network.layer_norm": Bool(), "training.steps": Int(min=1),
    "training.batch_size": Int(min=1), "training.lr": Float(min=0, min_open=True), "training.tau": Float(min=0, max=1),
    "training.log_every": Int(min=1), "training.checkpoint_every": Int(min=1), "cal_ql.cql_alpha": Float(min=0),
    "cal_ql.n_random": Int(min=0), "cal_ql.n_perturbed": Int(min=0), "cal_ql.perturb_std": Float(min=0),
    "cal_ql.calibrate": Bool(), "iql.expectile": Float(min=0, max=1, min_open=True),
}


def train_value(cfg: DictConfig) -> dict:
    """Hydra task `robolearn train-value` (configs/train_value.yaml). Returns the final statistics.

    The run folder is locked while it runs.

    Raises:
        UserError: a config value of the wrong type or range (`TRAIN_VALUE_RULES`), an unknown algorithm or
            reward convention, a changed dataset or config on resume.
        LockError: another process is writing the run folder.
    """
    check_config(cfg, TRAIN_VALUE_RULES)
    check_apart({"run_dir": cfg.run_dir}, {"dataset": cfg.dataset})
    check_writable(cfg.run_dir, "run_dir")
    with distributed_run(cfg.device, cfg.run_dir) as (dist, device):  # torchrun: one process per rank
        return _train_value(cfg, dist, device)


def _train_value(cfg: DictConfig, dist: Distributed, device: torch.device) -> dict:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.reward.convention not in REWARD_CONVENTIONS:
        raise UserError(f"reward.convention must be one of {REWARD_CONVENTIONS}, got {cfg.reward.convention!r}")
    if cfg.algorithm not in ("cal_ql", "iql"):
        raise UserError(f"algorithm must be cal_ql or iql, got {cfg.algorithm!r}")
    dataset = Path(cfg.dataset)
    tc = cfg.training
    run_dir = Path(cfg.run_dir)
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    if checkpoints.has_checkpoints and not cfg.resume:
        raise UserError(f"{run_dir} already holds checkpoints; pass another run_name= or resume=true")
    # a resumed run keeps the normalizer it was trained with; only a new run fits one
    start = checkpoints.resume_point(str(cfg.resume_from))  # read back first: a damaged one is named
    normalizer = LinearNormalizer.load(start / "normalizer.json") if start is not None else None
    task = load_task(cfg.task)
    data = ChunkTransitions(dataset, task.obs_keys, int(cfg.n_obs_steps), int(cfg.n_action_steps),
                            gamma=float(cfg.gamma), reward_convention=cfg.reward.convention,
                            num_final_steps=int(cfg.reward.num_final_steps),
                            failed_episodes=list(cfg.reward.failed_episodes or []), normalizer=normalizer)
    try:
        check_features(task.obs_features, data.obs_shapes, f"dataset {dataset}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    torch.manual_seed(cfg.seed)
    q_config = QFunctionConfig(obs_features=task.features_spec, action_dim=data.action_dim,
                               n_obs_steps=int(cfg.n_obs_steps), n_action_steps=int(cfg.n_action_steps),
                               hidden=list(cfg.network.hidden), n_critics=int(cfg.network.n_critics),
                               layer_norm=bool(cfg.network.layer_norm), algorithm=cfg.algorithm)
    q = QFunction(q_config, data.normalizer).to(device)
    learner_cfg = OfflineQConfig(algorithm=cfg.algorithm, lr=float(tc.lr), tau=float(tc.tau),
                                 **OmegaConf.to_container(cfg.cal_ql), expectile=float(cfg.iql.expectile))
    learner = OfflineQLearner(q, learner_cfg)
    learner.target.to(device)
    saved_config = {"dataset": str(dataset), "dataset_fingerprint": data.fingerprint, "q_function": q_config.to_dict(),
                    "learner": OmegaConf.to_container(cfg, resolve=True)}
    # Cal-QL's out-of-distribution samples: a stream per rank (the batch order is shared by every rank)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed) + 7919 * dist.rank)
    sampler = torch.Generator().manual_seed(int(cfg.seed) + 1)

    state = TrainState(optimizers={"q": learner.optimizer}, generators={"noise": generator, "batches": sampler})
    step = 0
    if start is not None:
        step = resume(start, saved_config, q, learner, state)
        print(f"resumed from {start.resolve()} at step {step}")

    def save(at_step: int) -> None:
        if not dist.is_main:  # rank 0 writes the (identical) weights
            return
        tensors, meta = state.pack(step=at_step)
        checkpoints.save(at_step, lambda folder: save_q_function(folder, q, learner.target, saved_config),
                         tensors, meta)

    n_params = sum(p.numel() for p in q.parameters())
    if dist.is_main:
        print(f"{cfg.algorithm}: {q_config.n_critics} critics, {n_params / 1e6:.2f}M parameters on {device}"
              f"{dist.processes}; "
              f"{len(data)} chunk transitions from {dataset} ({int(data.success.sum())}/{len(data.success)} "
              f"successful episodes), reward convention {cfg.reward.convention}")
    writer = SummaryWriter(str(run_dir / "tb")) if dist.is_main else None
    bar = tqdm(total=int(tc.steps), initial=step, desc=f"train-value {cfg.algorithm}", unit="step", dynamic_ncols=True,
               disable=not dist.is_main)
    t0 = time.perf_counter()
    stats: dict[str, float] = {}
    while step < int(tc.steps):
        # the global batch (the same on every rank); each rank trains on its rows, gradients averaged over ranks
        ids = torch.randint(0, len(data), (int(tc.batch_size),), generator=sampler)
        stats = learner.update(data.batch(dist.shard(ids), device, q.encode_obs), generator,
                               before_step=lambda: dist.average_gradients(q.parameters()))
        step += 1
        bar.update(1)
        if writer is not None and step % int(tc.log_every) == 0:
            for key, value in stats.items():
                writer.add_scalar(f"train/{key}", value, step)
            bar.set_postfix(td=f"{stats['td_loss']:.3f}", q=f"{stats['q_mean']:.2f}")
        if step % int(tc.checkpoint_every) == 0 or step == int(tc.steps):
            save(step)
            if writer is not None:
                writer.flush()
    bar.close()
    dist.barrier()
    if not dist.is_main:
        return {"checkpoint": str(run_dir / "checkpoints" / "latest"), "steps": step, **stats}
    writer.close()
    result = {"checkpoint": str(run_dir / "checkpoints" / "latest"), "steps": step,
              "seconds_this_run": time.perf_counter() - t0, **stats}
    data_q = dataset_q_summary(q, data, device)
    result.update(data_q)
    print(f"\nQ on the dataset: successful episodes {data_q['q_success_episodes']:.2f}, "
          f"failed {data_q['q_failed_episodes']:.2f} (mean over their chunks)")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"logs:       tensorboard --logdir {run_dir / 'tb'}")
    return result


@torch.no_grad()
def dataset_q_summary(q: QFunction, data: ChunkTransitions, device: torch.device) -> dict[str, float]:
    """Mean ensemble-min Q of the dataset's chunks in successful and in failed episodes (a sanity check)."""
    values = []
    for start in range(0, len(data), 4096):
        ids = torch.arange(start, min(start + 4096, len(data)))
        b = data.batch(ids, device, q.encode_obs)
        values.append(q(b["cond"], b["chunk"]).min(dim=0).values.cpu())
    values = torch.cat(values).numpy()
    lengths = np.diff(np.concatenate([[0], data.episode_ends]))
    step_success = np.repeat(data.success, lengths)
    return {"q_success_episodes": float(values[step_success].mean()) if step_success.any() else float("nan"),
            "q_failed_episodes": float(values[~step_success].mean()) if (~step_success).any() else float("nan")}


def resume(folder: Path, saved_config: dict, q: QFunction, learner: OfflineQLearner, state: TrainState) -> int:
    """Restore weights (with the observation encoder), target, optimizer and RNG states from a checkpoint
    folder; returns its step.

    Raises:
        UserError: the run was trained with another Q-function config, or on a dataset whose content
            differs (compared by `dataset_fingerprint`, not by path).
    """
    previous = yaml.safe_load((folder / "config.yaml").read_text()).get("train", {})
    if previous.get("q_function") != saved_config["q_function"]:
        raise UserError(f"{folder} was trained with q_function={previous.get('q_function')}, this run has "
                        f"q_function={saved_config['q_function']}; pass another run_name= to start a new run")
    old = previous.get("dataset_fingerprint")
    if not same_dataset(previous, saved_config):
        raise UserError(f"{folder} was trained on a different dataset than {saved_config['dataset']} is now "
                        f"({describe_fingerprint(old)} -> {describe_fingerprint(saved_config['dataset_fingerprint'])}); "
                        "pass another run_name= to start a new run")
    try:
        counters = state.restore(*CheckpointManager.load_train_state(folder))
    except CheckpointError as exc:
        raise UserError(f"cannot resume {folder}: {exc}") from None
    q.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    learner.target.load_state_dict(load_file(folder / "target.safetensors"))
    if q.value is not None:
        q.value.load_state_dict(load_file(folder / "value.safetensors"))
    return int(counters["step"])
