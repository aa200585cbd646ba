"""The `Robot` interface every driver implements, with the safety filter built in."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

import numpy as np

from robolearn.hardware.safety import SafetyFilter, SafetyLimits


@dataclass
class RobotObservation:
    """One reading of a robot.

    Attributes:
        timestamp: when the reading was taken, s (the robot's clock: monotonic or simulated).
        joint_pos: (n_joints,) rad, in `Robot.joint_names` order (the gripper jaw last).
        joint_vel: (n_joints,) rad/s.
        extras: further task observations (e.g. the simulator's cube pose), name -> array.
        images: camera frames, name -> (H, W, 3) uint8.
        image_stamps: when each frame was captured, name -> s (the same clock as `timestamp`).
        success: whether the scene's task is done (a simulated scene's success test), None where the robot
            cannot tell (real hardware).
    """

    timestamp: float
    joint_pos: np.ndarray
    joint_vel: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    image_stamps: dict[str, float] = field(default_factory=dict)
    success: bool | None = None


class RobotError(RuntimeError):
    """A robot is not connected, or its hardware reported a fault."""


class Robot(abc.ABC):
    """A position-controlled arm: connect, read, send joint targets (through the safety filter), stop.

    Subclasses implement `_connect`, `_disconnect`, `_read` and `_write`, and set
    `joint_names` and `limits`. `send` and `tick` return what was actually sent.
    """

    joint_names: tuple[str, ...]
    limits: SafetyLimits

    def __init__(self, watchdog_timeout: float = 0.25):
        self.safety = SafetyFilter(self.limits, watchdog_timeout=watchdog_timeout)
        self.connected = False

    # -- to implement ------------------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> None: ...

    @abc.abstractmethod
    def _disconnect(self) -> None: ...

    @abc.abstractmethod
    def _read(self) -> RobotObservation: ...

    @abc.abstractmethod
    def _write(self, command: np.ndarray) -> None: ...

    def now(self) -> float:
        """The robot's clock, s."""
        return time.monotonic()

    # -- the interface -----------------------------------------------------------------
    def connect(self) -> Robot:
        if not self.connected:
            self._connect()
            self.connected = True
            self.safety.reset(self._read().joint_pos, self.now())
        return self

    def disconnect(self) -> None:
        if self.connected:
            self._disconnect()
            self.connected = False

    def __enter__(self) -> Robot:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def _require(self) -> None:
        if not self.connected:
            raise RobotError(f"{type(self).__name__} is not connected; call connect() first")

    def read(self) -> RobotObservation:
        self._require()
        return self._read()

    def send(self, target) -> np.ndarray:
        """Send joint position targets (n_joints,) rad; returns the command after the safety filter."""
        self._require()
        command = self.safety.filter(target, self.now())
        self._write(command)
        return command

    def tick(self) -> np.ndarray:
        """A control tick with no new target: repeat, or hold if the watchdog fired or a stop latched."""
        self._require()
        command = self.safety.tick(self.now(), self._read().joint_pos)
        self._write(command)
        return command

    def stop(self) -> np.ndarray:
        """Latch a stop (hold the current position) until `reset_stop()`."""
        self._require()
        self.safety.stop()
        return self.tick()

    def reset_stop(self) -> None:
        self._require()
        self.safety.reset_stop(self._read().joint_pos, self.now())
