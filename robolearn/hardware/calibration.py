"""Per-joint servo calibration (homing offset, range, direction) and tick <-> rad conversion."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from robolearn.sim.arm import JOINT_NAMES


@dataclass(frozen=True)
class JointCalibration:
    """Calibration of one joint's servo.

    Attributes:
        servo_id: bus ID.
        homing_offset: raw ticks where the joint is at 0 rad (the arm model's zero pose).
        range_min, range_max: raw ticks of the mechanical range; commands are clipped to it.
        direction: +1 if positive ticks turn the joint in the model's positive direction, else -1.
    """

    servo_id: int
    homing_offset: int
    range_min: int
    range_max: int
    direction: int = 1

    def __post_init__(self):
        if self.direction not in (1, -1):
            raise ValueError(f"servo {self.servo_id}: direction must be 1 or -1, got {self.direction}")
        if not self.range_min < self.range_max:
            raise ValueError(f"servo {self.servo_id}: range_min {self.range_min} must be < range_max {self.range_max}")
        if not self.range_min <= self.homing_offset <= self.range_max:
            raise ValueError(f"servo {self.servo_id}: homing_offset {self.homing_offset} outside "
                             f"[{self.range_min}, {self.range_max}]")


class ArmCalibration:
    """Calibration of every joint in `JOINT_NAMES`, stored as YAML under `hardware/` configs.

    Conversion (ticks_per_turn ticks per revolution):
        rad   = direction * (ticks - homing_offset) * 2 pi / ticks_per_turn
        ticks = clip(round(homing_offset + direction * rad * ticks_per_turn / (2 pi)), range_min, range_max)
    """

    def __init__(self, joints: dict[str, JointCalibration], ticks_per_turn: int = 4096):
        missing = [j for j in JOINT_NAMES if j not in joints]
        if missing:
            raise ValueError(f"calibration lacks joints {missing}; it needs {list(JOINT_NAMES)}")
        ids = [joints[j].servo_id for j in JOINT_NAMES]
        if len(set(ids)) != len(ids):
            raise ValueError(f"calibration assigns one servo ID to several joints: {ids}")
        self.joints, self.ticks_per_turn = {j: joints[j] for j in JOINT_NAMES}, ticks_per_turn
        self._offset = np.array([joints[j].homing_offset for j in JOINT_NAMES], dtype=float)
        self._dir = np.array([joints[j].direction for j in JOINT_NAMES], dtype=float)
        self._lo = np.array([joints[j].range_min for j in JOINT_NAMES])
        self._hi = np.array([joints[j].range_max for j in JOINT_NAMES])
        self._scale = 2 * math.pi / ticks_per_turn

    @property
    def servo_ids(self) -> list[int]:
        return [self.joints[j].servo_id for j in JOINT_NAMES]

    def to_rad(self, ticks) -> np.ndarray:
        """Raw ticks (6,) -> joint positions (6,) rad."""
        return self._dir * (np.asarray(ticks, dtype=float) - self._offset) * self._scale

    def to_ticks(self, rad) -> np.ndarray:
        """Joint positions (6,) rad -> raw ticks (6,) int, clipped to each servo's range."""
        ticks = np.rint(self._offset + self._dir * np.asarray(rad, dtype=float) / self._scale)
        return np.clip(ticks, self._lo, self._hi).astype(int)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ArmCalibration:
        """Read a calibration YAML: {ticks_per_turn, joints: {name: {servo_id, homing_offset, ...}}}.

        Raises FileNotFoundError or ValueError (naming the joint) on a bad file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        try:
            joints = {name: JointCalibration(**spec) for name, spec in data["joints"].items()}
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: expected `joints: {{name: {{servo_id, homing_offset, range_min, "
                             f"range_max, direction}}}}` ({exc})") from exc
        return cls(joints, int(data.get("ticks_per_turn", 4096)))

    def save(self, path: str | os.PathLike) -> None:
        data = {"ticks_per_turn": self.ticks_per_turn, "joints": {j: asdict(c) for j, c in self.joints.items()}}
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
