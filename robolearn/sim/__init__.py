"""Simulation: the desktop arm in MuJoCo (`robolearn/Lift-v0`), Push-T (`robolearn/PushT-v0`), their scripted
experts and rollouts. The envs register with gymnasium from their task yamls (`robolearn.registration`);
importing this package registers them too (for a source checkout that was not installed). The MuJoCo
modules load on first use, so rollouts of another task never import MuJoCo."""

from importlib import import_module

from robolearn.registration import register_envs

LIFT_ENV_ID = "robolearn/Lift-v0"
_LAZY = {"JOINT_NAMES": "robolearn.sim.arm", "joint_limits": "robolearn.sim.arm", "load_model": "robolearn.sim.arm",
         "model_path": "robolearn.sim.arm", "LiftExpert": "robolearn.sim.expert", "LiftEnv": "robolearn.sim.lift"}

register_envs()


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robolearn.sim' has no attribute {name!r}")


__all__ = ["JOINT_NAMES", "LIFT_ENV_ID", "LiftEnv", "LiftExpert", "joint_limits", "load_model", "model_path"]
