"""PPO pieces shared by DPPO and the Gaussian-policy baseline."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from robolearn.policies.mish import Mish


def compute_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray,
                gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) over decisions.

    Args:
        rewards, values, dones: (T, N) per decision and env; dones[t] ends the episode after
            decision t (no bootstrap across it; add gamma*V(final_obs) to the reward of a
            truncated decision beforehand to bootstrap a time limit).
        last_values: (N,) V of the observation after the last decision.

    Returns:
        (advantages, returns), each (T, N); returns = advantages + values.
    """
    T = len(rewards)
    adv = np.zeros_like(rewards, dtype=np.float64)
    last = np.zeros(rewards.shape[1])
    for t in reversed(range(T)):
        next_value = last_values if t == T - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        adv[t] = last
    return adv, adv + values


class RunningRewardScaler:
    """Divide rewards by the running std of the discounted return (as in DPPO / OpenAI baselines).

    Keeps one discounted return per env, resets it at episode ends, and tracks the variance of
    all returns seen with Welford/Chan updates.
    """

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.ret = np.zeros(n_envs)
        self.count, self.mean, self.var = eps, 0.0, 1.0

    def _update(self, x: np.ndarray) -> None:
        b_mean, b_var, b_count = float(x.mean()), float(x.var()), x.size
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean += delta * b_count / total
        self.var = (self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total) / total
        self.count = total

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Scale one decision's rewards (N,) and advance the running returns."""
        self.ret = self.ret * self.gamma + rewards
        self._update(self.ret)
        self.ret[dones.astype(bool)] = 0.0
        return np.clip(rewards / math.sqrt(self.var + self.eps), -self.clip, self.clip)

    def state(self) -> dict:
        return {"ret": self.ret.tolist(), "count": self.count, "mean": self.mean, "var": self.var}

    def restore(self, state: dict) -> None:
        self.ret = np.asarray(state["ret"])
        self.count, self.mean, self.var = state["count"], state["mean"], state["var"]


def clip_schedule(k: int | np.ndarray, n: int, base: float, final: float, rate: float) -> np.ndarray:
    """PPO clip coefficient for fine-tuned denoising step k in [0, n-1] (DPPO, Ren et al. 2024, App. C):

        eps_k = base + (final - base) * (exp(rate * k / (n - 1)) - 1) / (exp(rate) - 1)

    k = 0 is the noisiest fine-tuned step (eps = base), k = n - 1 the last one (eps = final).
    """
    k = np.asarray(k, dtype=np.float64)
    if n <= 1:
        return np.full_like(k, final)
    return base + (final - base) * (np.exp(rate * k / (n - 1)) - 1.0) / (math.exp(rate) - 1.0)


def ppo_policy_loss(logprob: torch.Tensor, old_logprob: torch.Tensor, advantage: torch.Tensor,
                    clip: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), averaged; also returns diagnostics.

    All inputs are (B,); `clip` may differ per sample (DPPO's per-denoising-step schedule).
    """
    logratio = logprob - old_logprob
    ratio = logratio.exp()
    loss = torch.max(-advantage * ratio, -advantage * ratio.clamp(1 - clip, 1 + clip)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()  # k3 estimator (Schulman 2020)
        clipfrac = ((ratio - 1).abs() > clip).float().mean()
        mean_ratio = ratio.mean()
    return loss, {"approx_kl": float(approx_kl), "clipfrac": float(clipfrac), "ratio": float(mean_ratio)}


class ValueCritic(nn.Module):
    """State-value critic V(obs history): an MLP with Mish activations on the flattened
    normalized observation history (the `CriticObs` design of DPPO). (B, cond_dim) -> (B,)."""

    def __init__(self, cond_dim: int, hidden: tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        layers, d = [], cond_dim
        for h in hidden:
            layers += [nn.Linear(d, h), Mish()]
            d = h
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond).squeeze(-1)


def value_loss(critic: ValueCritic, cond_all: torch.Tensor, returns: torch.Tensor,
               step_idx: torch.Tensor) -> torch.Tensor:
    """0.5 * mean over a minibatch's (env step, denoising step) pairs of (V(obs) - return)^2, for the env steps
    `step_idx` (B,) of the pairs, indexing cond_all (M, cond_dim) and returns (M,).

    Evaluated once per distinct env step, weighted by how many pairs share it (a DPPO minibatch of 8,000 pairs
    out of 32,000 holds each of 1,600 env steps ~5 times): the same loss and gradient as evaluating V per pair,
    at ~1/4 of the critic's work per minibatch.
    """
    states, counts = torch.unique(step_idx, return_counts=True)
    return 0.5 * (counts * (critic(cond_all[states]) - returns[states]).pow(2)).sum() / len(step_idx)


def actor_lr_scheduler(actor_opt: torch.optim.Optimizer, iterations: int,
                       lr_min: float | None) -> torch.optim.lr_scheduler.CosineAnnealingLR | None:
    """Cosine annealing of the actor lr (Loshchilov & Hutter 2017, eq. 5) from its initial value at the
    first iteration to `lr_min` at the last, stepped once per iteration; None (lr_min None): constant lr."""
    if lr_min is None:
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(actor_opt, T_max=max(iterations - 1, 1), eta_min=lr_min)


def ppo_update(agent, critic: ValueCritic, actor_opt, critic_opt, cond_all: torch.Tensor, record_all: dict,
               adv: np.ndarray, returns: np.ndarray, pc, rng: np.random.Generator, actor_active: bool = True,
               dist=None) -> dict:
    """PPO epochs over minibatches of (env step, denoising step) pairs (DPPO, Ren et al. 2024, Sec. 4.2).

    Args:
        agent: `DiffusionAgent` (K = ft_denoising_steps pairs per env step) or `GaussianAgent` (K = 1).
        cond_all: (M, cond_dim) normalized observation histories of the M env steps.
        record_all: what `agent.act` recorded, each (M, ...).
        adv, returns: (M,) GAE advantages and value targets.
        pc: ppo config (update_epochs, minibatch_size, norm_adv, vf_coef, max_grad_norm, target_kl).
        actor_active: False during critic warm-up (only the critic learns).
        dist: a `robolearn.distributed.Distributed` whose ranks update together (None: one process): every rank
            holds its own rollouts and the same minibatch order; gradients are averaged over ranks before
            clipping and the KL early stop uses the mean over ranks, so every rank takes the same steps.

    Returns mean diagnostics: pg_loss, v_loss, approx_kl, clipfrac, and the number of updates.
    """
    device = cond_all.device
    with torch.no_grad():
        old_logp = agent.old_log_probs(cond_all, record_all)  # (M, K), under the weights that acted
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
            v_loss = value_loss(critic, cond_all, ret_t, step_idx)
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
            if dist is not None:
                dist.average_gradients([*agent.params, *critic.parameters()])
                kl = dist.mean(kl)
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
