"""`robolearn/Lift-v0`: pick up a 3 cm cube with the desktop arm (MuJoCo, gymnasium API)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from robolearn.sim.arm import JOINT_NAMES
from robolearn.sim.world import World, WorldModel, as_world, flat_values, load_model_for

CUBE_HALF_SIZE = 0.015  # m
TABLE_TOP_Z = 0.0  # m, world z of the table surface
LIFT_HEIGHT = 0.05  # m, cube bottom above the table for success
#: Cube spawn region (m, world frame; the arm base is at the origin, facing +x).
SPAWN_X = (0.14, 0.24)
SPAWN_Y = (-0.10, 0.10)
HOME_QPOS = np.array([0.0, 0.0, np.pi / 2, np.pi / 2, 0.0, 0.6])  # rad, gripper open
#: The scene's cameras; the model disables shadows and multisampling, which makes CPU rendering ~20x faster.
CAMERAS = ("front", "wrist", "top", "marker")
DEFAULT_CAMERAS = ("front", "wrist")


def camera_scene_option() -> mujoco.MjvOption:
    """What the cameras render: everything but sites (markers such as the grasp point, which a real camera
    does not see). The env's observations and the simulated robot's camera topics use the same."""
    option = mujoco.MjvOption()
    option.sitegroup[:] = 0
    return option


def image_key(camera: str) -> str:
    """The observation key of camera `camera`'s images, e.g. "front" -> "front_image"."""
    return f"{camera}_image"


def cube_lifted(cube_z: float, half_size: float = CUBE_HALF_SIZE) -> bool:
    """The task's success condition: the cube's bottom at least `LIFT_HEIGHT` (5 cm) above the table,
    from the cube's centre height `cube_z` (m, world frame) and half its edge `half_size` (m)."""
    return bool(cube_z - half_size - TABLE_TOP_Z >= LIFT_HEIGHT)


