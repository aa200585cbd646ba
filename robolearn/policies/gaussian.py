"""Gaussian-policy baseline for fine-tuning: an MLP that outputs a whole action chunk."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.policies.config import SerializableConfig
from robolearn.policies.features import ObsEncoder
from robolearn.policies.mish import Mish


@dataclass
class GaussianPolicyConfig(SerializableConfig):
    """Shape of a `GaussianChunkPolicy` (saved as YAML in checkpoints).

    The policy predicts n_action_steps actions starting at the latest observation, from the
    last n_obs_steps observations; std is per action dimension, in normalized units.
    """

    obs_features: dict
    action_dim: int
    n_obs_steps: int = 2
    n_action_steps: int = 8
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    init_std: float = 0.1
    min_std: float = 0.01
    max_std: float = 0.2
    image_encoder: dict = field(default_factory=dict)  # rgb features' encoders (`robolearn.policies.vision`)

    def build(self, normalizer: LinearNormalizer) -> GaussianChunkPolicy:
        return GaussianChunkPolicy(self, normalizer)



class GaussianChunkPolicy(nn.Module):
    """pi(chunk | obs history) = N(mu_theta(obs), diag(sigma^2)) over normalized actions.

    The Gaussian PPO baseline of DPPO (Ren et al. 2024, Sec. 5.1) with action chunks: an MLP
    (Mish) maps the encoded observation history (B, cond_dim; `ObsEncoder`) to the mean of
    the chunk (B, n_action_steps, Da); log std is a learned vector clamped to
    [log min_std, log max_std]. Same interface as `DiffusionPolicy` for evaluation:
    predict_action(obs) -> (B, n_action_steps, Da) raw units (the mean), sample_chunks(obs, k).
    """

    def __init__(self, config: GaussianPolicyConfig, normalizer: LinearNormalizer):
        super().__init__()
        self.config, self.normalizer = config, normalizer
        self.obs_encoder = ObsEncoder.from_config(config, normalizer)
        layers, d = [], self.obs_encoder.out_dim
        for h in config.hidden:
            layers += [nn.Linear(d, h), Mish()]
            d = h
        layers.append(nn.Linear(d, config.n_action_steps * config.action_dim))
        self.mean_net = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((config.action_dim,), float(config.init_std)).log())  # float32 log

    obs_keys = property(lambda self: self.config.obs_keys)
    obs_features = property(lambda self: self.obs_encoder.features)
    n_obs_steps = property(lambda self: self.config.n_obs_steps)
    n_action_steps = property(lambda self: self.config.n_action_steps)
    action_dim = property(lambda self: self.config.action_dim)
    device = property(lambda self: self.log_std.device)

    def encode_obs(self, obs: dict) -> torch.Tensor:
        """Observation history {key: (B, To, *shape)} -> (B, cond_dim) (`ObsEncoder`)."""
        return self.obs_encoder(obs)

    def distribution(self, cond: torch.Tensor) -> torch.distributions.Normal:
        """Normal over normalized chunks (B, n_action_steps, Da)."""
        mean = self.mean_net(cond).view(-1, self.n_action_steps, self.action_dim)
        std = self.log_std.clamp(torch.log(torch.tensor(self.config.min_std)),
                                 torch.log(torch.tensor(self.config.max_std))).exp()
        return torch.distributions.Normal(mean, std.expand_as(mean))

    def log_prob(self, cond: torch.Tensor, chunk_normalized: torch.Tensor) -> torch.Tensor:
        """Mean log-density per element of a normalized chunk (B, Ta, Da) -> (B,) (the DPPO averaging)."""
        return self.distribution(cond).log_prob(chunk_normalized).mean(dim=(1, 2))

    def bc_loss(self, batch: dict) -> torch.Tensor:
        """MSE between the predicted mean and the demonstrated chunk (behaviour cloning).

        batch: {"obs": {key: (B, To, D)}, "action": (B, >= To - 1 + Ta, Da)} (training windows).
        """
        start = self.n_obs_steps - 1
        target = self.normalizer.normalize("action", batch["action"][:, start:start + self.n_action_steps].to(self.device))
        return nn.functional.mse_loss(self.distribution(self.encode_obs(batch["obs"])).mean, target)

    @torch.no_grad()
    def sample_chunks(self, obs: dict, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k sampled chunks per observation, raw units: (B, k, Ta, Da)."""
        dist = self.distribution(self.encode_obs(obs))
        noise = torch.randn((dist.mean.shape[0], k, *dist.mean.shape[1:]), device=self.device, generator=generator)
        x = dist.mean[:, None] + dist.stddev[:, None] * noise
        return self.normalizer.unnormalize("action", x)

    @torch.no_grad()
    def predict_action(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The mean chunk in raw units: (B, Ta, Da)."""
        return self.normalizer.unnormalize("action", self.distribution(self.encode_obs(obs)).mean)
