"""DPPO: Diffusion Policy Policy Optimization (Ren et al. 2024, arXiv 2409.00588).

Each denoising step x_t -> x_{t-1} of a Diffusion Policy is a Gaussian action of an inner MDP
(Sec. 4.1, eq. 4.1): x_{t-1} ~ N(mu_theta(x_t, t, obs), sigma_t^2 I). With the chain recorded
while acting, PPO (Sec. 4.2) maximizes the clipped surrogate over (env step, denoising step)
pairs; every fine-tuned denoising step of an env step shares that step's GAE advantage,
discounted by gamma_denoising^(K_ft - 1 - k). Only the last `ft_denoising_steps` steps are
trained, on a copy of the denoiser (`DiffusionPolicy.ft_model`); the earlier steps run the
frozen pretrained network.

Numerics follow the reference implementation: the x0 estimate is clamped to the normalized
action range [-1, 1]; the sampling std is floored at `min_sampling_denoising_std` (exploration
noise, also at the last step); the likelihood std is floored at `min_logprob_denoising_std`;
standard-normal draws are clipped to +-`randn_clip`; log-probs are averaged over the executed
rows of the chunk and the action dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from robolearn.policies.diffusion import DiffusionPolicy


@dataclass
class DenoisingSchedule:
    """Per-denoising-step coefficients of the policy's sampler, as tensors of shape (K,).

    For DDPM (posterior q(x_{t-1} | x_t, x0), Ho et al. 2020, eq. 7):
        mean = c_x0 * x0 + c_xt * x_t, std = sqrt(beta_tilde).
    For DDIM (Song et al. 2021, eq. 12) with eta:
        sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev),
        mean = sqrt(a_prev) * x0 + sqrt(1 - a_prev - sigma^2) * eps(x0).
    """

    timesteps: torch.Tensor
    alpha_t: torch.Tensor  # cumulative alpha at t
    alpha_prev: torch.Tensor  # cumulative alpha at the next (less noisy) step; 1 after the last
    ddim: bool

    @classmethod
    def from_policy(cls, policy: DiffusionPolicy) -> DenoisingSchedule:
        sched = policy.sample_scheduler
        ac = sched.alphas_cumprod.double()
        ts = sched.timesteps.long()
        ddim = isinstance(sched, DDIMScheduler)
        if ddim:
            final = sched.final_alpha_cumprod.double()
        else:
            final = torch.tensor(1.0, dtype=torch.float64)
        prev = torch.cat([ac[ts[1:]], final.reshape(1)])
        return cls(ts, ac[ts], prev, ddim)

    def __len__(self) -> int:
        return len(self.timesteps)

    def mean_std(self, eps: torch.Tensor, x: torch.Tensor, index: torch.Tensor, eta: float = 1.0,
                 clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, H, Da) and std (B, 1, 1) of p(x_{t-1} | x_t) at step `index` (B,) long.

        `eta` matters for DDIM only (1: as stochastic as DDPM; 0: deterministic).
        """
        a_t = self.alpha_t.to(x.device)[index].view(-1, 1, 1)
        a_prev = self.alpha_prev.to(x.device)[index].view(-1, 1, 1)
        x0 = ((x.double() - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()).clamp(-clip, clip)
        if self.ddim:
            eps_hat = (x.double() - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
            mean = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps_hat
            std = sigma
        else:
            beta = 1 - a_t / a_prev
            mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x
            std = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=0).sqrt()
        return mean.to(x.dtype), std.to(x.dtype)


def gaussian_logprob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, std^2)."""
    var = std**2
    return -((x - mean) ** 2) / (2 * var) - std.log() - 0.5 * torch.log(torch.tensor(2 * torch.pi, device=x.device))


class DPPOActor:
    """Samples recorded denoising chains and scores them, for a `DiffusionPolicy` with `ft_model`.

    Args:
        policy: a DiffusionPolicy whose config has ft_denoising_steps = K_ft > 0; its
            `sample_scheduler` (DDPM or DDIM, `num_inference_steps` = K) defines the chain.
        min_sampling_std, min_logprob_std: std floors for acting and for likelihoods.
        randn_clip: standard-normal draws are clipped to +-randn_clip.
        eta: DDIM eta for training rollouts (1.0); deterministic sampling uses 0.
    """

    def __init__(self, policy: DiffusionPolicy, min_sampling_std: float = 0.1, min_logprob_std: float = 0.1,
                 randn_clip: float = 3.0, eta: float = 1.0):
        if policy.ft_model is None:
            raise ValueError("DPPO needs a policy with ft_denoising_steps > 0")
        self.policy = policy
        self.schedule = DenoisingSchedule.from_policy(policy)
        self.K = len(self.schedule)
        self.K_ft = policy.config.ft_denoising_steps
        if not 1 <= self.K_ft <= self.K:
            raise ValueError(f"ft_denoising_steps={self.K_ft} must be in [1, num_inference_steps={self.K}]")
        self.min_sampling_std, self.min_logprob_std = min_sampling_std, min_logprob_std
        self.randn_clip, self.eta = randn_clip, eta
        start = policy.n_obs_steps - 1
        self.rows = slice(start, start + policy.n_action_steps)  # executed rows of the chunk

    @torch.no_grad()
    def sample_chain(self, cond: torch.Tensor, deterministic: bool = False,
                     generator: torch.Generator | None = None, use_ft: bool = True) -> torch.Tensor:
        """Denoise from noise, recording the fine-tuned part of the chain.

        Args:
            cond: (B, cond_dim) normalized flattened observation history (`policy.encode_obs`).
            deterministic: std 0 (DDIM eta 0; DDPM mean only) instead of the floored std.
            use_ft: False runs the frozen pretrained network at every step (the BC target).

        Returns:
            chain (B, K_ft + 1, horizon, Da) in normalized action units: chain[:, 0] is the
            input of the first fine-tuned step, chain[:, -1] the final denoised sequence.
        """
        p = self.policy
        B = cond.shape[0]
        x = torch.randn((B, p.horizon, p.action_dim), device=cond.device, generator=generator)
        chain = []
        for i in range(self.K):
            if i >= self.K - self.K_ft:
                chain.append(x)
            net = p.denoiser(i, self.K) if use_ft else p.model
            index = torch.full((B,), i, device=cond.device, dtype=torch.long)
            eps = net(x, self.schedule.timesteps[i].to(cond.device), cond)
            mean, std = self.schedule.mean_std(eps, x, index, eta=0.0 if deterministic else self.eta)
            if deterministic:
                x = mean
            else:
                z = torch.randn(x.shape, device=x.device, generator=generator).clamp(-self.randn_clip, self.randn_clip)
                x = mean + std.clamp(min=self.min_sampling_std) * z
        chain.append(x)
        return torch.stack(chain, dim=1)

    def log_prob(self, cond: torch.Tensor, x_t: torch.Tensor, x_prev: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """log p_theta(x_prev | x_t, obs) of fine-tuned step k (B,) in [0, K_ft), under `ft_model`.

        Averaged over the executed rows and the action dimensions -> (B,).
        """
        index = self.K - self.K_ft + k
        t = self.schedule.timesteps.to(cond.device)[index]
        eps = self.policy.ft_model(x_t, t, cond)
        mean, std = self.schedule.mean_std(eps, x_t, index, eta=self.eta)
        logp = gaussian_logprob(x_prev, mean, std.clamp(min=self.min_logprob_std))
        return logp[:, self.rows].mean(dim=(1, 2))

    def chain_log_probs(self, cond: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """log-probs of every fine-tuned step of recorded chains: (B, K_ft)."""
        B = cond.shape[0]
        ks = torch.arange(self.K_ft, device=cond.device)
        flat_k = ks.repeat(B)
        flat_cond = cond.repeat_interleave(self.K_ft, dim=0)
        x_t = chain[:, :-1].reshape(B * self.K_ft, *chain.shape[2:])
        x_prev = chain[:, 1:].reshape(B * self.K_ft, *chain.shape[2:])
        return self.log_prob(flat_cond, x_t, x_prev, flat_k).view(B, self.K_ft)

    def chunk(self, chain: torch.Tensor) -> torch.Tensor:
        """Executed action chunk (B, n_action_steps, Da) in raw units from recorded chains."""
        action = self.policy.normalizer.unnormalize("action", chain[:, -1])
        return action[:, self.rows]
