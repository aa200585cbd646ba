"""`MujocoRobot`: the Lift arm in MuJoCo behind the `Robot` interface (a stand-in for hardware). Its readings
carry the Lift scene's success test (`RobotObservation.success`), so drivers and devices need not know it."""

from __future__ import annotations

import math
import time
from collections import deque

import mujoco
import numpy as np

from robolearn.hardware.robot import Robot, RobotObservation
from robolearn.hardware.safety import SafetyLimits
from robolearn.sim.arm import JOINT_NAMES, joint_limits
from robolearn.sim.lift import (
    CUBE_HALF_SIZE,
    HOME_QPOS,
    SPAWN_X,
    SPAWN_Y,
    camera_scene_option,
    cube_lifted,
    gripper_opening,
)
from robolearn.sim.world import WorldModel, as_world, flat_values, load_model_for


class MujocoRobot(Robot):
    """The simulated desktop arm, paced in real time or in virtual time.

    Args:
        realtime: True: the simulation follows the wall clock (physics is advanced to "now"
            whenever the robot is read or commanded). False: virtual time that advances by
            one control period (1 / control_hz) per `send`/`tick`, for fast tests.
        control_hz: the control rate of virtual time, Hz.
        world: a `robolearn.sim.world.World` or world config mapping (None: nominal): sampled at every scene
            reset (physics, the cube, the look, `action_delay` as MuJoCo's actuator delay, sensor noise and
            offsets; `obs_delay`: joint and cube readings are that old, camera frames are current; the real
            clock supplies the control jitter). The values are in `world_values` after each reset.
        seed: for the cube pose, the world's values and the sensor noise.
        cube_markers: put ArUco markers on the cube's faces (`robolearn.sim.markers`), for a marker camera.
        watchdog_timeout: see `SafetyFilter`.
        cameras: name of a camera in the model ("front", "top", "wrist") -> (height, width) px;
            rendered off-screen into `RobotObservation.images` on every read.
    """

    joint_names = JOINT_NAMES

    def __init__(self, realtime: bool = True, control_hz: float = 20.0, world=None, seed: int = 0,
                 watchdog_timeout: float = 0.25, cameras: dict[str, tuple[int, int]] | None = None,
                 cube_markers: bool = False):
        world = as_world(world)
        self.model = load_model_for(world, cube_markers=cube_markers)
        self.limits = SafetyLimits.from_joint_limits(joint_limits(self.model))
        super().__init__(watchdog_timeout=watchdog_timeout)
        self.world = None if world.is_nominal else WorldModel(world, self.model, 1.0 / control_hz)
        self.world_values: dict[str, float] = {}
        self.data = mujoco.MjData(self.model)
        self.realtime, self.dt = realtime, 1.0 / control_hz
        self.rng = np.random.default_rng(seed)
        self._qpos = np.array([self.model.joint(j).qposadr[0] for j in JOINT_NAMES])
        self._qvel = np.array([self.model.joint(j).dofadr[0] for j in JOINT_NAMES])
        self._cube = self.model.joint("cube_joint").qposadr[0]
        self._readings: deque = deque()  # (time, qpos) of the last obs_delay s, when the world delays readings
        self.camera_sizes = dict(cameras or {})
        self._renderers: dict[str, mujoco.Renderer] = {}
        self._scene_option = camera_scene_option()  # as robolearn/Lift-v0 renders its observations
        self._wall0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self._wall0 if self.realtime else self.data.time

    def _connect(self) -> None:
        self._place_scene()
        self._wall0 = time.monotonic()

    @property
    def cube_half_size(self) -> float:
        """Half the cube's edge in this episode, m."""
        return CUBE_HALF_SIZE if self.world is None else self.world.cube_half_size

    def _place_scene(self, start_time: float = 0.0) -> None:
        yaw = self.rng.uniform(-np.pi, np.pi)
        xy = (self.rng.uniform(*SPAWN_X), self.rng.uniform(*SPAWN_Y))
        if self.world is not None:  # mj_setConst uses the data as scratch, so before the state is set
            self.world_values = flat_values(self.world.sample(self.rng))
            mujoco.mj_setConst(self.model, self.data)
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key("home").id)
        self.data.time = start_time  # (before the ctrl history is filled: its samples are stamped)
        self.data.qpos[self._cube:self._cube + 3] = (*xy, self.cube_half_size)
        self.data.qpos[self._cube + 3:self._cube + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.data.ctrl[:] = HOME_QPOS
        if self.world is not None:
            self.world.init_ctrl_history(self.data)
        self._readings.clear()
        mujoco.mj_forward(self.model, self.data)

    def reset_scene(self, seed: int | None = None) -> None:
        """Put the arm home and the cube at a new random pose (simulation only), as between episodes."""
        self._require()
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._place_scene(start_time=self.data.time)  # the clock keeps running
        self.safety.reset(self._read().joint_pos, self.now())

    def _disconnect(self) -> None:
        self._readings.clear()
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def _render(self, name: str) -> np.ndarray:
        if name not in self._renderers:
            self._renderers[name] = mujoco.Renderer(self.model, *self.camera_sizes[name])
        self._renderers[name].update_scene(self.data, name, scene_option=self._scene_option)
        return self._renderers[name].render()

    def _advance_to(self, t: float) -> None:
        """Step physics to time t (s); the world's actuator delay applies the commands late."""
        delay = float(self.world.values["obs_delay"][0]) if self.world is not None else 0.0
        if not delay:
            nstep = math.ceil((t - self.data.time) / self.model.opt.timestep - 1e-6)
            if nstep > 0:
                mujoco.mj_step(self.model, self.data, nstep=nstep)
            return
        while self.data.time < t - 1e-9:
            mujoco.mj_step(self.model, self.data)
            self._readings.append((self.data.time, self.data.qpos.copy()))
        while len(self._readings) > 1 and self._readings[1][0] <= self.data.time - delay + 1e-9:
            self._readings.popleft()

    def _read(self) -> RobotObservation:
        if self.realtime:
            self._advance_to(self.now())
        qpos = self._readings[0][1] if self._readings else self.data.qpos
        q, cube_pos, cube_quat = qpos[self._qpos].copy(), qpos[self._cube:self._cube + 3].copy(), \
            qpos[self._cube + 3:self._cube + 7].copy()
        if self.world is not None:
            q, cube_pos, cube_quat = self.world.measure(q, cube_pos, cube_quat, self.rng)
        return RobotObservation(
            timestamp=float(self.data.time), joint_pos=q, joint_vel=self.data.qvel[self._qvel].copy(),
            extras={"gripper_opening": np.array([gripper_opening(self.model, self.data)]),
                    "cube_pos": cube_pos, "cube_quat": cube_quat},
            images={name: self._render(name) for name in self.camera_sizes},
            image_stamps=dict.fromkeys(self.camera_sizes, float(self.data.time)),
            success=cube_lifted(self.data.qpos[self._cube + 2], self.cube_half_size))

    def _write(self, command: np.ndarray) -> None:
        self.data.ctrl[:] = command
        self._advance_to(self.now() if self.realtime else self.data.time + self.dt)
