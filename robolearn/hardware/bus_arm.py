"""`BusArm`: a 6-joint arm on a Feetech or Dynamixel servo bus, behind the `Robot` interface."""

from __future__ import annotations

import time

import numpy as np

from robolearn.hardware.bus import DynamixelBus, FeetechBus, ServoBus
from robolearn.hardware.calibration import ArmCalibration
from robolearn.hardware.robot import Robot, RobotError, RobotObservation
from robolearn.hardware.safety import SafetyLimits
from robolearn.sim.arm import JOINT_NAMES, joint_limits

#: the value of operating_mode that selects position control
POSITION_MODE = {FeetechBus: 0, DynamixelBus: 3}


def _signed(value: int, nbytes: int) -> int:
    bits = 8 * nbytes
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


class BusArm(Robot):
    """An SO-101 (Feetech STS3215) or Koch-style (Dynamixel XL330/XL430) arm.

    Joint names and limits are those of the arm model (`robolearn.sim.arm`); positions go
    through `calibration` (ticks <-> rad). On connect every servo is pinged, set to position
    mode and torque-enabled; positions are read and written with sync read/write.

    Args:
        bus: an unopened `FeetechBus` or `DynamixelBus`.
        calibration: per-joint calibration.
        torque_off_on_disconnect: release the servos when disconnecting (the arm goes limp).
        read_only: never enable torque or write (a leader arm for teleoperation).
        cameras: name -> `OpenCVCamera`, read into `RobotObservation.images` (optional).

    Raises:
        RobotError: a servo does not answer on connect (naming the joint and ID).
        BusError / ServoError: port problems, or a servo's error status, while running.
    """

    joint_names = JOINT_NAMES

    def __init__(self, bus: ServoBus, calibration: ArmCalibration, torque_off_on_disconnect: bool = True,
                 read_only: bool = False, watchdog_timeout: float = 0.25, cameras: dict | None = None):
        self.limits = SafetyLimits.from_joint_limits(joint_limits())
        super().__init__(watchdog_timeout=watchdog_timeout)
        self.bus, self.calibration = bus, calibration
        self.torque_off_on_disconnect, self.read_only = torque_off_on_disconnect, read_only
        self._ids = calibration.servo_ids
        self._regs = type(bus).REGISTERS
        self._last: tuple[float, np.ndarray] | None = None
        self.cameras = dict(cameras or {})

    def _reg(self, name: str) -> tuple[int, int]:
        return self._regs[name]

    def _set_all(self, name: str, value: int) -> None:
        self.bus.sync_write(*self._reg(name), {sid: value for sid in self._ids})

    def _connect(self) -> None:
        self.bus.open()
        missing = [f"{j} (ID {sid})" for j, sid in zip(JOINT_NAMES, self._ids) if not self.bus.ping(sid)]
        if missing:
            self.bus.close()
            raise RobotError(f"servos not answering on {self.bus.port_name}: {', '.join(missing)}")
        if not self.read_only:
            self._set_all("torque_enable", 0)  # the mode can only change with torque off
            self._set_all("operating_mode", POSITION_MODE[type(self.bus)])
            self._set_all("torque_enable", 1)
        for camera in self.cameras.values():
            camera.connect()

    def _disconnect(self) -> None:
        for camera in self.cameras.values():
            camera.disconnect()
        if self.torque_off_on_disconnect and not self.read_only:
            self._set_all("torque_enable", 0)
        self.bus.close()

    def _read(self) -> RobotObservation:
        addr, n = self._reg("present_position")
        raw = self.bus.sync_read(self._ids, addr, n)
        q = self.calibration.to_rad([_signed(raw[sid], n) for sid in self._ids])
        now = time.monotonic()
        vel = np.zeros_like(q) if self._last is None else (q - self._last[1]) / max(now - self._last[0], 1e-6)
        self._last = (now, q)
        frames = {name: camera.read() for name, camera in self.cameras.items()}
        return RobotObservation(timestamp=now, joint_pos=q, joint_vel=vel,
                                images={name: frame for name, (_, frame) in frames.items()},
                                image_stamps={name: taken for name, (taken, _) in frames.items()})

    def _write(self, command: np.ndarray) -> None:
        if self.read_only:
            return
        addr, n = self._reg("goal_position")
        ticks = self.calibration.to_ticks(command)
        self.bus.sync_write(addr, n, {sid: int(t) & ((1 << (8 * n)) - 1) for sid, t in zip(self._ids, ticks)})
