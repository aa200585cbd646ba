"""The DPPO agent (Ren et al. 2024): a Diffusion Policy whose last denoising steps are fine-tuned by PPO, and
the config that `robolearn finetune policy=dppo` builds it from (configs/policy/dppo.yaml, `_target_`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robolearn.errors import UserError
from robolearn.policies.checkpoint import CheckpointError, load_policy
from robolearn.policies.config import SerializableConfig
from robolearn.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.rl.dppo import DPPOActor
from robolearn.rl.ppo import clip_schedule


@dataclass
class DPPOConfig(SerializableConfig):
    """DPPO's settings (configs/policy/dppo.yaml; Ren et al. 2024, Sec. 4 and App. D).

    Attributes:
        ft_denoising_steps: fine-tuned last denoising steps (None: all of the checkpoint's).
        min_sampling_denoising_std: exploration floor of the sampling std, normalized action units.
        min_logprob_denoising_std: floor of the likelihood std.
        randn_clip: standard-normal draws clipped to +-this.
        eta: DDIM only, the stochasticity while fine-tuning (evaluation samples with eta 0).
        gamma_denoising: advantage discount over denoising steps.
        clip_base, clip_final, clip_rate: the PPO clip, rising exponentially from the noisiest fine-tuned
            step to the last (`clip_schedule`).
        bc_coef: > 0: a behaviour-cloning regularizer towards the pretrained policy.
        compile_rollouts: the rollouts' denoiser through torch.compile (`DPPOActor`), compiled once per run.
    """

    ft_denoising_steps: int | None = None
    min_sampling_denoising_std: float = 0.02
    min_logprob_denoising_std: float = 0.1
    randn_clip: float = 3.0
    eta: float = 1.0
    gamma_denoising: float = 0.99
    clip_base: float = 0.001
    clip_final: float = 0.01
    clip_rate: float = 3.0
    bc_coef: float = 0.0
    compile_rollouts: bool = True

    def make_agent(self, source: Path | None, resuming: bool, task, dataset: str, seed: int,
                   device: torch.device) -> tuple[DiffusionPolicy, DiffusionAgent]:
        """The policy to fine-tune and its agent: from the run's own `latest` when `resuming` (the online
        weights), else the pretrained checkpoint `source` (its EMA weights) with a trainable copy of the
        denoiser for the last `ft_denoising_steps` steps.

        Raises:
            UserError: no checkpoint, a damaged one, one that is not a Diffusion Policy, or an
                ft_denoising_steps out of range.
        """
        if source is None:
            raise UserError("give the pretrained Diffusion Policy: robolearn finetune checkpoint=runs/.../checkpoints/best")
        try:
            base = load_policy(source, use_ema=not resuming, device=device)
        except CheckpointError as exc:
            raise UserError(str(exc)) from exc
        if not isinstance(base, DiffusionPolicy):
            raise UserError(f"{source} holds a {type(base).__name__}, policy=dppo needs a DiffusionPolicy")
        policy = base if base.ft_model is not None else with_fine_tuning(base, self.ft_denoising_steps)
        policy.model.requires_grad_(False)
        # Only the fine-tuned denoiser trains: the observation encoder (an image encoder too) stays frozen and in
        # eval mode (centre crops), so the features the frozen denoiser steps and the critic read never move.
        policy.obs_encoder.requires_grad_(False)
        return policy.eval(), DiffusionAgent(policy.to(device), self)

    def ppo_overrides(self) -> dict:
        """Changes to the ppo settings this agent needs (none)."""
        return {}


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
    tuned.load_state_dict(policy.state_dict(), strict=False)  # every module but the new ft_model
    tuned.ft_model.load_state_dict(policy.model.state_dict())
    tuned.model.requires_grad_(False)
    return tuned


class DiffusionAgent:
    """DPPO's view of the policy: acting records chains; log-probs are per fine-tuned denoising step."""

    def __init__(self, policy: DiffusionPolicy, cfg: DPPOConfig):
        self.policy = policy
        self.actor = DPPOActor(policy, cfg.min_sampling_denoising_std, cfg.min_logprob_denoising_std,
                               cfg.randn_clip, cfg.eta, cfg.compile_rollouts)
        self.K = self.actor.K_ft
        ks = np.arange(self.K)
        self.clip = torch.tensor(clip_schedule(ks, self.K, cfg.clip_base, cfg.clip_final, cfg.clip_rate),
                                 dtype=torch.float32)
        self.adv_weight = torch.tensor(cfg.gamma_denoising ** (self.K - 1 - ks), dtype=torch.float32)
        self.bc_coef = float(cfg.bc_coef)
        self.params = list(policy.ft_model.parameters())

    def act(self, cond: torch.Tensor) -> tuple[np.ndarray, dict]:
        chain, logp = self.actor.sample_chain(cond, return_log_probs=True)
        record = {"chain": chain, "logp": logp}
        if self.bc_coef > 0:
            record["base_chain"] = self.actor.sample_chain(cond, use_ft=False)
        return self.actor.chunk(chain).cpu().numpy(), record

    def log_probs(self, cond: torch.Tensor, record: dict, k: torch.Tensor, key: str = "chain") -> torch.Tensor:
        chain = record[key]
        return self.actor.log_prob(cond, chain[torch.arange(len(k)), k], chain[torch.arange(len(k)), k + 1], k)

    def old_log_probs(self, cond: torch.Tensor, record: dict) -> torch.Tensor:
        """The log-probs (M, K) of every recorded fine-tuned step under the weights that acted, recorded while
        acting (the denoiser's outputs are not computed twice)."""
        return record["logp"]

    def extra_loss(self, cond: torch.Tensor, record: dict, k: torch.Tensor) -> torch.Tensor:
        """BC regularizer: log-likelihood under the fine-tuned steps of chains from the frozen policy."""
        if self.bc_coef <= 0:
            return torch.zeros((), device=cond.device)
        return -self.bc_coef * self.log_probs(cond, record, k, key="base_chain").mean()
