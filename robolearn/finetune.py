"""`robolearn finetune`: RL fine-tuning in simulation with PPO.

policy=dppo (default): DPPO (Ren et al. 2024) on a pretrained Diffusion Policy checkpoint.
policy=gaussian: the Gaussian-policy PPO baseline, pretrained by behaviour cloning on the
same demonstrations, with the same envs, GAE, reward scaling and PPO update.

Each iteration collects `n_steps` chunk decisions in each of `n_envs` vectorized envs,
computes GAE(lambda) over decisions (chunk reward = sum of step rewards) with running
reward scaling, then runs `update_epochs` passes of PPO over minibatches of
(env step, denoising step) pairs. The online weights act in the rollouts; their average over
iterations (`ema`; by default the running mean of every actor iteration's weights) is what is
evaluated, checkpointed and deployed, and the last checkpoint is the run's result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.datasets import SequenceDataset
from robolearn.devices import pick_device
from robolearn.errors import UserError
from robolearn.evaluate import evaluate_policy, format_results, selection_eval
from robolearn.lock import WriterLock
from robolearn.policies import DiffusionPolicy, DiffusionPolicyConfig, GaussianChunkPolicy, GaussianPolicyConfig
from robolearn.policies.checkpoint import (CheckpointError, CheckpointManager, load_policy, numpy_rng_state,
                                           optimizer_from_safetensors, optimizer_to_safetensors, restore_numpy_rng,
                                           save_policy)
from robolearn.policies.ema import EMA
from robolearn.rl.dppo import DPPOActor
from robolearn.rl.envs import make_chunk_vector_env
from robolearn.rl.ppo import RunningRewardScaler, ValueCritic, clip_schedule, compute_gae, ppo_policy_loss


def with_fine_tuning(policy: DiffusionPolicy, ft_denoising_steps: int | None) -> DiffusionPolicy:
    """A copy of `policy` whose last `ft_denoising_steps` steps run a trainable copy of the denoiser.

    None fine-tunes every step of the policy's sampler (`num_inference_steps`). The pretrained
    denoiser is frozen. Raises UserError if ft_denoising_steps is out of range.
    """
    steps = policy.config.num_inference_steps
    ft_denoising_steps = steps if ft_denoising_steps is None else int(ft_denoising_steps)
    if not 1 <= ft_denoising_steps <= steps:
        raise UserError(f"ft_denoising_steps must be in [1, {steps}] (the checkpoint samples with {steps} "
                        f"{policy.config.sampler} steps), got {ft_denoising_steps}")
    config = DiffusionPolicyConfig.from_dict({**policy.config.to_dict(), "ft_denoising_steps": ft_denoising_steps})
    tuned = DiffusionPolicy(config, policy.normalizer)
    tuned.model.load_state_dict(policy.model.state_dict())
    tuned.ft_model.load_state_dict(policy.model.state_dict())
    tuned.model.requires_grad_(False)
    return tuned


class DiffusionAgent:
    """DPPO's view of the policy: acting records chains; log-probs are per fine-tuned denoising step."""

    def __init__(self, policy: DiffusionPolicy, cfg: DictConfig):
        self.policy = policy
        self.actor = DPPOActor(policy, cfg.min_sampling_denoising_std, cfg.min_logprob_denoising_std,
                               cfg.randn_clip, cfg.eta)
        self.K = self.actor.K_ft
        ks = np.arange(self.K)
        self.clip = torch.tensor(clip_schedule(ks, self.K, cfg.clip_base, cfg.clip_final, cfg.clip_rate),
                                 dtype=torch.float32)
        self.adv_weight = torch.tensor(cfg.gamma_denoising ** (self.K - 1 - ks), dtype=torch.float32)
        self.bc_coef = float(cfg.bc_coef)
        self.params = list(policy.ft_model.parameters())

    def act(self, cond: torch.Tensor) -> tuple[np.ndarray, dict]:
        chain = self.actor.sample_chain(cond)
        record = {"chain": chain}
        if self.bc_coef > 0:
            record["base_chain"] = self.actor.sample_chain(cond, use_ft=False)
        return self.actor.chunk(chain).cpu().numpy(), record

    def log_probs(self, cond: torch.Tensor, record: dict, k: torch.Tensor, key: str = "chain") -> torch.Tensor:
        chain = record[key]
        return self.actor.log_prob(cond, chain[torch.arange(len(k)), k], chain[torch.arange(len(k)), k + 1], k)

    def all_log_probs(self, cond: torch.Tensor, record: dict) -> torch.Tensor:
        return self.actor.chain_log_probs(cond, record["chain"])

    def extra_loss(self, cond: torch.Tensor, record: dict, k: torch.Tensor) -> torch.Tensor:
        """BC regularizer: log-likelihood under the fine-tuned steps of chains from the frozen policy."""
        if self.bc_coef <= 0:
            return torch.zeros((), device=cond.device)
        return -self.bc_coef * self.log_probs(cond, record, k, key="base_chain").mean()