def gripper_opening(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """Distance between the inner faces of the two jaw pads, m (0 when closed)."""
    left, right = model.geom("pad_left"), model.geom("pad_right")
    gap = float(np.linalg.norm(data.geom_xpos[left.id] - data.geom_xpos[right.id]))
    return max(0.0, gap - left.size[0] - right.size[0])


class LiftEnv(gym.Env):
    """Lift a cube at least 5 cm above the table.

    The cube spawns at a uniformly random position in `SPAWN_X` x `SPAWN_Y` (m) with a
    uniformly random yaw; the arm starts at the home pose plus uniform noise of
    +-`init_noise` rad.

    Observation (a dict; float32 unless noted):
        joint_pos (6,): actuated joint positions, rad, in `JOINT_NAMES` order.
        gripper_opening (1,): distance between the jaw pads, m.
        cube_pos (3,): cube centre, m, world frame.
        cube_quat (4,): cube orientation, unit quaternion (w, x, y, z).
        <camera>_image (H, W, 3) uint8: one per camera in `cameras` (e.g. `front_image`, `wrist_image`),
            rendered off-screen after the step, `image_size` px.
    Action (6,): absolute joint position targets, rad, for the six position servos;
        values outside the servo ranges are clipped. Non-finite values raise ValueError.
    Reward: 1.0 on the step where the cube is lifted (sparse), else 0.0;
        `info["is_success"]` is the same condition as a bool.
    Termination on success; truncation after `max_episode_seconds` (default 10 s).
    Control runs at `control_hz` (20 Hz) over a 500 Hz physics step (0.002 s), i.e. 25
    physics steps per action: fast enough for stable stiff grasp contacts, and the
    control rate of the hardware drivers.

    World (`robolearn.sim.world`): each reset samples the world's parameters (physics, the cube, latency,
    sensor noise and offsets, the look of the scene) from a generator seeded by the reset's generator after the
    cube's pose and the arm's noise are drawn, so a seed spawns the same scene in every world. The values are
    in `info["world"]` ({name: value}) after each reset. Observations then carry the world's sensor noise and
    delay; the success test uses the true cube pose.

    Args:
        render_mode: None or "rgb_array" (off-screen; works on a CPU with MUJOCO_GL=egl/osmesa).
        cameras: cameras rendered into the observation, from `CAMERAS` ("front": fixed third-person view of
            the workspace, "wrist": on the gripper palm, looking between the jaws, "top": overhead, "marker": the
            cube's markers from the front right, for `robolearn.ros.marker_node`).
        image_obs: shorthand for `cameras=DEFAULT_CAMERAS` (front and wrist) when `cameras` is not given.
        image_size: (height, width) of the observation images, px.
        render_size: (height, width) of `render()` frames, px.
        render_camera: camera for `render()`.
        control_hz: control rate, Hz; must divide the 500 Hz physics rate.
        max_episode_seconds: truncation time, s.
        init_noise: half-width of the uniform noise on the initial joint positions, rad.
        world: a `World` or a world config mapping (configs/world/<name>.yaml); None: the nominal world.
        cube_markers: ArUco markers on the cube's faces (`robolearn.sim.markers`; seen by the "marker" camera).

    Raises:
        ValueError: a bad argument, or a world that does not fit the control period (`WorldModel`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, cameras: Sequence[str] | None = None,
                 image_obs: bool = False, image_size: tuple[int, int] = (96, 96),
                 render_size: tuple[int, int] = (240, 320), render_camera: str = "front",
                 control_hz: int = 20, max_episode_seconds: float = 10.0, init_noise: float = 0.02,
                 world: World | Mapping | None = None, cube_markers: bool = False):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        world = as_world(world)
        self.model = load_model_for(world, cube_markers=cube_markers)
        physics_hz = round(1.0 / self.model.opt.timestep)
        if control_hz <= 0 or physics_hz % control_hz:
            raise ValueError(f"control_hz must divide the physics rate {physics_hz} Hz, got {control_hz}")
        self.data = mujoco.MjData(self.model)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": control_hz}
        self.frame_skip = physics_hz // control_hz
        self.world = None if world.is_nominal else WorldModel(world, self.model, 1.0 / control_hz)
        self._world_rng = np.random.default_rng(0)
        self.max_episode_steps = int(round(max_episode_seconds * control_hz))
        self.init_noise = init_noise
        self.cameras = tuple(cameras if cameras is not None else (DEFAULT_CAMERAS if image_obs else ()))
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"cameras must be among {list(CAMERAS)}, got {unknown}")
        self.image_size = tuple(int(v) for v in image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (height, width) of at least 8 px, got {image_size}")
        self.render_size = tuple(render_size)
        self.render_camera = render_camera
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._scene_option = camera_scene_option()

        self._qpos_adr = np.array([self.model.joint(j).qposadr[0] for j in JOINT_NAMES])
        self._mirror_adr = self.model.joint("gripper_mirror").qposadr[0]
        self._cube_adr = self.model.joint("cube_joint").qposadr[0]
        self.action_low = self.model.actuator_ctrlrange[:, 0].astype(np.float32)
        self.action_high = self.model.actuator_ctrlrange[:, 1].astype(np.float32)

        obs_spaces = {
            "joint_pos": spaces.Box(-np.pi, np.pi, (6,), np.float32),
            "gripper_opening": spaces.Box(0.0, 0.2, (1,), np.float32),
            "cube_pos": spaces.Box(-2.0, 2.0, (3,), np.float32),
            "cube_quat": spaces.Box(-1.0, 1.0, (4,), np.float32),
        }
        for camera in self.cameras:
            obs_spaces[image_key(camera)] = spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(self.action_low, self.action_high, dtype=np.float32)
        self._steps = 0

    # -- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        q = HOME_QPOS + rng.uniform(-self.init_noise, self.init_noise, size=6)
        q = np.clip(q, self.action_low, self.action_high)
        x, y = rng.uniform(*SPAWN_X), rng.uniform(*SPAWN_Y)
        yaw = rng.uniform(-np.pi, np.pi)
        info = {"is_success": False}
        if self.world is not None:  # mj_setConst uses the data as scratch, so before the state is set
            self._world_rng = np.random.default_rng(rng.integers(2**63))
            info["world"] = flat_values(self.world.sample(self._world_rng))
            mujoco.mj_setConst(self.model, self.data)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qpos_adr] = q
        self.data.qpos[self._mirror_adr] = q[5]
        self.data.ctrl[:] = q
        if self.world is not None:
            self.world.init_ctrl_history(self.data)
        self.data.qpos[self._cube_adr:self._cube_adr + 3] = (x, y, TABLE_TOP_Z + self.cube_half_size)
        self.data.qpos[self._cube_adr + 3:self._cube_adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._obs(), info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (6,):
            raise ValueError(f"action must have shape (6,) (joint targets in rad for {JOINT_NAMES}), "
                             f"got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        self.data.ctrl[:] = np.clip(action, self.action_low, self.action_high)
        if self.world is None:
            mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
            obs = self._obs()
        else:  # a jittered period; the observation is taken `obs_delay` before its end
            n, age = self.world.substeps(self.frame_skip, self._world_rng)
            mujoco.mj_step(self.model, self.data, nstep=n - age)
            obs = self._obs()
            if age:
                mujoco.mj_step(self.model, self.data, nstep=age)
        self._steps += 1
        success = self.is_success()
        truncated = (not success) and self._steps >= self.max_episode_steps
        return obs, float(success), success, truncated, {"is_success": success}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.render_camera_image(self.render_camera, self.render_size)

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # -- helpers -------------------------------------------------------------------------
    @property
    def cube_half_size(self) -> float:
        """Half the cube's edge in this episode (the world may change it), m."""
        return CUBE_HALF_SIZE if self.world is None else self.world.cube_half_size

    def is_success(self) -> bool:
        """True when the cube's bottom is at least `LIFT_HEIGHT` (5 cm) above the table."""
        return cube_lifted(self.data.qpos[self._cube_adr + 2], self.cube_half_size)

    def render_camera_image(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        """Render camera `camera` off-screen at size (height, width) px; returns (H, W, 3) uint8."""
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = mujoco.Renderer(self.model, *size)
        renderer.update_scene(self.data, camera, scene_option=self._scene_option)
        return renderer.render()

    def _obs(self) -> dict:
        opening = gripper_opening(self.model, self.data)
        joint_pos = self.data.qpos[self._qpos_adr]
        cube_pos, cube_quat = self.data.qpos[self._cube_adr:self._cube_adr + 3], self.data.qpos[
            self._cube_adr + 3:self._cube_adr + 7]
        if self.world is not None:
            joint_pos, cube_pos, cube_quat = self.world.measure(joint_pos, cube_pos, cube_quat, self._world_rng)
        obs = {
            "joint_pos": joint_pos.astype(np.float32),
            "gripper_opening": np.array([opening], dtype=np.float32),
            "cube_pos": cube_pos.astype(np.float32),
            "cube_quat": cube_quat.astype(np.float32),
        }
        for camera in self.cameras:
            obs[image_key(camera)] = self.render_camera_image(camera, self.image_size)
        return obs
