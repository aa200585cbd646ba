"""Per-dimension linear normalization of observations and actions.

`limits` mode maps each dimension's [min, max] to [-1, 1] (as the reference Diffusion
Policy `LinearNormalizer`); a dimension whose range is below `range_eps` is constant and
is mapped to 0 with unit scale. Statistics are fitted on training episodes only, and saved
as JSON (never pickle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np
import torch

STAT_NAMES = ("scale", "offset", "min", "max", "mean", "std")


class LinearNormalizer:
    """y = x * scale + offset per key, broadcast over the last dimension.

    `params[key]` holds float32 arrays of shape (D,) for "scale", "offset", "min", "max",
    "mean", "std". Works on numpy arrays and torch tensors (any device) of shape (..., D).
    """

    def __init__(self, params: Mapping[str, Mapping[str, np.ndarray]] | None = None):
        self.params = {k: {s: np.asarray(v[s], dtype=np.float32) for s in STAT_NAMES}
                       for k, v in (params or {}).items()}
        self._torch_cache: dict = {}

    @classmethod
    def fit(cls, data: Mapping[str, np.ndarray], range_eps: float = 1e-4) -> LinearNormalizer:
        """Fit `limits` normalization per key over all leading dimensions of each array (..., D)."""
        params = {}
        for key, values in data.items():
            flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
            if len(flat) == 0:
                raise ValueError(f"cannot fit the normalizer for `{key}`: no samples")
            lo, hi = flat.min(0), flat.max(0)
            span = hi - lo
            constant = span < range_eps
            scale = np.where(constant, 1.0, 2.0 / np.where(constant, 1.0, span))
            offset = np.where(constant, -(hi + lo) / 2, -1.0 - lo * scale)
            params[key] = {"scale": scale, "offset": offset, "min": lo, "max": hi,
                           "mean": flat.mean(0), "std": flat.std(0)}
        return cls(params)

    def keys(self) -> list[str]:
        return list(self.params)

    def _get(self, key: str, like):
        if key not in self.params:
            raise KeyError(f"normalizer has no statistics for `{key}`; it has {self.keys()}")
        p = self.params[key]
        if isinstance(like, torch.Tensor):
            cache_key = (key, like.device, like.dtype)
            if cache_key not in self._torch_cache:
                self._torch_cache[cache_key] = tuple(
                    torch.as_tensor(p[s], device=like.device, dtype=like.dtype) for s in ("scale", "offset"))
            return self._torch_cache[cache_key]
        return p["scale"], p["offset"]

    def _check_dim(self, key: str, x) -> None:
        dim = len(self.params[key]["scale"])
        if x.shape[-1] != dim:
            raise ValueError(f"`{key}` has last dimension {x.shape[-1]}, the normalizer was fitted on {dim}")

    def normalize(self, key: str, x):
        """Map raw values (..., D) of `key` into the normalized range."""
        scale, offset = self._get(key, x)
        self._check_dim(key, x)
        return x * scale + offset

    def unnormalize(self, key: str, y):
        """Inverse of `normalize`."""
        scale, offset = self._get(key, y)
        self._check_dim(key, y)
        return (y - offset) / scale

    def to_dict(self) -> dict:
        """JSON-ready {key: {stat: list}}."""
        return {k: {s: v[s].tolist() for s in STAT_NAMES} for k, v in self.params.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> LinearNormalizer:
        missing = [(k, s) for k, v in d.items() for s in STAT_NAMES if s not in v]
        if missing:
            raise ValueError(f"normalizer statistics incomplete, missing {missing}")
        return cls(d)

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearNormalizer:
        with open(path) as f:
            return cls.from_dict(json.load(f))
