"""`robolearn/PushT-v0`: the Diffusion Policy paper's Push-T (Chi et al. 2023, Sec. 5), from `gym-pusht`.

The physics, rendering, reward and success test are `gym-pusht`'s (pymunk; a port of the reference
`diffusion_policy/env/pusht/pusht_env.py`): a 512 x 512 px workspace, a round agent (radius 15 px) driven
by a PD controller towards the commanded position at 100 Hz physics and 10 Hz control, and a T-shaped block
to push onto the fixed goal pose (256, 256, pi/4). This module only gives the observations the keys of the
reference Push-T dataset and adds the geometry the scripted expert and the tests use.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import shapely.geometry as sg
from gymnasium import spaces

WORKSPACE = 512.0  # px, side of the square workspace
AGENT_RADIUS = 15.0  # px
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # x px, y px, angle rad: the block's body-origin pose
SUCCESS_COVERAGE = 0.95  # the fraction of the goal area the block must cover
MAX_EPISODE_STEPS = 300  # 30 s at 10 Hz, as the reference's evaluation

#: The T as two rectangles (bar, stem) in the block's frame, px: the body origin is the bar's lower edge centre.
TEE_PARTS = (
    np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [-60.0, 30.0]]),
    np.array([[-15.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0]]),
)
#: The block's centre of mass in its frame, px (the mean of the two rectangles' centres, as gym-pusht sets it).
TEE_COM = np.array([0.0, 45.0])
#: The 9 keypoints of the `keypoint` observation in the block's frame, px: the 8 rectangle corners (in
#: gym-pusht's `get_keypoints` order) and the centre of mass. The reference dataset's keypoints are 9 points
#: sampled on the rendered T instead; both are a fixed function of the block pose.
LOCAL_KEYPOINTS = np.concatenate([*TEE_PARTS, TEE_COM[None]], axis=0)


def rotation(angle: float) -> np.ndarray:
    """(2, 2) rotation matrix of `angle` rad."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Points (N, 2) px in the block frame -> workspace frame, for a block pose (x px, y px, angle rad)."""
    return np.asarray(points) @ rotation(pose[2]).T + np.asarray(pose[:2])


def keypoints(pose: np.ndarray) -> np.ndarray:
    """The (9, 2) keypoints (px, workspace frame) of the block at `pose` (x px, y px, angle rad)."""
    return to_world(LOCAL_KEYPOINTS, pose).astype(np.float32)


def tee_polygon(pose: np.ndarray) -> sg.base.BaseGeometry:
    """The T's area (a shapely geometry) at block pose `pose` (x px, y px, angle rad)."""
    return sg.Polygon(to_world(TEE_PARTS[0], pose)).union(sg.Polygon(to_world(TEE_PARTS[1], pose)))


def coverage(block_pose: np.ndarray, goal_pose: np.ndarray = GOAL_POSE) -> float:
    """The Push-T metric's coverage: area(T at block_pose ∩ T at goal_pose) / area(T), in [0, 1].

    The reward is clip(coverage / 0.95, 0, 1) and an episode succeeds when coverage > 0.95 (Chi et al.
    2023, Sec. 5; the reference env's `_get_coverage`)."""
    goal = tee_polygon(goal_pose)
    return float(goal.intersection(tee_polygon(block_pose)).area / goal.area)


class PushTEnv(gym.Env):
    """Push the T-shaped block onto the goal pose with a round agent (gym-pusht's physics).

    Observation (a dict, the reference Push-T dataset's keys):
        state (5,) float32: agent x, agent y (px), block x, block y (px, body origin), block angle
            (rad, in [0, 2 pi)).
        keypoint (9, 2) float32: the block's keypoints, px (`LOCAL_KEYPOINTS` placed at the block pose).
        agent_pos (2,) float32: the agent's position, px (the proprioception of the image task).
        img (H, W, 3) uint8: only with `image_obs=True`, gym-pusht's top-down rendering.
    Action (2,): the agent's target position, px, in [0, 512]^2 (the reference dataset's `action`).
    Reward: clip(coverage / 0.95, 0, 1); `info["is_success"]` is coverage > 0.95 and `info["coverage"]`
        the coverage. Termination on success; truncation after 300 steps (30 s) by gymnasium's TimeLimit
        from the registration.

    Args:
        render_mode: None or "rgb_array" (`render()` gives `render_size` frames).
        image_obs: add the `img` key.
        image_size: (height, width) of `img`, px.
        render_size: side of `render()` frames, px.

    Raises:
        ValueError: a non-finite action.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, image_obs: bool = False,
                 image_size: tuple[int, int] = (96, 96), render_size: int = 384):
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # gym-pusht imports pygame, which greets on stdout
        from gym_pusht.envs.pusht import PushTEnv as GymPushT

        self.render_mode = render_mode
        self.image_obs = bool(image_obs)
        height, width = (int(v) for v in image_size)
        self.base = GymPushT(obs_type="state", render_mode="rgb_array", observation_width=width,
                             observation_height=height, visualization_width=render_size,
                             visualization_height=render_size)
        obs_spaces = {
            "state": spaces.Box(np.array([0, 0, 0, 0, 0], np.float32),
                                np.array([WORKSPACE] * 4 + [2 * np.pi], np.float32), dtype=np.float32),
            "keypoint": spaces.Box(-WORKSPACE, 2 * WORKSPACE, shape=(9, 2), dtype=np.float32),
            "agent_pos": spaces.Box(0.0, WORKSPACE, shape=(2,), dtype=np.float32),
        }
        if self.image_obs:
            obs_spaces["img"] = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(0.0, WORKSPACE, shape=(2,), dtype=np.float32)
        self.coverage = 0.0

    @property
    def block_pose(self) -> np.ndarray:
        """The block's pose (x px, y px, angle rad), angle unwrapped."""
        block = self.base.block
        return np.array([block.position.x, block.position.y, block.angle])

    @property
    def agent_pos(self) -> np.ndarray:
        """The agent's position (x, y), px."""
        return np.array(self.base.agent.position)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        _, info = self.base.reset(seed=seed, options=options)
        self.coverage = coverage(self.block_pose)
        return self._obs(), {"is_success": False, "coverage": self.coverage}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(2)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        _, reward, terminated, _, info = self.base.step(np.clip(action, 0.0, WORKSPACE))
        self.coverage = float(info["coverage"])
        return self._obs(), float(reward), bool(terminated), False, {"is_success": bool(info["is_success"]),
                                                                     "coverage": self.coverage}

    def is_success(self) -> bool:
        """True when the block covers more than 95% of the goal area."""
        return self.coverage > SUCCESS_COVERAGE

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.base.render()

    def close(self):
        self.base.close()

    def _obs(self) -> dict:
        pose = self.block_pose
        agent = self.agent_pos
        obs = {"state": np.array([*agent, *pose[:2], pose[2] % (2 * np.pi)], dtype=np.float32),
               "keypoint": keypoints(pose), "agent_pos": agent.astype(np.float32)}
        if self.image_obs:
            obs["img"] = self.base._render(visualize=False)
        return obs
