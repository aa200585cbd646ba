"""Observation features: what each observation key is (shape and type), and the `ObsEncoder` that turns an
observation history into the conditioning vector of a policy, critic or Q-function.

A feature spec is a mapping {key: {"shape": [...], "type": "low_dim" | "rgb"}}, in the spirit of the
reference Diffusion Policy's `shape_meta` and LeRobot's policy features. It is written in the task's yaml
(`obs_features:`), saved in every checkpoint's config.yaml and checked against datasets and envs, with
errors that name the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.policies.vision import build_image_encoders

#: low_dim: a vector (any shape, flattened) in physical units, min/max normalized to [-1, 1];
#: rgb: a uint8 camera image (H, W, 3), encoded by an image encoder.
FEATURE_TYPES = ("low_dim", "rgb")


@dataclass(frozen=True)
class ObsFeature:
    """One observation key: its per-step `shape` and its `type` (one of `FEATURE_TYPES`).

    Raises:
        ValueError: an unknown type, a shape with a non-positive or non-integer size, or an rgb shape that is
            not (H, W, 3).
    """

    shape: tuple[int, ...]
    type: str = "low_dim"

    def __post_init__(self):
        if self.type not in FEATURE_TYPES:
            raise ValueError(f"type must be one of {list(FEATURE_TYPES)}, got {self.type!r}")
        if not isinstance(self.shape, tuple) or not self.shape or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.shape):
            raise ValueError(f"shape must be a non-empty list of positive integers, got {self.shape!r}")
        if self.type == "rgb" and (len(self.shape) != 3 or self.shape[2] != 3):
            raise ValueError(f"an rgb feature has shape (H, W, 3), got {list(self.shape)}")

    @property
    def size(self) -> int:
        """Number of values per step (the product of `shape`)."""
        return math.prod(self.shape)


def parse_features(spec: Mapping) -> dict[str, ObsFeature]:
    """{key: {"shape": [...], "type": ...}} (from a yaml or a checkpoint) -> {key: ObsFeature}, in order.

    Raises:
        ValueError: not a mapping, no keys, or a key whose entry is invalid (the message names the key).
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"obs_features must be a non-empty mapping {{key: {{shape, type}}}}, got {spec!r:.80}")
    features = {}
    for key, entry in spec.items():
        if not isinstance(entry, Mapping) or set(entry) - {"shape", "type"} or "shape" not in entry:
            raise ValueError(f"obs_features `{key}` must be {{shape: [...], type: low_dim|rgb}}, got {entry!r:.80}")
        shape = entry["shape"]
        try:
            features[str(key)] = ObsFeature(tuple(shape) if isinstance(shape, (list, tuple)) else shape,
                                            str(entry.get("type", "low_dim")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"obs_features `{key}`: {exc}") from None
    return features


def features_to_dict(features: Mapping[str, ObsFeature]) -> dict:
    """{key: ObsFeature} -> {key: {"shape": [...], "type": ...}} (yaml- and JSON-ready)."""
    return {k: {"shape": list(f.shape), "type": f.type} for k, f in features.items()}


def check_features(features: Mapping[str, ObsFeature], shapes: Mapping[str, tuple], source: str) -> None:
    """Check that `source` (a dataset, an env, a message stream) provides every feature with its shape.

    Args:
        shapes: {key: per-step shape} that `source` provides.
        source: a description for messages, e.g. "dataset data/pusht.zarr".
    Raises:
        ValueError: a key that `source` lacks, or a shape that differs; the message names the key, the shape
            found and the shape expected.
    """
    for key, feature in features.items():
        if key not in shapes:
            raise ValueError(f"{source} has no observation `{key}` ({feature.type} {list(feature.shape)}); "
                             f"it has {sorted(shapes)}")
        found = tuple(int(s) for s in shapes[key])
        same = found == feature.shape or (feature.type == "low_dim" and math.prod(found) == feature.size
                                          and len(found) <= 1 and len(feature.shape) <= 1)
        if not same:
            raise ValueError(f"{source}: observation `{key}` has shape {list(found)}, expected "
                             f"{list(feature.shape)} ({feature.type})")


class ObsEncoder(nn.Module):
    """Observation history {key: (B, To, *shape)} -> conditioning features (B, To * out_per_step).

    Low-dim keys are flattened per step, normalized with the policy's `LinearNormalizer` (min/max to
    [-1, 1]) and concatenated in the feature order; rgb keys go through the image encoder given for them in
    `image_encoders` (a module mapping uint8 images (N, H, W, 3) to (N, F), with an `out_dim` attribute F;
    one module may serve several cameras), and its features join the low-dim ones at every step. Only the
    last `n_obs_steps` steps are used.

    Args:
        features: the feature spec (`parse_features`).
        normalizer: statistics for every low-dim key, over the flattened shape.
        n_obs_steps: To.
        image_encoders: {rgb key: encoder module}; required for every rgb feature.
    Raises:
        ValueError: an rgb feature without an image encoder, a low-dim key the normalizer lacks; and, in
            `forward`, a missing key or a wrong shape (naming the key).
    """

    def __init__(self, features: Mapping[str, ObsFeature], normalizer: LinearNormalizer, n_obs_steps: int,
                 image_encoders: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.features = dict(features)
        self.normalizer = normalizer
        self.n_obs_steps = int(n_obs_steps)
        image_encoders = dict(image_encoders or {})
        for key, feature in self.features.items():
            if feature.type == "rgb" and key not in image_encoders:
                raise ValueError(f"observation `{key}` is an rgb feature: it needs an image encoder")
            if feature.type == "low_dim" and key not in normalizer.params:
                raise ValueError(f"the normalizer has no statistics for observation `{key}`")
        # an encoder shared by several cameras is registered once, under its first camera's key
        first_key = {}
        for key, encoder in image_encoders.items():
            first_key.setdefault(id(encoder), key)
        self._encoder_key = {key: first_key[id(encoder)] for key, encoder in image_encoders.items()}
        self.image_encoders = nn.ModuleDict({key: image_encoders[key] for key in first_key.values()})
        # moves with the module (`.to(device)`), so low-dim-only encoders know their device; not saved
        self.register_buffer("device_anchor", torch.zeros(0), persistent=False)
        self.out_per_step = sum(f.size if f.type == "low_dim" else int(image_encoders[k].out_dim)
                                for k, f in self.features.items())

    @classmethod
    def from_config(cls, config, normalizer: LinearNormalizer) -> ObsEncoder:
        """The encoder a model config describes: its `features`, `n_obs_steps` and `image_encoder` (the
        `robolearn.policies.vision` config; image encoders are built for the rgb features)."""
        return cls(config.features, normalizer, config.n_obs_steps,
                   build_image_encoders(config.features, getattr(config, "image_encoder", None)))

    @property
    def out_dim(self) -> int:
        """Size of the conditioning vector: n_obs_steps * (low-dim sizes + image feature sizes)."""
        return self.n_obs_steps * self.out_per_step

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = self.device_anchor.device
        parts = []
        for key, feature in self.features.items():
            if key not in obs:
                raise ValueError(f"observation lacks key `{key}`; the policy needs {list(self.features)}")
            x = torch.as_tensor(obs[key])
            if x.ndim < 3 or x.shape[1] < self.n_obs_steps or tuple(x.shape[2:]) != feature.shape:
                if not (feature.type == "low_dim" and x.ndim == 3 and x.shape[1] >= self.n_obs_steps
                        and x.shape[2] == feature.size):
                    raise ValueError(f"observation `{key}` must have shape (B, {self.n_obs_steps}, "
                                     f"{', '.join(map(str, feature.shape))}), got {tuple(x.shape)}")
            x = x[:, -self.n_obs_steps:]
            batch = x.shape[0]
            if feature.type == "low_dim":
                x = x.reshape(batch, self.n_obs_steps, feature.size).to(device, torch.float32)
                parts.append(self.normalizer.normalize(key, x))
            else:
                images = x.reshape(batch * self.n_obs_steps, *feature.shape).to(device)
                encoder = self.image_encoders[self._encoder_key[key]]
                parts.append(encoder(images).reshape(batch, self.n_obs_steps, -1))
        return torch.cat(parts, dim=-1).flatten(1)


def low_dim_spec(sizes: Mapping[str, int]) -> dict:
    """A feature spec of vector keys: {key: size} -> {key: {"shape": [size], "type": "low_dim"}}."""
    return {k: {"shape": [int(n)], "type": "low_dim"} for k, n in sizes.items()}
