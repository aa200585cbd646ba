"""Policies: the Diffusion Policy, its U-Net denoiser, EMA, checkpoints and the env runner."""

from robolearn.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.ema import EMA
from robolearn.policies.gaussian import GaussianChunkPolicy, GaussianPolicyConfig
from robolearn.policies.unet1d import ConditionalUnet1D

__all__ = ["ConditionalUnet1D", "DiffusionPolicy", "DiffusionPolicyConfig", "EMA", "GaussianChunkPolicy",
           "GaussianPolicyConfig"]
