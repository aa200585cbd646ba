"""Type and range checks for hydra config values, so a bad override is a one-line error naming it.

    check_config(cfg, {"training.steps": Int(min=1), "training.lr": Float(min=0, min_open=True)})

raises `UserError("training.steps='abc': expected an integer >= 1")` for `training.steps=abc`.
Keys absent from the config are skipped (a policy without `num_inference_steps`, say).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robolearn.errors import UserError

_MISSING = object()


def finite_number(value) -> float | None:
    """`value` as a float if it is a finite real number (a Python or numpy int or float, not a bool, not
    text), else None. The one test behind every "must be a finite number" check in robolearn."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Int:
    """An integer (not a bool) in [min, max]; `optional` also admits null."""

    min: int | None = None
    max: int | None = None
    optional: bool = False

    def problem(self, value) -> str | None:
        if value is None:
            return None if self.optional else "expected an integer, got null"
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer{_range(self.min, self.max)}"
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return f"expected an integer{_range(self.min, self.max)}"
        return None


@dataclass(frozen=True)
class Float:
    """A finite number in [min, max] (`min_open`: strictly above min); `optional` also admits null."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    optional: bool = False

    def problem(self, value) -> str | None:
        if value is None:
            return None if self.optional else "expected a number, got null"
        expected = f"expected a finite number{_range(self.min, self.max, self.min_open)}"
        if finite_number(value) is None:
            return expected
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            return expected
        if self.max is not None and value > self.max:
            return expected
        return None


@dataclass(frozen=True)
class Bool:
    """true or false."""

    def problem(self, value) -> str | None:
        return None if isinstance(value, bool) else "expected true or false"


def _range(lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_config(cfg: DictConfig, rules: dict[str, Int | Float | Bool]) -> None:
    """Check each dotted key of `cfg` against its rule.

    Raises:
        UserError: the first key whose value breaks its rule, e.g. "training.steps='abc': expected an
            integer >= 1".
    """
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        problem = rule.problem(value)
        if problem:
            raise UserError(f"{key}={value!r}: {problem}")
