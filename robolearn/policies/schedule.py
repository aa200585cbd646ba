"""The denoising chain of a sampler as per-step coefficients: one formula for the eager and fast sampling loops
of `DiffusionPolicy` and for DPPO's likelihoods (`robolearn.rl.dppo`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler


@dataclass
class DenoisingSchedule:
    """Per-denoising-step coefficients of a `diffusers` DDIM or DDPM sampler, as tensors of shape (K,).

    For DDPM (posterior q(x_{t-1} | x_t, x0), Ho et al. 2020, eq. 7):
        mean = c_x0 * x0 + c_xt * x_t, std = sqrt(beta_tilde).
    For DDIM (Song et al. 2021, eq. 12) with eta:
        sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev),
        mean = sqrt(a_prev) * x0 + sqrt(1 - a_prev - sigma^2) * eps(x0).
    The x0 estimate is clamped to [-clip, clip] and, for DDIM, eps recomputed from it (diffusers'
    `use_clipped_model_output`); with eta 0 (DDIM) or plus std * N(0, I) for t > 0 (DDPM) a step equals the
    scheduler's `step` to float tolerance (tests/test_fast_inference.py).
    """

    timesteps: torch.Tensor  # (K,) long, noisiest first
    alpha_t: torch.Tensor  # cumulative alpha at t, float64
    alpha_prev: torch.Tensor  # cumulative alpha at the next (less noisy) step; 1 after the last (DDPM)
    ddim: bool

    @classmethod
    def from_scheduler(cls, scheduler: DDIMScheduler | DDPMScheduler) -> DenoisingSchedule:
        """The chain of a scheduler after `set_timesteps` (evenly spaced timesteps, "leading" spacing)."""
        ac = scheduler.alphas_cumprod.double()
        ts = scheduler.timesteps.long()
        ddim = isinstance(scheduler, DDIMScheduler)
        final = scheduler.final_alpha_cumprod.double() if ddim else torch.tensor(1.0, dtype=torch.float64)
        prev = torch.cat([ac[ts[1:]], final.reshape(1)])
        return cls(ts, ac[ts], prev, ddim)

    def __len__(self) -> int:
        return len(self.timesteps)

    def to(self, device: torch.device) -> DenoisingSchedule:
        """The same schedule with its tensors on `device`."""
        return DenoisingSchedule(self.timesteps.to(device), self.alpha_t.to(device), self.alpha_prev.to(device),
                                 self.ddim)

    def mean_std(self, eps: torch.Tensor, x: torch.Tensor, index: torch.Tensor | int, eta: float = 1.0,
                 clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, H, Da) and std of p(x_{t-1} | x_t) at step `index`: (B,) long, std (B, 1, 1); or one int
        for the whole batch, std 0-dim. Computed in float64, returned in x's dtype.

        `eta` matters for DDIM only (1: as stochastic as DDPM; 0: deterministic).
        """
        shape = (-1, 1, 1) if isinstance(index, torch.Tensor) else ()
        a_t = self.alpha_t.to(x.device)[index].view(shape)
        a_prev = self.alpha_prev.to(x.device)[index].view(shape)
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
