"""System identification of the desktop arm: fit world parameters to recorded episodes.

A recording (`robolearn record`: per step the measured `joint_pos` (6,) rad and the command sent, `action` (6,)
rad, at `rate_hz`) is replayed open loop in MuJoCo from each episode's first measured pose: the commands are held
for one control period each, through the actuators' delay buffer. The fitted parameters `FIT_PARAMETERS` (world
parameters of `robolearn.sim.world`: the arm's masses, joint damping and armature, the servos' position gain, and
the command delay) minimize the tracking error between simulated and measured joint positions, by MuJoCo's
box-constrained Levenberg-Marquardt (`mujoco.minimize.least_squares`; finite differences over one batch of
rollouts per iteration). Scale factors are fitted as logarithms (a 2x error and a 0.5x error weigh the same).
The delay is continuous here: the fitting model interpolates the command history linearly between physics
steps (MuJoCo's actuator `interp=1`), so the residual varies smoothly with it.

When the recording holds the cube's first pose (`cube_pos`, `cube_quat`: a simulated recording), the cube starts
there; otherwise it is moved out of the arm's reach. The jaw joint is left out of the residual by default
(its contacts with an object the recording may not know dominate it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import minimize

from robolearn.sim.arm import ARM_JOINT_NAMES, JOINT_NAMES
from robolearn.sim.world import (
    ACTION_DELAY_BUFFER,
    PARAMETERS,
    World,
    WorldModel,
    scene_spec,
)

#: the delay scan: a coarse grid (s), then every physics step within one coarse step of the best, each with
#: `SCAN_ITERATIONS` of fitting the other parameters on the first `SCAN_EPISODES` episodes
COARSE_DELAY_STEP = 0.01
SCAN_ITERATIONS = 6
SCAN_EPISODES = 4
#: a scan fit only ranks its delay against the others (the final fit refines every parameter at MuJoCo's default
#: tolerances), so it stops at a relative step of 1e-3, and grows the damping mu by sqrt(10) per rejected step
#: instead of 10^0.1: at a wrong delay the default spent ~60 residual evaluations raising mu from 1e-6 before its
#: first accepted step. Measured on 4 synthetic arms (3 parameters): the same fitted values, the scan 2.5-3.5x
#: faster; bench/sysid.py (5 parameters, 20 episodes): the same values, 167 -> 95 s in all.
SCAN_XTOL = 1e-3
SCAN_MU_FACTOR = 10 ** 0.5
#: parameter -> (lower, upper) bounds of the fit (scale factors: x nominal; delay: s)
FIT_PARAMETERS: dict[str, tuple[float, float]] = {
    "mass_scale": (0.25, 4.0), "damping_scale": (0.1, 10.0), "armature_scale": (0.1, 10.0),
    "kp_scale": (0.25, 4.0), "action_delay": (0.0, ACTION_DELAY_BUFFER),
}


@dataclass
class Recording:
    """One episode of a recording: `joint_pos` (T, 6) measured, rad; `action` (T, 6) commanded, rad (action t is
    sent right after joint_pos t is read); optional first cube pose `cube_pos` (3,) m and `cube_quat` (4,)."""

    joint_pos: np.ndarray
    action: np.ndarray
    cube_pos: np.ndarray | None = None
    cube_quat: np.ndarray | None = None

    def __post_init__(self):
        for name in ("joint_pos", "action"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim != 2 or value.shape[1] != len(JOINT_NAMES) or len(value) < 2:
                raise ValueError(f"recording `{name}` must have shape (T >= 2, {len(JOINT_NAMES)}), got {value.shape}")
            setattr(self, name, value)
        if len(self.joint_pos) != len(self.action):
            raise ValueError(f"recording has {len(self.joint_pos)} joint_pos rows but {len(self.action)} actions")


@dataclass
class SysIdResult:
    """The fit: `values` {parameter: value}, `residual_before`/`residual_after` (RMS joint error over every
    fitted joint and step, rad, at the nominal and the fitted values), `per_joint_before/after` {joint: RMS rad},
    `iterations`, `seconds`."""

    values: dict[str, float]
    residual_before: float
    residual_after: float
    per_joint_before: dict[str, float]
    per_joint_after: dict[str, float]
    iterations: int
    seconds: float

    def world_config(self, name: str) -> dict:
        """The fitted world as a config mapping (configs/world/<name>.yaml), loadable with `world=<name>`."""
        out: dict = {"name": name, "tag": f"_{name}"}
        for key, value in self.values.items():
            out.setdefault(PARAMETERS[key].group, {})[key] = round(float(value), 6)
        return out


class ArmReplay:
    """Open-loop replays of recordings in the Lift scene for a batch of parameter vectors.

    Args:
        recordings: the episodes.
        control_hz: the recording's rate, Hz (must divide the 500 Hz physics rate).
        parameters: the fitted parameters (names in `FIT_PARAMETERS`).
        joints: the joints compared (default: the five arm joints).

    Raises:
        ValueError: no recordings, an unknown parameter or joint, or a rate that does not divide the physics rate.
    """

    def __init__(self, recordings: Sequence[Recording], control_hz: float,
                 parameters: Sequence[str] = tuple(FIT_PARAMETERS), joints: Sequence[str] = ARM_JOINT_NAMES):
        if not recordings:
            raise ValueError("system identification needs at least one recorded episode")
        unknown = [p for p in parameters if p not in FIT_PARAMETERS]
        if unknown:
            raise ValueError(f"cannot fit {unknown}; fittable parameters: {list(FIT_PARAMETERS)}")
        bad = [j for j in joints if j not in JOINT_NAMES]
        if bad:
            raise ValueError(f"unknown joints {bad}; the arm has {list(JOINT_NAMES)}")
        self.recordings, self.parameters = list(recordings), list(parameters)
        self.joint_idx = np.array([JOINT_NAMES.index(j) for j in joints])
        self.joints = list(joints)
        # linear interpolation of the command history: a delay between physics steps is smooth
        self.model = scene_spec(delay_buffer=ACTION_DELAY_BUFFER, interp=1).compile()
        physics_hz = round(1.0 / self.model.opt.timestep)
        if abs(physics_hz / control_hz - round(physics_hz / control_hz)) > 1e-9:
            raise ValueError(f"control_hz {control_hz} must divide the physics rate {physics_hz} Hz")
        self.frame_skip = round(physics_hz / control_hz)
        self.world = WorldModel(World({"latency": {"action_delay": {"low": 0.0, "high": ACTION_DELAY_BUFFER}}}),
                                self.model, 1.0 / control_hz)
        self.data = mujoco.MjData(self.model)
        self._qadr = np.array([self.model.joint(j).qposadr[0] for j in JOINT_NAMES])
        self._mirror = self.model.joint("gripper_mirror").qposadr[0]
        self._cube = self.model.joint("cube_joint").qposadr[0]

    def values(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every world parameter's value for the fit vector x (scale factors as logarithms; delay in s)."""
        values = {k: np.full(p.size, p.nominal) for k, p in PARAMETERS.items()}
        for name, v in zip(self.parameters, x):
            values[name] = np.array([v if name == "action_delay" else math.exp(v)])
        return values

    def to_x(self, values: dict[str, float]) -> np.ndarray:
        return np.array([values[p] if p == "action_delay" else math.log(values[p]) for p in self.parameters])

    def bounds(self) -> list[np.ndarray]:
        lo = [FIT_PARAMETERS[p][0] if p == "action_delay" else math.log(FIT_PARAMETERS[p][0]) for p in self.parameters]
        hi = [FIT_PARAMETERS[p][1] if p == "action_delay" else math.log(FIT_PARAMETERS[p][1]) for p in self.parameters]
        return [np.array(lo), np.array(hi)]

    def simulate(self, x: np.ndarray) -> list[np.ndarray]:
        """The simulated joint positions (T, 6) of every recording at fit vector x, at the recorded read times."""
        m, d = self.model, self.data
        self.world.apply(self.values(x))
        mujoco.mj_setConst(m, d)
        out = []
        for rec in self.recordings:
            mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
            d.qpos[self._qadr] = rec.joint_pos[0]
            d.qpos[self._mirror] = rec.joint_pos[0, 5]
            if rec.cube_pos is not None:
                d.qpos[self._cube:self._cube + 3] = rec.cube_pos
                d.qpos[self._cube + 3:self._cube + 7] = rec.cube_quat if rec.cube_quat is not None else (1, 0, 0, 0)
            else:
                d.qpos[self._cube:self._cube + 3] = (1.5, 0.0, 0.05)  # out of reach
            d.ctrl[:] = rec.joint_pos[0]
            self.world.init_ctrl_history(d)
            mujoco.mj_forward(m, d)
            sim = [d.qpos[self._qadr].copy()]
            for action in rec.action[:-1]:
                d.ctrl[:] = action
                mujoco.mj_step(m, d, nstep=self.frame_skip)
                sim.append(d.qpos[self._qadr].copy())
            out.append(np.array(sim))
        return out

    def residual(self, x: np.ndarray) -> np.ndarray:
        """The tracking errors (rad) of the compared joints over every step after the first, for one fit vector
        (n,) -> (m,), or a batch (n, k) -> (m, k) as `mujoco.minimize.least_squares` asks."""
        if x.ndim == 2:
            return np.stack([self.residual(col) for col in x.T], axis=1)
        sims = self.simulate(x)
        return np.concatenate([(sim[1:, self.joint_idx] - rec.joint_pos[1:, self.joint_idx]).ravel()
                               for sim, rec in zip(sims, self.recordings)])

    def per_joint_rms(self, x: np.ndarray) -> dict[str, float]:
        err = np.concatenate([sim[1:] - rec.joint_pos[1:] for sim, rec in zip(self.simulate(x), self.recordings)])
        return {j: float(np.sqrt(np.mean(err[:, i] ** 2))) for j, i in zip(self.joints, self.joint_idx)}


