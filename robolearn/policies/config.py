"""Serialization shared by the policy config dataclasses (saved as YAML inside checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, fields


class SerializableConfig:
    """`to_dict()` / `from_dict()` for a dataclass; unknown keys are a clear error."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})
