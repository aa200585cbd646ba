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

import torch

from robolearn.policies.diffusion import DiffusionPolicy
from robolearn.policies.schedule import DenoisingSchedule


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
        compile: run the rollouts' denoiser (`DiffusionPolicy.fast_denoiser`) and each step's arithmetic
            (`_transition`) through torch.compile, compiled on the first chain per network and batch size; the
            compiled denoiser reads the weights live, so PPO's updates do not compile it again. False: the fast
            path uncompiled.
    """

    def __init__(self, policy: DiffusionPolicy, min_sampling_std: float = 0.1, min_logprob_std: float = 0.1,
                 randn_clip: float = 3.0, eta: float = 1.0, compile: bool = False):
        if policy.ft_model is None:
            raise ValueError("DPPO needs a policy with ft_denoising_steps > 0")
        self.policy = policy
        self.schedule = DenoisingSchedule.from_scheduler(policy.sample_scheduler)
        self.K = len(self.schedule)
        self.K_ft = policy.config.ft_denoising_steps
        if not 1 <= self.K_ft <= self.K:
            raise ValueError(f"ft_denoising_steps={self.K_ft} must be in [1, num_inference_steps={self.K}]")
        self.min_sampling_std, self.min_logprob_std = min_sampling_std, min_logprob_std
        self.randn_clip, self.eta, self.compile = randn_clip, eta, compile
        self._compiled = None
        start = policy.n_obs_steps - 1
        self.rows = slice(start, start + policy.n_action_steps)  # executed rows of the chunk

    @torch.no_grad()
    def sample_chain(self, cond: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None,
                     use_ft: bool = True, return_log_probs: bool = False):
        """Denoise from noise, recording the fine-tuned part of the chain.

        Runs the policy's fast denoising path (`DiffusionPolicy.fast_denoiser`: FiLM once per decision), compiled
        if `compile`, unless the policy's `inference` is "eager".

        Args:
            cond: (B, cond_dim) normalized flattened observation history (`policy.encode_obs`).
            deterministic: std 0 (DDIM eta 0; DDPM mean only) instead of the floored std.
            use_ft: False runs the frozen pretrained network at every step (the BC target).
            return_log_probs: also return the log-probs of the sampled fine-tuned steps under the network that
                sampled them (`log_prob` of the recorded chain before any update: PPO's old log-probs).

        Returns:
            chain (B, K_ft + 1, horizon, Da) in normalized action units: chain[:, 0] is the
            input of the first fine-tuned step, chain[:, -1] the final denoised sequence;
            with return_log_probs, (chain, log-probs (B, K_ft)).
        """
        p = self.policy
        B = cond.shape[0]
        x = torch.randn((B, p.horizon, p.action_dim), device=cond.device, generator=generator)
        schedule = self.schedule.to(cond.device)
        fast, films = p.config.inference != "eager", {}
        if self.compile and fast:  # the step's arithmetic fused by torch.compile; index tensors (1,): one graph
            transition, indices = self._compiled_transition(), torch.arange(self.K, device=cond.device).view(-1, 1)
        else:
            transition, indices = self._transition, range(self.K)
        eta = 0.0 if deterministic else self.eta
        chain, log_probs = [], []
        for i in range(self.K):
            name = p.denoiser_name(i, self.K) if use_ft else "model"
            if fast:
                eps = p.fast_denoiser(name, i, cond, films, compiled=self.compile)(x)
            else:
                eps = getattr(p, name)(x, schedule.timesteps[i], cond)
            z = None if deterministic else torch.randn(x.shape, device=x.device, generator=generator)
            x_prev, logp = transition(eps, x, indices[i], z, eta)
            if i >= self.K - self.K_ft:
                chain.append(x)
                log_probs.append(logp)
            x = x_prev
        chain = torch.stack([*chain, x], dim=1)
        return (chain, torch.stack(log_probs, dim=1)) if return_log_probs else chain

    def _transition(self, eps: torch.Tensor, x: torch.Tensor, index: torch.Tensor | int, z: torch.Tensor | None,
                    eta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoising step from x_t (B, H, Da) given the network's eps: x_{t-1} = mean + floored std * clipped z
        (the mean when z is None) and its log-prob (B,) under the std floored for likelihoods."""
        mean, std = self.schedule.mean_std(eps, x, index, eta=eta)
        x_prev = mean if z is None else mean + std.clamp(min=self.min_sampling_std) * z.clamp(-self.randn_clip,
                                                                                                self.randn_clip)
        logp = gaussian_logprob(x_prev, mean, std.clamp(min=self.min_logprob_std))
        return x_prev, logp[:, self.rows].mean(dim=(1, 2))

    def _compiled_transition(self):
        if self._compiled is None:
            self._compiled = torch.compile(self._transition, dynamic=False)
        return self._compiled

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

    def chunk(self, chain: torch.Tensor) -> torch.Tensor:
        """Executed action chunk (B, n_action_steps, Da) in raw units from recorded chains."""
        action = self.policy.normalizer.unnormalize("action", chain[:, -1])
        return action[:, self.rows]
