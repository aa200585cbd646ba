"""Hardware: the `Robot` interface, its safety layer, and the simulated `MujocoRobot`.

Bus drivers (Feetech, Dynamixel) and teleoperation devices arrive with issue 6.
"""

from robolearn.hardware.mujoco_robot import MujocoRobot
from robolearn.hardware.robot import Robot, RobotError, RobotObservation
from robolearn.hardware.safety import SafetyFilter, SafetyLimits

__all__ = ["MujocoRobot", "Robot", "RobotError", "RobotObservation", "SafetyFilter", "SafetyLimits"]
