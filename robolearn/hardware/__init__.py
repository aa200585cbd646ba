"""Hardware: the `Robot` interface and its safety layer, the simulated `MujocoRobot`, Feetech and
Dynamixel bus arms (`bus_arm`), cameras, and teleoperation devices (`teleop`)."""

from robolearn.hardware.camera import OpenCVCamera
from robolearn.hardware.mujoco_robot import MujocoRobot
from robolearn.hardware.robot import Robot, RobotError, RobotObservation
from robolearn.hardware.safety import SafetyFilter, SafetyLimits

__all__ = ["MujocoRobot", "OpenCVCamera", "Robot", "RobotError", "RobotObservation", "SafetyFilter", "SafetyLimits"]
