"""Scripted expert for `robolearn/Lift-v0`: approach, descend, grasp, lift, planned with IK.

The expert reads only the observation (joint positions and cube pose), so it can drive
the simulation, a `MujocoRobot` or any other source of the same observation.
"""

from __future__ import annotations

import numpy as np

from robolearn.sim.arm import ARM_JOINT_NAMES, load_model
from robolearn.sim.ik import DampedLeastSquaresIK, top_down_quat

GRIPPER_OPEN = 0.7  # rad
GRIPPER_CLOSED = -0.15  # rad; beyond contact, so the servo squeezes at its force limit
ROLL_LIMIT = 2.6  # rad; grasp yaws needing more wrist roll than this are not offered
#: Injected mistakes (`failure_rate`): close the jaws too early while still above the cube,
#: or aim the whole grasp at a point beside the cube.
FAILURES = ("early_close", "offset")
EARLY_CLOSE_HEIGHT = (0.035, 0.065)  # m above the grasp point where an early close happens
OFFSET_DISTANCE = (0.035, 0.05)  # m, horizontal distance of a misplaced grasp from the cube centre
#: Jaw opening (m) below which closed jaws hold nothing: holding the 3 cm cube leaves ~0.037 m, empty jaws ~0.
MISSED_GRASP_OPENING = 0.015


