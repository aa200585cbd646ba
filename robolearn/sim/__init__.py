"""Simulation: the desktop arm in MuJoCo (`robolearn/Lift-v0`), Push-T (`robolearn/PushT-v0`), their scripted
experts and rollouts. The envs register with gymnasium from their task yamls (`robolearn.registration`);
importing this package registers them too (for a source checkout that was not installed)."""

from robolearn.registration import register_envs
from robolearn.sim.arm import JOINT_NAMES, joint_limits, load_model, model_path
from robolearn.sim.expert import LiftExpert
from robolearn.sim.lift import LiftEnv

LIFT_ENV_ID = "robolearn/Lift-v0"

register_envs()

__all__ = ["JOINT_NAMES", "LIFT_ENV_ID", "LiftEnv", "LiftExpert", "joint_limits", "load_model", "model_path"]
