"""Q-functions over (observation history, action chunk), saved without pickle.

A checkpoint folder holds::

    config.yaml              value_class, the `QFunctionConfig`, and the training config for reference
    normalizer.json          min/max statistics of the observation keys and `action`
    model.safetensors        the critic ensemble and the observation encoder
    target.safetensors       its target copy (training only)
    value.safetensors        the state-value network V(obs) (IQL only)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.policies.checkpoint import (
    CheckpointError,
    build_checked,
    config_section,
    contiguous_cpu,
    load_normalizer,
    read_config_yaml,
)
from robolearn.policies.config import SerializableConfig
from robolearn.policies.features import ObsEncoder


@dataclass
class QFunctionConfig(SerializableConfig):
    """Shape of a `QFunction`: its inputs must match the policy it scores (see `check_matches`)."""

    obs_features: dict
    action_dim: int
    n_obs_steps: int = 2
    n_action_steps: int = 8
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    n_critics: int = 2
    layer_norm: bool = True
    algorithm: str = "cal_ql"  # cal_ql | iql (how it was trained; IQL adds a V network)
    image_encoder: dict = field(default_factory=dict)  # rgb features' encoders (`robolearn.policies.vision`)

    @property
    def chunk_dim(self) -> int:
        return self.n_action_steps * self.action_dim


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied in one batched matmul: (n, B, d_in) -> (n, B, d_out)."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialization range
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """`n` MLPs (Mish, optional LayerNorm without affine parameters) evaluated together:
    input (B, d_in) or (n, B, d_in) -> (n, B)."""

    def __init__(self, n: int, d_in: int, hidden: list[int], layer_norm: bool = True):
        super().__init__()
        dims = [d_in, *hidden]
        self.n = n
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(n, dims[-1], 1)
        self.layer_norm = layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        for layer in self.layers:
            x = layer(x)
            if self.layer_norm:
                x = nn.functional.layer_norm(x, x.shape[-1:])
            x = nn.functional.mish(x)
        return self.out(x).squeeze(-1)


class QFunction(nn.Module):
    """An ensemble of critics Q_i(o, a) over a normalized observation history o (n_obs_steps
    observations) and a normalized action chunk a (n_action_steps x action_dim), i.e. the chunk a
    policy executes from the latest observation.

    `critics(cond, chunk)` works in normalized units: cond (B, cond_dim), chunk (B, chunk_dim)
    -> (n_critics, B). `score(obs, chunks)` takes raw units and returns the ensemble minimum,
    the pessimistic estimate used for re-ranking.
    """

    def __init__(self, config: QFunctionConfig, normalizer: LinearNormalizer):
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.obs_encoder = ObsEncoder.from_config(config, normalizer)
        cond_dim = self.obs_encoder.out_dim
        self.critics = EnsembleMLP(config.n_critics, cond_dim + config.chunk_dim, config.hidden,
                                   config.layer_norm)
        # IQL's state-value network V(o); unused (and not trained) by Cal-QL.
        self.value = EnsembleMLP(1, cond_dim, config.hidden, config.layer_norm) \
            if config.algorithm == "iql" else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_obs(self, obs: dict) -> torch.Tensor:
        """{key: (B, >= n_obs_steps, *shape)} raw -> (B, cond_dim) (`ObsEncoder`, the last n_obs_steps)."""
        return self.obs_encoder(obs)

    def normalize_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """Raw action chunks (..., n_action_steps, action_dim) -> normalized, flattened (..., chunk_dim).

        Raises:
            ValueError: the chunk shape does not match the config.
        """
        c = self.config
        chunks = torch.as_tensor(chunks, dtype=torch.float32, device=self.device)
        if chunks.shape[-2:] != (c.n_action_steps, c.action_dim):
            raise ValueError(f"action chunks must end in ({c.n_action_steps}, {c.action_dim}) "
                             f"(n_action_steps, action_dim), got {tuple(chunks.shape)}")
        return self.normalizer.normalize("action", chunks).flatten(-2)

    def forward(self, cond: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """Normalized cond (B, cond_dim), chunk (B, chunk_dim) -> Q per critic (n_critics, B)."""
        return self.critics(torch.cat([cond, chunk], dim=-1))

    @torch.no_grad()
    def score(self, obs: dict, chunks: torch.Tensor) -> torch.Tensor:
        """Q of K candidate chunks per observation: obs {key: (B, To, D)}, chunks (B, K, Ta, Da) raw
        -> (B, K), the minimum over the ensemble."""
        cond = self.encode_obs(obs)
        flat = self.normalize_chunks(chunks)
        b, k = flat.shape[:2]
        q = self(cond.repeat_interleave(k, dim=0), flat.reshape(b * k, -1))
        return q.min(dim=0).values.reshape(b, k)

    def check_matches(self, policy) -> None:
        """Raise ValueError, naming the mismatch, unless this Q-function can score `policy`'s chunks.

        `policy` needs `obs_features`, `n_obs_steps`, `n_action_steps` and `config.action_dim` (any
        robolearn policy).
        """
        c, pc = self.config, policy.config
        policy_features = policy.obs_features
        for key, feature in c.features.items():
            if key not in policy_features:
                raise ValueError(f"the Q-function needs observation `{key}`, which the policy does not use "
                                 f"(policy observations: {list(policy_features)})")
            if policy_features[key] != feature:
                raise ValueError(f"observation `{key}`: the Q-function expects {feature.type} "
                                 f"{list(feature.shape)}, the policy's is {policy_features[key].type} "
                                 f"{list(policy_features[key].shape)}")
        if pc.action_dim != c.action_dim:
            raise ValueError(f"action_dim: the Q-function expects {c.action_dim}, the policy's is {pc.action_dim}")
        if policy.n_action_steps != c.n_action_steps:
            raise ValueError(f"n_action_steps: the Q-function scores chunks of {c.n_action_steps} actions, "
                             f"the policy executes {policy.n_action_steps}")
        if policy.n_obs_steps < c.n_obs_steps:
            raise ValueError(f"n_obs_steps: the Q-function needs {c.n_obs_steps} observations, "
                             f"the policy keeps {policy.n_obs_steps}")


def save_q_function(folder: Path, q: QFunction, target: nn.Module | None = None,
                    extra_config: dict | None = None) -> None:
    """Write a Q-function checkpoint folder (see the module docstring); no pickle.

    `target` is the target copy of `q.critics` kept by training (`OfflineQLearner.target`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"value_class": "QFunction", "q_function": q.config.to_dict()}
    if extra_config:
        config["train"] = extra_config
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    q.normalizer.save(folder / "normalizer.json")
    critics = {k: v for k, v in q.state_dict().items() if not k.startswith("value.")}  # with the obs encoder
    save_file(contiguous_cpu(critics), folder / "model.safetensors")
    if target is not None:
        save_file(contiguous_cpu(target.state_dict()), folder / "target.safetensors")
    if q.value is not None:
        save_file(contiguous_cpu(q.value.state_dict()), folder / "value.safetensors")


def load_q_function(folder: str | os.PathLike, device: str | torch.device = "cpu") -> QFunction:
    """Rebuild the `QFunction` of a checkpoint folder (eval mode), without pickle.

    Raises:
        FileNotFoundError: the folder does not exist.
        CheckpointError: files are missing, the folder is not a Q-function checkpoint, or the
            weights do not match its config.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Q-function checkpoint folder not found: {folder}")
    missing = [f for f in ("config.yaml", "normalizer.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"Q-function checkpoint {folder} is missing {missing}")
    config = read_config_yaml(folder)
    if config.get("value_class") != "QFunction":
        raise CheckpointError(f"{folder} is not a Q-function checkpoint (value_class "
                              f"{config.get('value_class')!r}; policy checkpoints go to checkpoint=, not value=)")
    q_config = config_section(QFunctionConfig, config, "q_function", folder)
    normalizer = load_normalizer(folder, q_config, "q_function")

    def weights(q) -> dict:
        out = {folder / "model.safetensors": (q, ("value.",))}
        if q.value is not None and (folder / "value.safetensors").is_file():
            out[folder / "value.safetensors"] = (q.value, ())
        return out

    q = build_checked(folder, lambda: QFunction(q_config, normalizer), weights)
    return q.to(device).eval()