def cube_yaw(quat: np.ndarray) -> float:
    """Yaw (rad) of the cube's local x axis in the world xy plane, from a (w, x, y, z) quaternion."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def wrap_angle(a: float) -> float:
    """Wrap an angle to [-pi, pi) rad."""
    return float((a + np.pi) % (2 * np.pi) - np.pi)


class LiftExpert:
    """A waypoint expert for Lift, solved with damped least-squares IK on the arm model.

    Phases: approach a pre-grasp point `approach_height` above the cube with the jaws open
    and aligned with two opposite cube faces; descend; close the jaws; lift to `lift_z`
    (with `max_retries`: after a missed grasp, retreat with open jaws and approach again).
    A Cartesian set-point moves towards each waypoint at a bounded speed, and DLS IK
    (`DampedLeastSquaresIK`) turns it into absolute joint targets every control step.

    Multimodality: the cube is symmetric under 90 deg yaw rotations and the jaws under
    180 deg, so each episode picks uniformly at random among the grasp yaws
    cube_yaw + k * pi/2 (k = 0..3) whose wrist roll is within +-`ROLL_LIMIT`; each is a
    different joint-space solution.

    Args:
        control_hz: control rate, Hz (set-point speeds are converted with it).
        fast_speed, slow_speed: set-point speeds for the approach and for descend/lift, m/s.
        action_noise: std of Gaussian noise added to every joint target, rad (for
            mixed-quality data); 0 for a clean expert.
        failure_rate: probability that an episode carries an injected mistake (for
            mixed-quality data): one of `FAILURES`, drawn uniformly. After the mistake the
            expert carries on with its plan (lifts the empty jaws), so such episodes fail.
            The episode's mistake is `self.failure` (None for a clean episode).
        max_retries: recoveries per episode: when the closed jaws hold nothing (opening below
            `MISSED_GRASP_OPENING`), reopen, rise to the pre-grasp height and grasp again, this
            time without a mistake. 0 (the default) keeps the failed attempt, as above; with
            `failure_rate` > 0 and `max_retries` >= 1 the demonstrations show recoveries.
            `self.retries` counts the recoveries of the current episode.

    Raises:
        ValueError: action_noise < 0, failure_rate outside [0, 1], or max_retries < 0.
    """

    def __init__(self, control_hz: float = 20.0, fast_speed: float = 0.3, slow_speed: float = 0.12,
                 approach_height: float = 0.07, lift_z: float = 0.13, action_noise: float = 0.0,
                 failure_rate: float = 0.0, max_retries: int = 0):
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0 rad, got {action_noise}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        model = load_model()
        self.ik = DampedLeastSquaresIK(model, "grasp_site", ARM_JOINT_NAMES)
        self.dt = 1.0 / control_hz
        self.fast_speed = fast_speed
        self.slow_speed = slow_speed
        self.approach_height = approach_height
        self.lift_z = lift_z
        self.action_noise = action_noise
        self.failure_rate = failure_rate
        self.max_retries = max_retries
        self.rng = np.random.default_rng()

    def reset(self, obs: dict, rng: np.random.Generator | None = None) -> None:
        """Start a new episode from its first observation; `rng` draws the grasp mode and noise."""
        if rng is not None:
            self.rng = rng
        q = np.asarray(obs["joint_pos"], dtype=float)
        rolls = self._grasp_rolls(obs)
        #: k in 0..3: the grasp yaw is cube_yaw + k * pi/2 (the episode's mode)
        self.grasp_mode = int(self.rng.choice(list(rolls)))
        self.grasp_roll = rolls[self.grasp_mode]
        self.q_ik = q[:5].copy()
        self.setpoint, _ = self.ik.site_pose(self.q_ik)
        self.roll = float(q[4])
        self.phase = "approach"
        self.phase_steps = 0
        self.retries = 0
        self._drop_mistake()
        if self.failure_rate > 0 and self.rng.random() < self.failure_rate:
            self.failure = str(self.rng.choice(FAILURES))
            if self.failure == "offset":
                angle = self.rng.uniform(0, 2 * np.pi)
                self.grasp_offset[:2] = self.rng.uniform(*OFFSET_DISTANCE) * np.array([np.cos(angle), np.sin(angle)])
            else:
                self.close_height = self.rng.uniform(*EARLY_CLOSE_HEIGHT)

    @property
    def mode(self) -> dict:
        """The episode's mode: the grasp yaw index k (grasp yaw = cube yaw + k * 90 deg)."""
        return {"grasp": self.grasp_mode}

    @staticmethod
    def _grasp_rolls(obs: dict) -> dict[int, float]:
        """Wrist roll (rad) of each grasp mode k (grasp yaw cube_yaw + k * pi/2) within +-`ROLL_LIMIT`."""
        cube = np.asarray(obs["cube_pos"], dtype=float)
        pan = float(np.arctan2(cube[1], cube[0]))
        yaw = cube_yaw(np.asarray(obs["cube_quat"], dtype=float))
        rolls = {k: wrap_angle(pan + np.pi - (yaw + k * np.pi / 2)) for k in range(4)}
        return {k: r for k, r in rolls.items() if abs(r) <= ROLL_LIMIT}

    def _drop_mistake(self) -> None:
        """A clean plan: no injected mistake, grasp aimed at the cube centre."""
        self.failure = None
        self.grasp_offset = np.zeros(3)
        self.close_height = 0.0

    def _retry(self, obs: dict) -> None:
        """Recover from a missed grasp: drop the mistake and re-aim at the cube where it now lies,
        with the grasp mode nearest the current wrist roll (a failed grasp may have turned it)."""
        self.retries += 1
        self._drop_mistake()
        rolls = self._grasp_rolls(obs)
        self.grasp_mode = min(rolls, key=lambda k: abs(rolls[k] - self.roll))
        self.grasp_roll = rolls[self.grasp_mode]
        self.phase, self.phase_steps = "retreat", 0

    def _advance(self, goal: np.ndarray, speed: float) -> bool:
        """Move the set-point towards `goal` by at most speed*dt; True once it is there."""
        delta = goal - self.setpoint
        dist = float(np.linalg.norm(delta))
        step = speed * self.dt
        self.setpoint = goal.copy() if dist <= step else self.setpoint + delta * (step / dist)
        return dist <= step

    def act(self, obs: dict) -> np.ndarray:
        """Joint targets (6,) in rad for the current observation."""
        q = np.asarray(obs["joint_pos"], dtype=float)
        cube = np.asarray(obs["cube_pos"], dtype=float)
        site, _ = self.ik.site_pose(q[:5])
        gripper = GRIPPER_OPEN
        self.phase_steps += 1
        if self.phase == "approach":
            goal = cube + self.grasp_offset + (0.0, 0.0, self.approach_height)
            there = self._advance(goal, self.fast_speed)
            step = 3.0 * self.dt  # wrist roll speed, rad per step
            self.roll += float(np.clip(self.grasp_roll - self.roll, -step, step))
            if there and self.roll == self.grasp_roll and np.linalg.norm(site - goal) < 0.015:
                self.phase, self.phase_steps = "descend", 0
        elif self.phase == "descend":
            goal = cube + self.grasp_offset + (0.0, 0.0, 0.002)
            there = self._advance(goal, self.slow_speed)
            early = self.failure == "early_close" and site[2] - goal[2] < self.close_height
            if there and np.linalg.norm(site - goal) < 0.006 or self.phase_steps > 40 or early:
                self.phase, self.phase_steps = "close", 0
        elif self.phase == "close":
            gripper = GRIPPER_CLOSED
            if self.phase_steps >= 8:
                self.phase, self.phase_steps = "lift", 0
        elif self.phase == "retreat":  # jaws open while rising back to the pre-grasp height
            there = self._advance(np.array([*self.setpoint[:2], cube[2] + self.approach_height]), self.slow_speed)
            if there and self.phase_steps >= 8:
                self.phase, self.phase_steps = "approach", 0
        if self.phase == "lift" and self.retries < self.max_retries \
                and float(np.asarray(obs["gripper_opening"]).reshape(-1)[0]) < MISSED_GRASP_OPENING:
            self._retry(obs)
        if self.phase == "lift":
            gripper = GRIPPER_CLOSED
            self._advance(np.array([self.setpoint[0], self.setpoint[1], self.lift_z]), self.slow_speed)
        self.q_ik, _ = self.ik.solve(self.q_ik, self.setpoint, top_down_quat(self.setpoint, self.roll))
        action = np.append(self.q_ik, gripper)
        if self.action_noise > 0:
            action = action + self.rng.normal(0.0, self.action_noise, size=6)
        return action