class GaussianAgent:
    """The Gaussian baseline: one 'denoising step' per decision (K = 1)."""

    def __init__(self, policy: GaussianChunkPolicy, cfg: DictConfig):
        self.policy, self.K = policy, 1
        self.clip = torch.tensor([cfg.clip], dtype=torch.float32)
        self.adv_weight = torch.ones(1)
        self.params = list(policy.parameters())

    def act(self, cond: torch.Tensor) -> tuple[np.ndarray, dict]:
        with torch.no_grad():
            sample = self.policy.distribution(cond).sample()
        return self.policy.normalizer.unnormalize("action", sample).cpu().numpy(), {"chunk": sample}

    def log_probs(self, cond: torch.Tensor, record: dict, k: torch.Tensor) -> torch.Tensor:
        return self.policy.log_prob(cond, record["chunk"])

    def all_log_probs(self, cond: torch.Tensor, record: dict) -> torch.Tensor:
        return self.policy.log_prob(cond, record["chunk"])[:, None]

    def extra_loss(self, cond, record, k) -> torch.Tensor:
        return torch.zeros((), device=cond.device)


def actor_lr_scheduler(actor_opt: torch.optim.Optimizer, iterations: int,
                       lr_min: float | None) -> torch.optim.lr_scheduler.CosineAnnealingLR | None:
    """Cosine annealing of the actor lr (Loshchilov & Hutter 2017, eq. 5) from its initial value at the
    first iteration to `lr_min` at the last, stepped once per iteration; None (lr_min None): constant lr."""
    if lr_min is None:
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(actor_opt, T_max=max(iterations - 1, 1), eta_min=lr_min)


def ppo_update(agent, critic: ValueCritic, actor_opt, critic_opt, cond_all: torch.Tensor, record_all: dict,
               adv: np.ndarray, returns: np.ndarray, pc, rng: np.random.Generator, actor_active: bool = True) -> dict:
    """PPO epochs over minibatches of (env step, denoising step) pairs (DPPO, Ren et al. 2024, Sec. 4.2).

    Args:
        agent: `DiffusionAgent` (K = ft_denoising_steps pairs per env step) or `GaussianAgent` (K = 1).
        cond_all: (M, cond_dim) normalized observation histories of the M env steps.
        record_all: what `agent.act` recorded, each (M, ...).
        adv, returns: (M,) GAE advantages and value targets.
        pc: ppo config (update_epochs, minibatch_size, norm_adv, vf_coef, max_grad_norm, target_kl).
        actor_active: False during critic warm-up (only the critic learns).

    Returns mean diagnostics: pg_loss, v_loss, approx_kl, clipfrac, and the number of updates.
    """
    device = cond_all.device
    with torch.no_grad():
        old_logp = agent.all_log_probs(cond_all, record_all)  # (M, K)
    adv_t = torch.as_tensor(adv, dtype=torch.float32, device=device)
    ret_t = torch.as_tensor(returns, dtype=torch.float32, device=device)
    clip, weight = agent.clip.to(device), agent.adv_weight.to(device)
    n_pairs = len(cond_all) * agent.K
    sums = {"pg_loss": 0.0, "v_loss": 0.0, "approx_kl": 0.0, "clipfrac": 0.0}
    n_updates = 0
    for _ in range(pc.update_epochs):
        for mb in torch.as_tensor(rng.permutation(n_pairs), device=device).split(pc.minibatch_size):
            step_idx, k = mb // agent.K, mb % agent.K
            cond_mb = cond_all[step_idx]
            v_loss = 0.5 * (critic(cond_mb) - ret_t[step_idx]).pow(2).mean()
            loss = pc.vf_coef * v_loss
            kl = 0.0
            if actor_active:
                rec_mb = {key: val[step_idx] for key, val in record_all.items()}
                a = adv_t[step_idx]
                if pc.norm_adv and len(a) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                logp = agent.log_probs(cond_mb, rec_mb, k)
                pg_loss, diag = ppo_policy_loss(logp, old_logp[step_idx, k], a * weight[k], clip[k])
                loss = loss + pg_loss + agent.extra_loss(cond_mb, rec_mb, k)
                kl = diag["approx_kl"]
                sums["pg_loss"] += pg_loss.item()
                sums["approx_kl"] += kl
                sums["clipfrac"] += diag["clipfrac"]
            actor_opt.zero_grad()
            critic_opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.params, pc.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(critic.parameters(), pc.max_grad_norm)
            if actor_active:
                actor_opt.step()
            critic_opt.step()
            sums["v_loss"] += v_loss.item()
            n_updates += 1
            if kl > pc.target_kl:  # early stop: the policy moved too far from the one that acted
                return {**{key: v / n_updates for key, v in sums.items()}, "updates": n_updates}
    return {**{key: v / max(n_updates, 1) for key, v in sums.items()}, "updates": n_updates}


