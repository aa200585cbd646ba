"""The Gaussian-policy PPO baseline (DPPO's, Ren et al. 2024, Sec. 5.1): an MLP over action chunks,
pretrained by behaviour cloning, and the config `robolearn finetune policy=gaussian` builds it from
(configs/policy/gaussian.yaml, `_target_`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from robolearn.datasets import SequenceDataset
from robolearn.errors import UserError
from robolearn.policies.checkpoint import CheckpointError, load_policy
from robolearn.policies.config import SerializableConfig
from robolearn.policies.features import check_features
from robolearn.policies.gaussian import GaussianChunkPolicy, GaussianPolicyConfig


@dataclass
class GaussianPPOConfig(SerializableConfig):
    """The baseline's policy shape, PPO clip and behaviour-cloning pretraining (configs/policy/gaussian.yaml).

    Attributes:
        n_obs_steps, n_action_steps, hidden, init_std, min_std, max_std: the `GaussianChunkPolicy`.
        clip: the PPO clip.
        minibatch_size: decisions per minibatch (one pair each), replacing ppo.minibatch_size, which counts
            DPPO's (decision, denoising step) pairs.
        bc_steps, bc_lr, bc_batch_size: behaviour cloning before PPO.
        bc_max_episodes, bc_val_ratio: with the run's seed, the episode split of robolearn train.
    """

    n_obs_steps: int = 2
    n_action_steps: int = 4
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    init_std: float = 0.1
    min_std: float = 0.01
    max_std: float = 0.2
    clip: float = 0.01
    minibatch_size: int = 400
    bc_steps: int = 2000
    bc_lr: float = 1e-3
    bc_batch_size: int = 256
    bc_max_episodes: int | None = None
    bc_val_ratio: float = 0.05

    def make_agent(self, source: Path | None, resuming: bool, task, dataset: str, seed: int,
                   device: torch.device) -> tuple[GaussianChunkPolicy, GaussianAgent]:
        """From the run's own `latest` when `resuming` (online weights), else pretrained by behaviour cloning
        on `dataset`.

        Raises:
            UserError: a damaged checkpoint.
        """
        if resuming:
            try:
                policy = load_policy(source, use_ema=False, device=device)
            except CheckpointError as exc:
                raise UserError(str(exc)) from exc
        else:
            policy = pretrain_gaussian(self, task, dataset, seed, device)
        return policy, GaussianAgent(policy, self)

    def ppo_overrides(self) -> dict:
        """One pair per decision: its own minibatch size keeps the number of updates per iteration DPPO's."""
        return {"minibatch_size": self.minibatch_size}


class GaussianAgent:
    """The Gaussian baseline: one 'denoising step' per decision (K = 1)."""

    def __init__(self, policy: GaussianChunkPolicy, cfg: GaussianPPOConfig):
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

    def old_log_probs(self, cond: torch.Tensor, record: dict) -> torch.Tensor:
        return self.policy.log_prob(cond, record["chunk"])[:, None]

    def extra_loss(self, cond, record, k) -> torch.Tensor:
        return torch.zeros((), device=cond.device)


def pretrain_gaussian(g: GaussianPPOConfig, task, dataset: str, seed: int, device: torch.device) -> GaussianChunkPolicy:
    """Behaviour cloning of a `GaussianChunkPolicy` on the task's demonstrations (MSE on the mean).

    The episodes are chosen by the same seeded split as `robolearn train` (val_ratio, seed,
    max_train_episodes), so the baseline sees the demonstrations the Diffusion Policy saw.

    Raises:
        UserError: the dataset lacks an observation feature of the task, or has it in another shape.
    """
    data = SequenceDataset(dataset, task.obs_keys, task.action_key, horizon=g.n_obs_steps - 1 + g.n_action_steps,
                           n_obs_steps=g.n_obs_steps, n_action_steps=g.n_action_steps, val_ratio=g.bc_val_ratio,
                           seed=seed, max_train_episodes=g.bc_max_episodes)
    try:
        check_features(task.obs_features, data.obs_shapes, f"dataset {dataset}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    config = GaussianPolicyConfig(obs_features=task.features_spec, action_dim=data.action_dim,
                                  n_obs_steps=g.n_obs_steps, n_action_steps=g.n_action_steps, hidden=list(g.hidden),
                                  init_std=g.init_std, min_std=g.min_std, max_std=g.max_std)
    policy = GaussianChunkPolicy(config, data.fit_normalizer()).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=g.bc_lr, weight_decay=1e-6)
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(g.bc_steps), desc="bc pretrain", unit="step", leave=False):
        batch = data.get_batch(rng.integers(0, len(data), g.bc_batch_size))
        loss = policy.bc_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy
