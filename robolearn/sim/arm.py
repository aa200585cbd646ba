"""The robolearn desktop arm (SO-101 class): model file, joint names and limits.

This module is the single source of the arm's joint names and limits: the Lift
simulation, the scripted expert and the hardware drivers all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import mujoco
import numpy as np

#: Actuated joints, in action order. Units: rad.
JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",   # base yaw
    "shoulder_lift",  # shoulder pitch
    "elbow_flex",     # elbow pitch
    "wrist_flex",     # wrist pitch
    "wrist_roll",     # wrist roll
    "gripper",        # jaw angle, 0 = closed, positive opens
)

#: The five joints that place the gripper (everything but the jaw).
ARM_JOINT_NAMES: tuple[str, ...] = JOINT_NAMES[:5]

MODEL_FILE = "so101_lift.xml"


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits of the arm, in `JOINT_NAMES` order.

    Attributes:
        lower, upper: position limits, shape (6,), rad.
        max_velocity: speed limits, shape (6,), rad/s (STS3215-class servos).
        max_effort: torque limits, shape (6,), N*m.
    """

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_effort: np.ndarray


def model_path() -> str:
    """Return the filesystem path of the packaged MJCF scene (arm, table, 3 cm cube)."""
    return str(resources.files("robolearn.sim") / "assets" / MODEL_FILE)


def load_model() -> mujoco.MjModel:
    """Compile the packaged Lift scene. Raises `ValueError` from MuJoCo if the file is broken."""
    return mujoco.MjModel.from_xml_path(model_path())


def joint_limits(model: mujoco.MjModel | None = None) -> JointLimits:
    """Read the actuated joints' limits from the MJCF model (the one source of truth)."""
    model = load_model() if model is None else model
    lower, upper, effort = [], [], []
    for name in JOINT_NAMES:
        act = model.actuator(name)
        lower.append(act.ctrlrange[0])
        upper.append(act.ctrlrange[1])
        effort.append(act.forcerange[1])
    # STS3215 at 12 V: about 0.16 s per 60 deg unloaded, i.e. ~6.5 rad/s; we keep a margin.
    velocity = np.array([4.0, 4.0, 4.0, 5.0, 6.0, 6.0])
    return JointLimits(np.array(lower), np.array(upper), velocity, np.array(effort))