def pretrain_gaussian(cfg: DictConfig, device: torch.device) -> GaussianChunkPolicy:
    """Behaviour cloning of a `GaussianChunkPolicy` on the task's demonstrations (MSE on the mean).

    The episodes are chosen by the same seeded split as `robolearn train` (val_ratio, seed,
    max_train_episodes), so the baseline sees the demonstrations the Diffusion Policy saw."""
    g, task = cfg.policy, cfg.task
    data = SequenceDataset(cfg.dataset, list(task.obs_keys), task.action_key, horizon=g.n_obs_steps - 1 + g.n_action_steps,
                           n_obs_steps=g.n_obs_steps, n_action_steps=g.n_action_steps, val_ratio=g.bc_val_ratio,
                           seed=cfg.seed, max_train_episodes=g.bc_max_episodes)
    config = GaussianPolicyConfig(obs_keys=list(task.obs_keys), obs_dims=list(data.obs_dims.values()),
                                  action_dim=data.action_dim, n_obs_steps=g.n_obs_steps, n_action_steps=g.n_action_steps,
                                  hidden=list(g.hidden), init_std=g.init_std, min_std=g.min_std, max_std=g.max_std)
    policy = GaussianChunkPolicy(config, data.fit_normalizer()).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=g.bc_lr, weight_decay=1e-6)
    rng = np.random.default_rng(cfg.seed)
    for _ in tqdm(range(g.bc_steps), desc="bc pretrain", unit="step", leave=False):
        batch = data.get_batch(rng.integers(0, len(data), g.bc_batch_size))
        loss = policy.bc_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy


#: types and ranges of the values `robolearn finetune` takes (configs/finetune.yaml, configs/policy/{dppo,gaussian}.yaml)
FINETUNE_RULES = {
    "seed": Int(), "threads": Int(min=1, optional=True), "checkpoint_every": Int(min=1),
    "ppo.iterations": Int(min=1), "ppo.n_envs": Int(min=1, max=4096), "ppo.n_steps": Int(min=1),
    "ppo.gamma": Float(min=0, max=1), "ppo.lam": Float(min=0, max=1), "ppo.reward_scaling": Bool(),
    "ppo.actor_lr": Float(min=0, min_open=True), "ppo.actor_lr_min": Float(min=0, optional=True),
    "ppo.critic_lr": Float(min=0, min_open=True), "ppo.critic_warmup_iters": Int(min=0),
    "ppo.update_epochs": Int(min=1), "ppo.minibatch_size": Int(min=1), "ppo.norm_adv": Bool(),
    "ppo.vf_coef": Float(min=0), "ppo.max_grad_norm": Float(min=0, min_open=True),
    "ppo.target_kl": Float(min=0, min_open=True, optional=True), "ema.power": Float(min=0, min_open=True),
    "ema.max_decay": Float(min=0, max=1), "eval.every": Int(min=1), "eval.n_episodes": Int(min=0),
    "eval.final_n_episodes": Int(min=0), "eval.n_video": Int(min=0), "eval.seed": Int(), "eval.selection_seed": Int(),
    "policy.ft_denoising_steps": Int(min=1, optional=True), "policy.min_sampling_denoising_std": Float(min=0),
    "policy.min_logprob_denoising_std": Float(min=0, min_open=True), "policy.randn_clip": Float(min=0, min_open=True),
    "policy.eta": Float(min=0, max=1), "policy.gamma_denoising": Float(min=0, max=1),
    "policy.clip_base": Float(min=0, min_open=True), "policy.clip_final": Float(min=0, min_open=True),
    "policy.clip_rate": Float(min=0), "policy.bc_coef": Float(min=0), "policy.n_obs_steps": Int(min=1),
    "policy.n_action_steps": Int(min=1), "policy.init_std": Float(min=0, min_open=True),
    "policy.min_std": Float(min=0, min_open=True), "policy.max_std": Float(min=0, min_open=True),
    "policy.clip": Float(min=0, min_open=True), "policy.minibatch_size": Int(min=1), "policy.bc_steps": Int(min=0),
    "policy.bc_lr": Float(min=0, min_open=True), "policy.bc_batch_size": Int(min=1),
    "policy.bc_max_episodes": Int(min=1, optional=True), "policy.bc_val_ratio": Float(min=0, max=0.9),
}


