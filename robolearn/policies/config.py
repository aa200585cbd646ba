"""Serialization shared by the model config dataclasses (saved as YAML inside checkpoints), and building a
config from a hydra yaml that names its class with `_target_`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields

from robolearn.policies.features import ObsFeature, features_to_dict, parse_features
from robolearn.policies.vision import image_encoder_config

#: config class name -> class, filled by every `SerializableConfig` subclass as it is defined. Checkpoints name
#: their config class; loading accepts only these classes (a checkpoint never makes us import a module).
CONFIG_CLASSES: dict[str, type] = {}


class SerializableConfig:
    """`to_dict()` / `from_dict()` for a dataclass; unknown keys are a clear error.

    A config with an `obs_features` field keeps it as the yaml-ready spec {key: {shape, type}} and offers
    `features` ({key: `ObsFeature`}) and `obs_keys`. A config that builds a model defines `build(normalizer)`.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        CONFIG_CLASSES[cls.__name__] = cls

    def __post_init__(self):
        if hasattr(self, "obs_features"):
            self.obs_features = features_to_dict(parse_features(self.obs_features))
        if hasattr(self, "image_encoder"):
            self.image_encoder = image_encoder_config(self.image_encoder)

    @property
    def features(self) -> dict[str, ObsFeature]:
        return parse_features(self.obs_features)

    @property
    def obs_keys(self) -> list[str]:
        return list(self.obs_features)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping):
        """Build from a mapping; older checkpoints' `obs_keys` + `obs_dims` become `obs_features` (low_dim).

        Raises:
            ValueError: unknown or missing keys, or invalid values.
        """
        d = dict(d)
        names = {f.name for f in fields(cls)}
        if "obs_features" in names and "obs_features" not in d and {"obs_keys", "obs_dims"} <= set(d):
            keys, dims = d.pop("obs_keys"), d.pop("obs_dims")
            if not isinstance(keys, list) or not isinstance(dims, list) or len(keys) != len(dims):
                raise ValueError(f"obs_keys {keys!r:.80} and obs_dims {dims!r:.80} must be lists of one length")
            d["obs_features"] = {k: {"shape": [dim], "type": "low_dim"} for k, dim in zip(keys, dims)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; it takes {sorted(names)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})


def config_from_target(spec: Mapping, **values) -> SerializableConfig:
    """The config object a hydra yaml describes: `_target_` names the config class (a `SerializableConfig`),
    the other keys are its fields, `values` adds the ones that come from the data (obs_features, action_dim).
    The yaml's `name` (the run name's part) is not a field.

    Raises:
        ValueError: no `_target_`, a `_target_` that is not a known config class, or an unknown (e.g.
            misspelled) or invalid key, named in the message.
    """
    spec = dict(spec)
    target = spec.pop("_target_", None)
    spec.pop("name", None)
    if not isinstance(target, str):
        raise ValueError(f"the config needs `_target_: <config class>`; known: {sorted(CONFIG_CLASSES)}")
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as exc:  # hydra wraps import errors in its own types
        raise ValueError(f"_target_ {target!r} cannot be imported ({' '.join(str(exc).split())[:160]})") from None
    if not (isinstance(cls, type) and issubclass(cls, SerializableConfig)):
        raise ValueError(f"_target_ {target!r} is not a robolearn config class; known: "
                         f"{sorted(f'{c.__module__}.{c.__name__}' for c in CONFIG_CLASSES.values())}")
    return cls.from_dict({**spec, **values})