def identify(recordings: Sequence[Recording], control_hz: float, parameters: Sequence[str] = tuple(FIT_PARAMETERS),
             joints: Sequence[str] = ARM_JOINT_NAMES, max_iter: int = 50, progress=None) -> SysIdResult:
    """Fit `parameters` to `recordings` from the nominal values (see the module docstring).

    Args:
        progress: optional callable(iteration, rms residual rad) called after each iteration.

    Raises:
        ValueError: as `ArmReplay`.
    """
    t0 = time.perf_counter()
    replay = ArmReplay(recordings, control_hz, parameters, joints)
    nominal = replay.to_x({p: PARAMETERS[p].nominal for p in parameters})
    before = replay.residual(nominal)
    bounds = replay.bounds()

    def fit(x_start: np.ndarray, fixed_delay: bool, iterations: int, fit_replay: ArmReplay = replay):
        if not fixed_delay or "action_delay" not in parameters:
            return minimize.least_squares(x_start, fit_replay.residual, bounds=bounds, eps=1e-4, max_iter=iterations,
                                          verbose=0, x_scale="jac", iter_callback=callback)
        i = parameters.index("action_delay")  # the other parameters at this delay

        def residual(z):
            return fit_replay.residual(np.insert(z, i, x_start[i], axis=0))

        z, trace = minimize.least_squares(np.delete(x_start, i), residual, eps=1e-4, max_iter=iterations, verbose=0,
                                          bounds=[np.delete(b, i) for b in bounds], x_scale="jac", xtol=SCAN_XTOL,
                                          mu_factor=SCAN_MU_FACTOR)
        return np.insert(z, i, x_start[i]), trace

    def callback(trace):
        if progress is not None:
            progress(len(trace), math.sqrt(2 * trace[-1].objective / len(before)))

    x = nominal.copy()
    if "action_delay" in parameters:
        # A delay is easily mistaken for a softer servo, and the cost has local minima along the delay: scan the
        # delay (coarse, then fine around the best), fitting the other parameters at each on a few episodes.
        i = parameters.index("action_delay")
        scout = ArmReplay(recordings[:SCAN_EPISODES], control_hz, parameters, joints)

        def scan(delays):
            best = None
            for delay in delays:
                start = x.copy()
                start[i] = delay
                candidate, _ = fit(start, True, SCAN_ITERATIONS, scout)
                cost = float(np.sum(scout.residual(candidate) ** 2))
                if best is None or cost < best[0]:
                    best = (cost, candidate)
            return best[1]

        x = scan(np.arange(0.0, ACTION_DELAY_BUFFER + 1e-9, COARSE_DELAY_STEP))
        step = replay.model.opt.timestep
        x = scan(np.clip(x[i] + np.arange(-COARSE_DELAY_STEP, COARSE_DELAY_STEP + 1e-9, step), 0,
                         ACTION_DELAY_BUFFER))
    x, trace = fit(x, False, max_iter)
    after = replay.residual(x)
    if np.sum(after ** 2) > np.sum(before ** 2):  # never worse than where it started
        x, after = nominal, before
    values = {p: float(replay.values(x)[p][0]) for p in parameters}
    return SysIdResult(values=values, residual_before=float(np.sqrt(np.mean(before ** 2))),
                       residual_after=float(np.sqrt(np.mean(after ** 2))), per_joint_before=replay.per_joint_rms(nominal),
                       per_joint_after=replay.per_joint_rms(x), iterations=len(trace),
                       seconds=time.perf_counter() - t0)