def finetune(cfg: DictConfig) -> dict:
    """Hydra task `robolearn finetune` (configs/finetune.yaml); the run folder is locked while it runs.

    Raises:
        UserError: a config value of the wrong type or range (`FINETUNE_RULES`), or see below.
        LockError: another process is writing the run folder.
    """
    check_config(cfg, FINETUNE_RULES)
    with WriterLock(Path(cfg.run_dir), "run folder"):
        return _finetune(cfg)


def _finetune(cfg: DictConfig) -> dict:
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    pc, ec = cfg.ppo, cfg.eval
    run_dir = Path(cfg.run_dir)
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    env_kwargs = OmegaConf.to_container(cfg.task.env_kwargs, resolve=True)

    if cfg.policy.name == "dppo":
        if cfg.checkpoint is None and checkpoints.latest is None:
            raise UserError("give the pretrained Diffusion Policy: robolearn finetune checkpoint=runs/.../checkpoints/best")
        source = checkpoints.latest or Path(cfg.checkpoint)
        try:  # resuming: the online weights (the average is restored below); else the pretrained EMA weights
            base = load_policy(source, use_ema=checkpoints.latest is None, device=device)
        except CheckpointError as exc:
            raise UserError(str(exc)) from exc
        if not isinstance(base, DiffusionPolicy):
            raise UserError(f"{source} holds a {type(base).__name__}, policy=dppo needs a DiffusionPolicy")
        policy = base if base.ft_model is not None else with_fine_tuning(base, cfg.policy.ft_denoising_steps)
        policy.model.requires_grad_(False)
        agent = DiffusionAgent(policy.to(device), cfg.policy)
    elif cfg.policy.name == "gaussian":
        policy = (load_policy(checkpoints.latest, use_ema=False, device=device) if checkpoints.latest
                  else pretrain_gaussian(cfg, device))
        agent = GaussianAgent(policy, cfg.policy)
        # one pair per decision: its own minibatch size keeps the number of updates per iteration DPPO's
        pc = OmegaConf.merge(pc, {"minibatch_size": cfg.policy.minibatch_size})
    else:
        raise UserError(f"robolearn finetune takes policy=dppo or policy=gaussian, got policy={cfg.policy.name}")

    To, Ta = policy.n_obs_steps, policy.n_action_steps
    cond_dim = To * sum(policy.config.obs_dims)
    critic = ValueCritic(cond_dim, tuple(pc.critic_hidden)).to(device)
    actor_opt = torch.optim.AdamW(agent.params, lr=pc.actor_lr, weight_decay=0.0)
    actor_sched = actor_lr_scheduler(actor_opt, pc.iterations, pc.actor_lr_min)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=pc.critic_lr, weight_decay=0.0)
    ema = EMA(policy, power=cfg.ema.power, max_decay=cfg.ema.max_decay)  # updated once per actor iteration
    envs = make_chunk_vector_env(cfg.task.env_id, env_kwargs, pc.n_envs, To, Ta, cfg.env_vectorization)
    scaler = RunningRewardScaler(pc.n_envs, pc.gamma)
    rng = np.random.default_rng(cfg.seed)
    start_iter, env_steps, best = 0, 0, -1.0
    if checkpoints.latest is not None:
        meta_tensors, meta = checkpoints.load_train_state(checkpoints.latest)
        critic.load_state_dict({k[len("critic."):]: v for k, v in meta_tensors.items() if k.startswith("critic.")})
        optimizer_from_safetensors(actor_opt, {k[6:]: v for k, v in meta_tensors.items() if k.startswith("actor.")},
                                   meta["actor_opt"])
        optimizer_from_safetensors(critic_opt, {k[7:]: v for k, v in meta_tensors.items() if k.startswith("critic_o.")},
                                   meta["critic_opt"])
        scaler.restore(meta["scaler"])
        if actor_sched is not None and meta.get("actor_sched"):
            actor_sched.load_state_dict(meta["actor_sched"])
        rng = restore_numpy_rng(meta["rng"])
        torch.set_rng_state(meta_tensors["torch_rng"])
        start_iter, env_steps, best = meta["iteration"], meta["env_steps"], meta["best_success"]
        if "ema_step" not in meta:
            raise UserError(f"{checkpoints.latest} was written before robolearn finetune averaged its weights "
                            "(no ema_step in its train state): fine-tune into a new run_dir")
        ema.averaged.load_state_dict(load_policy(checkpoints.latest, use_ema=True, device=device).state_dict())
        ema.step = meta["ema_step"]
        print(f"resumed from {checkpoints.latest.resolve()} at iteration {start_iter}")

    writer = SummaryWriter(str(run_dir / "tb"))
    obs, _ = envs.reset(seed=[int(cfg.seed) * 10000 + i for i in range(pc.n_envs)])
    selection_seeds = range(ec.selection_seed, ec.selection_seed + ec.n_episodes)
    history = json.loads((run_dir / "curve.json").read_text()) if (run_dir / "curve.json").exists() else []
    if start_iter == 0 and ec.n_episodes:
        results = evaluate_policy(policy, cfg.task.env_id, selection_seeds, env_kwargs, progress=False)
        history = [{"iteration": 0, "env_steps": 0, "wall_s": 0.0, "success_rate": results["success_rate"]}]
        tqdm.write(f"iteration 0 (pretrained): {format_results(results)}")
        writer.add_scalar("eval/success_rate", results["success_rate"], 0)
    wall0 = time.perf_counter() - (history[-1]["wall_s"] if history else 0.0)

    def save(iteration: int, is_best: bool) -> None:
        a_t, a_meta = optimizer_to_safetensors(actor_opt)
        c_t, c_meta = optimizer_to_safetensors(critic_opt)
        tensors = {**{f"actor.{k}": v for k, v in a_t.items()}, **{f"critic_o.{k}": v for k, v in c_t.items()},
                   **{f"critic.{k}": v for k, v in critic.state_dict().items()}, "torch_rng": torch.get_rng_state()}
        meta = {"iteration": iteration, "env_steps": env_steps, "best_success": best, "actor_opt": a_meta,
                "ema_step": ema.step,
                "actor_sched": actor_sched.state_dict() if actor_sched is not None else None,
                "critic_opt": c_meta, "scaler": scaler.state(), "rng": numpy_rng_state(rng)}
        extra = {"finetune": OmegaConf.to_container(cfg, resolve=True)}
        checkpoints.save(iteration, lambda folder: save_policy(folder, policy, ema.averaged, extra), tensors, meta,
                         is_best=is_best)
        (run_dir / "curve.json").write_text(json.dumps(history, indent=1))

    bar = tqdm(range(start_iter, pc.iterations), initial=start_iter, total=pc.iterations, desc=f"finetune {cfg.policy.name}",
               unit="itr")
    for iteration in bar:
        # -- rollout ---------------------------------------------------------------------
        T, N = pc.n_steps, pc.n_envs
        conds, records, rewards, dones, values = [], [], np.zeros((T, N)), np.zeros((T, N)), np.zeros((T, N))
        successes, finished = 0, 0
        for t in range(T):
            with torch.no_grad():
                cond = policy.encode_obs({k: torch.from_numpy(obs[k]) for k in policy.obs_keys})
                values[t] = critic(cond).cpu().numpy()
            chunk, record = agent.act(cond)
            obs, reward, terminated, truncated, info = envs.step(chunk)
            done = terminated | truncated
            # envs that ended were reset in the same step: their last step's info is in final_info
            steps = np.where(info.get("_env_steps", np.zeros(N, bool)), info.get("env_steps", 0), 0)
            if done.any():
                final_info = info["final_info"]
                steps = np.where(done, final_info["env_steps"], steps)
                finished += int(done.sum())
                successes += int(np.sum(final_info["is_success"] & done))
            env_steps += int(steps.sum())
            reward = scaler(reward, done) if pc.reward_scaling else reward.astype(np.float64)
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):  # a time limit is not a terminal state: bootstrap with V(final observation)
                fo = {k: torch.from_numpy(np.stack([info["final_obs"][i][k] for i in cut])) for k in policy.obs_keys}
                with torch.no_grad():
                    reward[cut] += pc.gamma * critic(policy.encode_obs(fo)).cpu().numpy()
            rewards[t] = reward
            dones[t] = done
            conds.append(cond)
            records.append(record)
        with torch.no_grad():
            last_values = critic(policy.encode_obs({k: torch.from_numpy(obs[k]) for k in policy.obs_keys})).cpu().numpy()
        adv, returns = compute_gae(rewards, values, dones, last_values, pc.gamma, pc.lam)
        explained_var = 1.0 - float(np.var(returns - values)) / max(float(np.var(returns)), 1e-8)

        # -- update ----------------------------------------------------------------------
        actor_active = iteration >= pc.critic_warmup_iters
        stats = ppo_update(agent, critic, actor_opt, critic_opt, torch.cat(conds),
                           {k: torch.cat([r[k] for r in records]) for k in records[0]}, adv.reshape(-1),
                           returns.reshape(-1), pc, rng, actor_active=actor_active)
        if actor_active:
            ema.update(policy)

        # -- logging, evaluation, checkpoints -------------------------------------------------
        it = iteration + 1
        for key, value in stats.items():
            writer.add_scalar(f"train/{key}", value, it)
        writer.add_scalar("train/env_steps", env_steps, it)
        writer.add_scalar("train/actor_lr", actor_opt.param_groups[0]["lr"], it)  # the lr this iteration used
        if actor_sched is not None:
            actor_sched.step()
        writer.add_scalar("train/explained_variance", explained_var, it)  # of the critic, before the update
        if finished:
            writer.add_scalar("train/rollout_success_rate", successes / finished, it)
        bar.set_postfix(env_steps=env_steps, rollout_success=f"{successes / max(finished, 1):.0%}")
        is_best = False
        if ec.n_episodes and (it % ec.every == 0 or it == pc.iterations):
            results, is_best, best = selection_eval(ema.averaged, cfg.task.env_id, selection_seeds, env_kwargs, writer, it,
                                                    best, f"iteration {it} ({env_steps} env steps)")
            history.append({"iteration": it, "env_steps": env_steps, "wall_s": time.perf_counter() - wall0,
                            "success_rate": results["success_rate"]})
            writer.add_scalar("eval/success_rate_vs_env_steps", results["success_rate"], env_steps)
        if it % cfg.checkpoint_every == 0 or it == pc.iterations or is_best:
            save(it, is_best)
    bar.close()
    envs.close()

    # the result is the last checkpoint: the running mean of every iteration's weights (`ema`); the best one
    # on the few selection seeds is tested as well (on Lift it did worse: the winner's curse, README)
    final = checkpoints.latest
    results = {"checkpoint": str(final.resolve()), "env_steps": env_steps, "curve": history}
    if not ec.final_n_episodes:  # no test evaluation asked for
        (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
        writer.close()
        print(f"\ncheckpoint: {final}  (no test evaluation: eval.final_n_episodes=0)\n"
              f"logs:       tensorboard --logdir {run_dir / 'tb'}")
        return results
    test_seeds = range(ec.seed, ec.seed + ec.final_n_episodes)
    results = {**evaluate_policy(load_policy(final, device=device), cfg.task.env_id, test_seeds, env_kwargs,
                                 video_path=str(run_dir / "eval.mp4"), n_video=ec.n_video), **results}
    if checkpoints.best is not None and checkpoints.best.resolve() != final.resolve():
        best_res = evaluate_policy(load_policy(checkpoints.best, device=device), cfg.task.env_id, test_seeds, env_kwargs)
        results["best"] = {key: best_res[key] for key in ("success_rate", "ci95", "n_episodes", "mean_length")}
        results["best"]["checkpoint"] = str(checkpoints.best.resolve())
        tqdm.write(f"best checkpoint on the selection seeds, {checkpoints.best.resolve().name}: "
                   f"{format_results(best_res)}")
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    writer.close()
    print(f"\n{format_results(results)}")
    print(f"checkpoint: {final}\nvideo:      {results['video']}\nlogs:       tensorboard --logdir {run_dir / 'tb'}")
    return results
