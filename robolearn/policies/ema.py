"""Exponential moving average of model weights with a warm-up decay schedule."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keep `averaged`, an EMA copy of `model`'s parameters (buffers are copied).

    decay(step) = 1 - (1 + step / inv_gamma) ** -power, clipped to [min_decay, max_decay]:
    the warm-up schedule of Diffusion Policy's EMAModel (after @crowsonkb's
    k-diffusion), which averages little at first and approaches max_decay (about 0.999
    after 10k steps with power 0.75).
    """

    def __init__(self, model: nn.Module, power: float = 0.75, inv_gamma: float = 1.0,
                 min_decay: float = 0.0, max_decay: float = 0.9999):
        self.averaged = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma = power, inv_gamma
        self.min_decay, self.max_decay = min_decay, max_decay
        self.step = 0

    def decay(self, step: int) -> float:
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return float(min(max(value, self.min_decay), self.max_decay))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend `model`'s current weights into the average (call after each optimizer step)."""
        d = self.decay(self.step)
        avg_params = dict(self.averaged.named_parameters())
        for name, p in model.named_parameters():
            avg_params[name].lerp_(p.detach(), 1.0 - d)
        avg_buffers = dict(self.averaged.named_buffers())
        for name, b in model.named_buffers():
            avg_buffers[name].copy_(b)
        self.step += 1
