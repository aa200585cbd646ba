"""`MujocoRobot`: the Lift arm in MuJoCo behind the `Robot` interface (a stand-in for hardware). Its readings
carry the Lift scene's success test (`RobotObservation.success`), so drivers and devices need not know it."""

from __future__ import annotations

import time
from collections import deque

import mujoco
import numpy as np

from robolearn.hardware.robot import Robot, RobotObservation
from robolearn.hardware.safety import SafetyLimits
from robolearn.sim.arm import JOINT_NAMES, joint_limits, load_model
from robolearn.sim.lift import (
    HOME_QPOS,
    SPAWN_X,
    SPAWN_Y,
    camera_scene_option,
    cube_lifted,
    gripper_opening,
)


class MujocoRobot(Robot):
    """The simulated desktop arm, paced in real time or in virtual time.

    Args:
        realtime: True: the simulation follows the wall clock (physics is advanced to "now"
            whenever the robot is read or commanded). False: virtual time that advances by
            one control period (1 / control_hz) per `send`/`tick`, for fast tests.
        control_hz: the control rate of virtual time, Hz.
        joint_noise: std of Gaussian noise on measured joint positions, rad.
        command_latency: delay before a command reaches the servos, s.
        mass_scale, damping_scale: multiply every body mass / joint damping (perturbed dynamics).
        seed: for the noise and the initial cube pose.
        watchdog_timeout: see `SafetyFilter`.
        cameras: name of a camera in the model ("front", "top", "wrist") -> (height, width) px;
            rendered off-screen into `RobotObservation.images` on every read.
    """

    joint_names = JOINT_NAMES

    def __init__(self, realtime: bool = True, control_hz: float = 20.0, joint_noise: float = 0.0,
                 command_latency: float = 0.0, mass_scale: float = 1.0, damping_scale: float = 1.0, seed: int = 0,
                 watchdog_timeout: float = 0.25, cameras: dict[str, tuple[int, int]] | None = None):
        self.model = load_model()
        self.limits = SafetyLimits.from_joint_limits(joint_limits(self.model))
        super().__init__(watchdog_timeout=watchdog_timeout)
        self.model.body_mass[:] *= mass_scale
        self.model.dof_damping[:] *= damping_scale
        self.data = mujoco.MjData(self.model)
        self.realtime, self.dt = realtime, 1.0 / control_hz
        self.joint_noise, self.command_latency = joint_noise, command_latency
        self.rng = np.random.default_rng(seed)
        self._qpos = np.array([self.model.joint(j).qposadr[0] for j in JOINT_NAMES])
        self._qvel = np.array([self.model.joint(j).dofadr[0] for j in JOINT_NAMES])
        self._cube = self.model.joint("cube_joint").qposadr[0]
        self._pending: deque = deque()  # (time due, command) for latency
        self.camera_sizes = dict(cameras or {})
        self._renderers: dict[str, mujoco.Renderer] = {}
        self._scene_option = camera_scene_option()  # as robolearn/Lift-v0 renders its observations
        self._wall0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self._wall0 if self.realtime else self.data.time

    def _connect(self) -> None:
        self._place_scene()
        self._wall0 = time.monotonic()

    def _place_scene(self) -> None:
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key("home").id)
        yaw = self.rng.uniform(-np.pi, np.pi)
        self.data.qpos[self._cube:self._cube + 2] = (self.rng.uniform(*SPAWN_X), self.rng.uniform(*SPAWN_Y))
        self.data.qpos[self._cube + 3:self._cube + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.data.ctrl[:] = HOME_QPOS
        self._pending.clear()
        mujoco.mj_forward(self.model, self.data)

    def reset_scene(self, seed: int | None = None) -> None:
        """Put the arm home and the cube at a new random pose (simulation only), as between episodes."""
        self._require()
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        t = self.data.time
        self._place_scene()
        self.data.time = t  # the clock keeps running
        self.safety.reset(self._read().joint_pos, self.now())

    def _disconnect(self) -> None:
        self._pending.clear()
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def _render(self, name: str) -> np.ndarray:
        if name not in self._renderers:
            self._renderers[name] = mujoco.Renderer(self.model, *self.camera_sizes[name])
        self._renderers[name].update_scene(self.data, name, scene_option=self._scene_option)
        return self._renderers[name].render()

    def _advance_to(self, t: float) -> None:
        """Step physics to time t (s), applying latency-delayed commands when they fall due."""
        while self.data.time < t - 1e-9:
            while self._pending and self._pending[0][0] <= self.data.time + 1e-9:
                self.data.ctrl[:] = self._pending.popleft()[1]
            mujoco.mj_step(self.model, self.data)

    def _read(self) -> RobotObservation:
        if self.realtime:
            self._advance_to(self.now())
        q = self.data.qpos[self._qpos].copy()
        if self.joint_noise:
            q += self.rng.normal(0.0, self.joint_noise, q.shape)
        return RobotObservation(
            timestamp=float(self.data.time), joint_pos=q, joint_vel=self.data.qvel[self._qvel].copy(),
            extras={"gripper_opening": np.array([gripper_opening(self.model, self.data)]),
                    "cube_pos": self.data.qpos[self._cube:self._cube + 3].copy(),
                    "cube_quat": self.data.qpos[self._cube + 3:self._cube + 7].copy()},
            images={name: self._render(name) for name in self.camera_sizes},
            image_stamps=dict.fromkeys(self.camera_sizes, float(self.data.time)),
            success=cube_lifted(self.data.qpos[self._cube + 2]))

    def _write(self, command: np.ndarray) -> None:
        self._pending.append((self.data.time + self.command_latency, command.copy()))
        self._advance_to(self.now() if self.realtime else self.data.time + self.dt)
