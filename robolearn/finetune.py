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
from robolearn.distributed import Distributed, distributed_run
from robolearn.errors import CheckpointError, UserError
from robolearn.outputs import check_apart, check_writable
from robolearn.policies.checkpoint import CheckpointManager, load_policy, save_policy
from robolearn.policies.config import config_from_target
from robolearn.policies.ema import EMA
from robolearn.policies.features import check_features
from robolearn.policies.train_state import TrainState
from robolearn.rl.envs import make_chunk_vector_env
from robolearn.rl.ppo import (
    RunningRewardScaler,
    ValueCritic,
    actor_lr_scheduler,
    compute_gae,
    ppo_update,
)
from robolearn.sim.evaluation import evaluate_split, format_results, selection_eval
from robolearn.tasks import load_task

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
    check_apart({"run_dir": cfg.run_dir}, {"checkpoint": cfg.checkpoint, "dataset": cfg.dataset})
    check_writable(cfg.run_dir, "run_dir")
    with distributed_run(cfg.device, cfg.run_dir) as (dist, device):  # torchrun: one process per rank
        return _finetune(cfg, dist, device)


def _finetune(cfg: DictConfig, dist: Distributed, device: torch.device) -> dict:
    """One rank's fine-tuning (every process of a torchrun launch runs this): its own `ppo.n_envs` envs and
    rollouts, the same minibatch order, gradients averaged over ranks (`ppo_update`); rank 0 logs and saves."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    pc, ec = cfg.ppo, cfg.eval
    task = load_task(cfg.task, cfg.world)
    run_dir = Path(cfg.run_dir)
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    env_kwargs = task.env_kwargs
    try:  # the agent's config class is the yaml's `_target_` (configs/policy/dppo.yaml, gaussian.yaml)
        agent_cfg = config_from_target(OmegaConf.to_container(cfg.policy, resolve=True))
    except ValueError as exc:
        raise UserError(f"policy={cfg.policy.get('name')}: {exc}") from None
    if not hasattr(agent_cfg, "make_agent"):
        raise UserError(f"policy={cfg.policy.get('name')} ({type(agent_cfg).__name__}) is not fine-tuned by "
                        "robolearn finetune (policy=dppo or policy=gaussian); robolearn train trains it")
    if task.env_id is None:
        raise UserError(f"task {task.name} has no simulator to fine-tune in (RL needs one); pass the simulated task "
                        "the policy is for, e.g. task=lift")
    start = checkpoints.resume_point(str(cfg.resume_from))  # read back first: a damaged one is named
    resuming = start is not None
    source = start or (Path(cfg.checkpoint) if cfg.checkpoint is not None else None)
    # resuming: the online weights (the average is restored below); else the pretrained policy
    policy, agent = agent_cfg.make_agent(source, resuming, task, cfg.dataset, int(cfg.seed), device)
    try:  # before any rollout: a policy trained on other observations (an imported dataset's) is refused here
        check_features(policy.obs_features, task.env_shapes()[0], f"task={task.name} (env {task.env_id})")
    except ValueError as exc:
        raise UserError(f"{source} does not fit {exc}; fine-tune a policy trained on this task's observations "
                        "(or pass the task it was trained on: task=...)") from None
    pc = OmegaConf.merge(pc, agent_cfg.ppo_overrides())

    To, Ta = policy.n_obs_steps, policy.n_action_steps
    critic = ValueCritic(policy.obs_encoder.out_dim, tuple(pc.critic_hidden)).to(device)
    actor_opt = torch.optim.AdamW(agent.params, lr=pc.actor_lr, weight_decay=0.0)
    actor_sched = actor_lr_scheduler(actor_opt, pc.iterations, pc.actor_lr_min)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=pc.critic_lr, weight_decay=0.0)
    ema = EMA(policy, power=cfg.ema.power, max_decay=cfg.ema.max_decay)  # updated once per actor iteration
    envs = make_chunk_vector_env(task.env_id, env_kwargs, pc.n_envs, To, Ta, cfg.env_vectorization, cfg.env_workers)
    scaler = RunningRewardScaler(pc.n_envs, pc.gamma)
    state = TrainState(optimizers={"actor": actor_opt, "critic": critic_opt}, schedulers={"actor_lr": actor_sched},
                       modules={"critic": critic}, rngs={"minibatches": np.random.default_rng(cfg.seed)})
    start_iter, env_steps, best = 0, 0, -1.0
    if resuming:
        try:
            counters = state.restore(*checkpoints.load_train_state(start))
        except CheckpointError as exc:
            raise UserError(f"cannot resume {start}: {exc}") from None
        scaler.restore(counters["scaler"])
        start_iter, env_steps, best = counters["iteration"], counters["env_steps"], counters["best"]
        ema.averaged.load_state_dict(load_policy(start, use_ema=True, device=device).state_dict())
        ema.step = counters["ema_step"]
        if dist.is_main:
            print(f"resumed from {start.resolve()} at iteration {start_iter}")
    dist.broadcast_parameters([*agent.params, *critic.parameters()])  # one starting point on every rank
    if dist.enabled:
        torch.manual_seed(int(cfg.seed) + 7919 * dist.rank)  # each rank explores with its own sampling noise

    writer = SummaryWriter(str(run_dir / "tb")) if dist.is_main else None
    # each rank's envs start from their own seeds
    obs, _ = envs.reset(seed=[int(cfg.seed) * 10000 + dist.rank * pc.n_envs + i for i in range(pc.n_envs)])
    selection_seeds = range(ec.selection_seed, ec.selection_seed + ec.n_episodes)
    history = json.loads((run_dir / "curve.json").read_text()) if (run_dir / "curve.json").exists() else []
    if start_iter == 0 and ec.n_episodes:
        results = evaluate_split(dist, policy, task.env_id, selection_seeds, env_kwargs, progress=False)
        history = [{"iteration": 0, "env_steps": 0, "wall_s": 0.0, "success_rate": results["success_rate"],
                    "mean_score": results["mean_score"]}]
        if writer is not None:
            tqdm.write(f"iteration 0 (pretrained): {format_results(results)}")
            writer.add_scalar("eval/success_rate", results["success_rate"], 0)
    wall0 = time.perf_counter() - (history[-1]["wall_s"] if history else 0.0)

    def save(iteration: int, is_best: bool) -> None:
        if not dist.is_main:
            return
        tensors, meta = state.pack(iteration=iteration, env_steps=env_steps, best=best, ema_step=ema.step,
                                   scaler=scaler.state())
        extra = {"finetune": OmegaConf.to_container(cfg, resolve=True)}
        checkpoints.save(iteration, lambda folder: save_policy(folder, policy, ema.averaged, extra), tensors, meta,
                         is_best=is_best)
        (run_dir / "curve.json").write_text(json.dumps(history, indent=1))

    step_count_before = env_steps  # env_steps summed over ranks up to the last iteration
    bar = tqdm(range(start_iter, pc.iterations), initial=start_iter, total=pc.iterations, desc=f"finetune {cfg.policy.name}",
               unit="itr", disable=not dist.is_main)
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
                           returns.reshape(-1), pc, state.rngs["minibatches"], actor_active=actor_active,
                           dist=dist if dist.enabled else None)
        if actor_active:
            ema.update(policy)

        # -- logging, evaluation, checkpoints -------------------------------------------------
        it = iteration + 1
        lr_used = actor_opt.param_groups[0]["lr"]  # the lr this iteration used
        if actor_sched is not None:
            actor_sched.step()
        if dist.enabled:  # every rank's env steps count; the rollout success rate over every rank's episodes
            env_steps = int(dist.total(env_steps - step_count_before)) + step_count_before
            successes, finished = int(dist.total(successes)), int(dist.total(finished))
        step_count_before = env_steps
        if writer is not None:
            for key, value in stats.items():
                writer.add_scalar(f"train/{key}", value, it)
            writer.add_scalar("train/env_steps", env_steps, it)
            writer.add_scalar("train/actor_lr", lr_used, it)
            writer.add_scalar("train/explained_variance", explained_var, it)  # of the critic, before the update
            if finished:
                writer.add_scalar("train/rollout_success_rate", successes / finished, it)
            bar.set_postfix(env_steps=env_steps, rollout_success=f"{successes / max(finished, 1):.0%}")
        is_best = False
        if ec.n_episodes and (it % ec.every == 0 or it == pc.iterations):
            results, is_best, best = selection_eval(ema.averaged, task.env_id, selection_seeds, env_kwargs, writer, it,
                                                    best, f"iteration {it} ({env_steps} env steps)", metric=task.metric,
                                                    evaluate=lambda *a, **k: evaluate_split(dist, *a, **k))
            history.append({"iteration": it, "env_steps": env_steps, "wall_s": time.perf_counter() - wall0,
                            "success_rate": results["success_rate"], "mean_score": results["mean_score"]})
            if writer is not None:
                writer.add_scalar("eval/success_rate_vs_env_steps", results["success_rate"], env_steps)
        if it % cfg.checkpoint_every == 0 or it == pc.iterations or is_best:
            save(it, is_best)
    bar.close()
    envs.close()
    dist.barrier()  # rank 0's last checkpoint is written before any rank reads it

    # the result is the last checkpoint: the running mean of every iteration's weights (`ema`); the best one
    # on the few selection seeds is tested as well (on Lift it did worse: the winner's curse, README)
    final = checkpoints.latest
    results = {"checkpoint": str(final.resolve()), "world": task.world, "world_config": task.world_config,
               "env_steps": env_steps, "curve": history}
    test_seeds = range(ec.seed, ec.seed + ec.final_n_episodes)
    if not dist.is_main:  # join the test evaluations, which rank 0 reports
        if ec.final_n_episodes:
            evaluate_split(dist, load_policy(final, device=device), task.env_id, test_seeds, env_kwargs)
            if checkpoints.best is not None and checkpoints.best.resolve() != final.resolve():
                evaluate_split(dist, load_policy(checkpoints.best, device=device), task.env_id, test_seeds, env_kwargs)
        return results
    if not ec.final_n_episodes:  # no test evaluation asked for
        (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
        writer.close()
        print(f"\ncheckpoint: {final}  (no test evaluation: eval.final_n_episodes=0)\n"
              f"logs:       tensorboard --logdir {run_dir / 'tb'}")
        return results
    results = {**evaluate_split(dist, load_policy(final, device=device), task.env_id, test_seeds, env_kwargs,
                                video_path=str(run_dir / "eval.mp4"), n_video=ec.n_video), **results}
    if checkpoints.best is not None and checkpoints.best.resolve() != final.resolve():
        best_res = evaluate_split(dist, load_policy(checkpoints.best, device=device), task.env_id, test_seeds,
                                  env_kwargs)
        results["best"] = {key: best_res[key] for key in ("success_rate", "ci95", "mean_score", "n_episodes",
                                                           "mean_length")}
        results["best"]["checkpoint"] = str(checkpoints.best.resolve())
        tqdm.write(f"best checkpoint on the selection seeds, {checkpoints.best.resolve().name}: "
                   f"{format_results(best_res)}")
    (run_dir / "eval_results.json").write_text(json.dumps(results, indent=1))
    writer.close()
    print(f"\n{format_results(results)}")
    print(f"checkpoint: {final}\nvideo:      {results['video']}\nlogs:       tensorboard --logdir {run_dir / 'tb'}")
    return results
