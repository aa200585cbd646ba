"""Simulation: the desktop arm in MuJoCo, the `robolearn/Lift-v0` task and its scripted expert."""

import gymnasium as gym

from robolearn.sim.arm import JOINT_NAMES, joint_limits, load_model, model_path
from robolearn.sim.expert import LiftExpert
from robolearn.sim.lift import LiftEnv

LIFT_ENV_ID = "robolearn/Lift-v0"

if LIFT_ENV_ID not in gym.registry:
    gym.register(LIFT_ENV_ID, entry_point="robolearn.sim.lift:LiftEnv")

__all__ = ["JOINT_NAMES", "LIFT_ENV_ID", "LiftEnv", "LiftExpert", "joint_limits", "load_model", "model_path"]
