"""World parameters: domain randomization, latency and sensor models for the desktop arm's MuJoCo scene.

A *world* (configs/world/<name>.yaml, the hydra group `world`) gives values to the parameters in
`PARAMETERS`, grouped as in the yaml::

    name: randomized
    tag: _randomized              # added to default dataset and run names
    physics:
      mass_scale: {low: 0.8, high: 1.25, dist: log_uniform}   # a range: sampled per episode
      kp_scale: 1.1                                            # a fixed value
    latency:
      action_delay: {low: 0.0, high: 0.04}                     # dist defaults to uniform

A parameter left out keeps its nominal value. A fixed value overrides a range (e.g. `world.physics.kp_scale=1.3`
on the command line at evaluation time). Each episode samples every parameter afresh and applies it to the
*nominal* model (`WorldModel.apply`), so scale factors never compound across episodes. The ranges and the
randomized parameters follow Tobin et al. 2017, Peng et al. 2018 (arXiv 1710.06537; log-uniform for scale
factors) and Tan et al. 2018 (arXiv 1804.10332; latency and sensor noise); see shared/research/sim.md Sec. 4.

Latency: `action_delay` uses MuJoCo's own actuator delay (a ctrl history buffer of `ACTION_DELAY_BUFFER` s;
commands take effect that much later, at physics-step resolution); `obs_delay` reads the observation that many
physics steps before the end of the control period; `control_jitter` varies the number of physics steps per
control period.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import mujoco
import numpy as np

#: the longest actuator command delay a world may ask for, s (MuJoCo's ctrl history buffer)
ACTION_DELAY_BUFFER = 0.1
DISTRIBUTIONS = ("uniform", "log_uniform")


@dataclass(frozen=True)
class Parameter:
    """One world parameter: its yaml group, unit, nominal value, per-episode size and valid values.

    `scale` parameters multiply the model's nominal values ("x"); the others are values in `unit`, or offsets
    added to the nominal values when the name ends in `_offset`.
    """

    name: str
    group: str
    unit: str
    nominal: float
    doc: str
    size: int = 1
    minimum: float = -math.inf
    maximum: float = math.inf
    positive: bool = False  # strictly > 0


PARAMETERS: dict[str, Parameter] = {p.name: p for p in [
    # physics (scale factors of the nominal model)
    Parameter("mass_scale", "physics", "x", 1.0, "masses and inertias of the arm's links", positive=True),
    Parameter("friction_scale", "physics", "x", 1.0, "sliding friction of the table, links and jaw pads",
              positive=True),
    Parameter("damping_scale", "physics", "x", 1.0, "joint damping", minimum=0.0),
    Parameter("armature_scale", "physics", "x", 1.0, "joint armature (reflected rotor inertia)", minimum=0.0),
    Parameter("kp_scale", "physics", "x", 1.0, "position gains of the servos", positive=True),
    Parameter("force_limit_scale", "physics", "x", 1.0, "force limits of the servos", positive=True),
    # the object
    Parameter("cube_size", "object", "m", 0.03, "edge length of the cube", minimum=0.01, maximum=0.06),
    Parameter("cube_mass", "object", "kg", 0.02, "mass of the cube", positive=True, maximum=1.0),
    Parameter("cube_friction_scale", "object", "x", 1.0, "sliding friction of the cube", positive=True),
    # latency
    Parameter("action_delay", "latency", "s", 0.0, "delay of every servo command (MuJoCo actuator delay)",
              minimum=0.0, maximum=ACTION_DELAY_BUFFER),
    Parameter("obs_delay", "latency", "s", 0.0, "age of the observation at the end of a control period "
              "(less than the control period)", minimum=0.0),
    Parameter("control_jitter", "latency", "s", 0.0, "half-width of the uniform per-period jitter of the "
              "control period (rounded to physics steps)", minimum=0.0),
    # sensors
    Parameter("joint_noise", "sensors", "rad", 0.0, "std of Gaussian noise on each joint reading, per step",
              minimum=0.0),
    Parameter("joint_offset", "sensors", "rad", 0.0, "encoder offset of each joint, per episode", size=6),
    Parameter("cube_pos_noise", "sensors", "m", 0.0, "std of Gaussian noise on the cube position, per step",
              minimum=0.0),
    Parameter("cube_rot_noise", "sensors", "rad", 0.0, "std of a Gaussian rotation (per axis) of the cube "
              "orientation, per step", minimum=0.0),
    # the look of the scene (camera tasks)
    Parameter("light_pos_offset", "visual", "m", 0.0, "shift of the lamp (x, y, z)", size=3),
    Parameter("light_scale", "visual", "x", 1.0, "brightness of the lamp and the headlight", minimum=0.0),
    Parameter("table_rgb_offset", "visual", "1", 0.0, "added to the table's colour (r, g, b in [0, 1])", size=3,
              minimum=-1.0, maximum=1.0),
    Parameter("cube_rgb_offset", "visual", "1", 0.0, "added to the cube's colour (r, g, b in [0, 1])", size=3,
              minimum=-1.0, maximum=1.0),
    Parameter("camera_pos_offset", "visual", "m", 0.0, "shift of every policy camera in its parent frame "
              "(x, y, z; not the calibrated marker camera)", size=3),
    Parameter("camera_rot_offset", "visual", "rad", 0.0, "rotation vector applied to every policy camera's "
              "orientation, camera frame", size=3, minimum=-0.5, maximum=0.5),
    Parameter("camera_fovy_offset", "visual", "deg", 0.0, "added to every policy camera's vertical field of view",
              minimum=-30.0, maximum=30.0),
]}
GROUPS = ("physics", "object", "latency", "sensors", "visual")
#: cameras the camera_* parameters leave alone: the marker camera is extrinsically calibrated
#: (`robolearn.ros.marker_node`), so the shift a world gives the policies' cameras does not apply to it
UNJITTERED_CAMERAS = ("marker",)


@dataclass(frozen=True)
class Range:
    """A parameter's value in a world: fixed (low == high) or sampled per episode from `dist` on [low, high]
    (each of a vector parameter's components independently). `low`/`high` have the parameter's size."""

    low: np.ndarray
    high: np.ndarray
    dist: str = "uniform"

    @property
    def fixed(self) -> bool:
        return bool(np.array_equal(self.low, self.high))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.fixed:
            return self.low.copy()
        if self.dist == "log_uniform":
            return np.exp(rng.uniform(np.log(self.low), np.log(self.high)))
        return rng.uniform(self.low, self.high)


class World:
    """A named world: a `Range` for each of `PARAMETERS` (nominal when not given). See the module docstring.

    Args:
        spec: the world yaml as a mapping ({"name": ..., "<group>": {"<parameter>": value | range}}), or None
            for the nominal world.

    Raises:
        ValueError: an unknown group or parameter, a malformed value, or a value outside the parameter's valid
            values (e.g. a negative mass, a delay longer than `ACTION_DELAY_BUFFER`), naming `group.parameter`.
    """

    def __init__(self, spec: Mapping | None = None):
        spec = dict(spec or {})
        self.name = str(spec.pop("name", "nominal"))
        spec.pop("tag", None)  # the suffix of default dataset and run names (configs/world)
        self.ranges: dict[str, Range] = {}
        for group, params in spec.items():
            if group not in GROUPS:
                raise ValueError(f"world {self.name}: unknown group {group!r}; a world has {list(GROUPS)} "
                                 "(and name)")
            if params is None:
                continue
            if not isinstance(params, Mapping):
                raise ValueError(f"world {self.name}: `{group}` must map parameters to values, got {params!r:.60}")
            for key, value in params.items():
                param = PARAMETERS.get(key)
                if param is None or param.group != group:
                    known = [p.name for p in PARAMETERS.values() if p.group == group]
                    raise ValueError(f"world {self.name}: unknown parameter {group}.{key}; {group} has {known}")
                self.ranges[key] = _parse_range(param, value, f"world {self.name}: {group}.{key}")

    def __repr__(self) -> str:
        return f"World({self.name!r}, {sorted(self.ranges)})"

    @property
    def is_nominal(self) -> bool:
        """True when every parameter is fixed at its nominal value."""
        return all(r.fixed and np.all(r.low == PARAMETERS[k].nominal) for k, r in self.ranges.items())

    def range(self, name: str) -> Range:
        """The parameter's `Range` (its fixed nominal value when the world does not give it)."""
        if name in self.ranges:
            return self.ranges[name]
        p = PARAMETERS[name]
        v = np.full(p.size, p.nominal)
        return Range(v, v.copy())

    def upper(self, name: str) -> float:
        """The largest value parameter `name` can take in this world."""
        return float(self.range(name).high.max())

    def varies(self, name: str) -> bool:
        """True when the parameter can differ from its nominal value."""
        r = self.range(name)
        return not (r.fixed and np.all(r.low == PARAMETERS[name].nominal))

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One episode's values {parameter: (size,) float64}, every parameter, in `PARAMETERS` order."""
        return {name: self.range(name).sample(rng) for name in PARAMETERS}


def _parse_range(param: Parameter, value, where: str) -> Range:
    dist = "uniform"
    if isinstance(value, Mapping):
        unknown = set(value) - {"low", "high", "dist"}
        if unknown or not {"low", "high"} <= set(value):
            raise ValueError(f"{where}: a range is {{low: ..., high: ..., dist: uniform|log_uniform}}, "
                             f"got {dict(value)}")
        dist = str(value.get("dist", "uniform"))
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"{where}: dist must be one of {list(DISTRIBUTIONS)}, got {dist!r}")
        low, high = _values(param, value["low"], where), _values(param, value["high"], where)
    else:
        low = high = _values(param, value, where)
    if np.any(low > high):
        raise ValueError(f"{where}: low {low.tolist()} is above high {high.tolist()}")
    if dist == "log_uniform" and np.any(low <= 0):
        raise ValueError(f"{where}: a log_uniform range needs low > 0, got {low.tolist()}")
    for bound in (low, high):
        bad = (bound < param.minimum) | (bound > param.maximum) | ((bound <= 0) if param.positive else False)
        if np.any(bad):
            valid = ("> 0" if param.positive else f">= {param.minimum:g}") + (
                f" and <= {param.maximum:g}" if math.isfinite(param.maximum) else "")
            extra = " (the actuator delay buffer)" if param.name == "action_delay" else ""
            raise ValueError(f"{where} = {bound.tolist()} {param.unit}: must be {valid}{extra}")
    return Range(low, high, dist)


def _values(param: Parameter, value, where: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number (in {param.unit}) or a range, got {value!r:.60}") from None
    if v.size == 1:
        v = np.full(param.size, v[0])
    if v.size != param.size or not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: expected {param.size} finite value(s) in {param.unit}, got {value!r:.60}")
    return v


def as_world(world: World | Mapping | None) -> World:
    """`world` as a `World` (a mapping is parsed; None is the nominal world)."""
    return world if isinstance(world, World) else World(world)


def scene_spec(cube_markers: bool = False, delay_buffer: float = 0.0, interp: int = 0) -> mujoco.MjSpec:
    """The Lift scene as an editable `MjSpec`, optionally with ArUco markers on the cube's faces
    (`robolearn.sim.markers`) and a ctrl history buffer of `delay_buffer` s on every actuator (for MuJoCo's
    actuator delay; `interp` 0: zero-order hold, 1: linear between physics steps)."""
    from robolearn.sim.arm import model_path
    from robolearn.sim.markers import add_cube_markers

    spec = mujoco.MjSpec.from_file(model_path())
    if cube_markers:
        add_cube_markers(spec)
    if delay_buffer > 0:
        nsample = int(math.ceil(delay_buffer / spec.option.timestep)) + 2
        for actuator in spec.actuators:
            actuator.nsample, actuator.interp = nsample, interp
    return spec


def load_model_for(world: World, cube_markers: bool = False) -> mujoco.MjModel:
    """The Lift scene compiled for `world`: with a ctrl history buffer of `ACTION_DELAY_BUFFER` s on every
    actuator when the world delays commands (the nominal model otherwise; the buffer costs ~6% of step time),
    and with ArUco markers on the cube's faces if `cube_markers`."""
    from robolearn.sim.arm import load_model

    delay = ACTION_DELAY_BUFFER if world.varies("action_delay") else 0.0
    if not delay and not cube_markers:
        return load_model()
    return scene_spec(cube_markers=cube_markers, delay_buffer=delay).compile()


def flat_values(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{"name" or "name[i]": value} of one episode's values (as recorded in `info["world"]` and datasets)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v).reshape(-1)
        if v.size == 1:
            out[name] = float(v[0])
        else:
            out.update({f"{name}[{i}]": float(x) for i, x in enumerate(v)})
    return out


def world_param_names() -> list[str]:
    """The names of `flat_values`'s entries, in order (e.g. "mass_scale", ..., "joint_offset[5]", ...)."""
    return list(flat_values({k: np.full(p.size, p.nominal) for k, p in PARAMETERS.items()}))


class WorldModel:
    """A `World` bound to one `MjModel` of the Lift scene: samples an episode's values and writes them into the
    model (always from the nominal values saved here), and models the sensors.

    Args:
        world: the world.
        model: the scene (from `load_model_for(world)`); its current values are the nominal ones.
        control_period: the control period, s (checks `obs_delay` and `control_jitter` against it).

    Raises:
        ValueError: `obs_delay` + `control_jitter` reach the control period, or `action_delay` needs a ctrl
            history buffer the model lacks.
    """

    def __init__(self, world: World, model: mujoco.MjModel, control_period: float):
        self.world, self.model = world, model
        self.timestep = float(model.opt.timestep)
        self.control_period = control_period
        if world.upper("obs_delay") + world.upper("control_jitter") >= control_period - self.timestep / 2:
            raise ValueError(f"world {world.name}: latency.obs_delay + latency.control_jitter = "
                             f"{world.upper('obs_delay') + world.upper('control_jitter'):g} s must stay below the "
                             f"control period {control_period:g} s")
        if world.varies("action_delay") and model.actuator_history[:, 0].min() * self.timestep < \
                world.upper("action_delay"):
            raise ValueError(f"world {world.name}: latency.action_delay needs a model with a ctrl history "
                             "buffer (load_model_for)")
        self.ids = _SceneIds(model)
        if world.varies("camera_rot_offset"):
            _fix_tracking_cameras(model)
        names = ("geom_pos", "body_mass", "body_inertia", "geom_friction", "dof_damping", "dof_armature", "actuator_gainprm",
                 "actuator_biasprm", "actuator_forcerange", "geom_size", "geom_rbound", "geom_aabb", "light_pos",
                 "light_diffuse", "mat_rgba", "cam_pos", "cam_quat", "cam_fovy")
        self.nominal = {n: getattr(model, n).copy() for n in names}
        self.nominal_headlight = (model.vis.headlight.diffuse.copy(), model.vis.headlight.ambient.copy())
        self.apply({k: np.full(p.size, p.nominal) for k, p in PARAMETERS.items()})

    @property
    def cube_half_size(self) -> float:
        """Half the cube's edge in this episode, m."""
        return float(self.values["cube_size"][0]) / 2

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Sample an episode's values (`World.sample`), apply them and return them."""
        self.apply(self.world.sample(rng))
        return self.values

    def apply(self, values: Mapping[str, np.ndarray]) -> None:
        """Write `values` (every parameter) into the model, from the nominal values. Call `mujoco.mj_setConst`
        and reset the data afterwards (`LiftEnv.reset` does)."""
        m, nom, ids = self.model, self.nominal, self.ids
        v = {k: float(np.asarray(x).reshape(-1)[0]) for k, x in values.items() if PARAMETERS[k].size == 1}
        self.values = {k: np.asarray(x, dtype=np.float64).reshape(-1).copy() for k, x in values.items()}
        offset = self.values["joint_offset"]
        self._per_step = {  # what every step reads, as plain numbers (the step is ~0.4 ms: keep its overhead small)
            "jitter_steps": round(v["control_jitter"] / self.timestep), "obs_steps": round(v["obs_delay"] / self.timestep),
            "joint_noise": v["joint_noise"], "joint_offset": offset if np.any(offset) else None,
            "cube_pos_noise": v["cube_pos_noise"], "cube_rot_noise": v["cube_rot_noise"],
            "any_noise": bool(v["joint_noise"] or v["cube_pos_noise"] or v["cube_rot_noise"])}
        # physics
        m.body_mass[:] = nom["body_mass"]
        m.body_inertia[:] = nom["body_inertia"]
        m.body_mass[ids.arm_bodies] *= v["mass_scale"]
        m.body_inertia[ids.arm_bodies] *= v["mass_scale"]
        m.geom_friction[:] = nom["geom_friction"]
        m.geom_friction[ids.scene_geoms, 0] *= v["friction_scale"]
        m.geom_friction[ids.cube_geom, 0] *= v["cube_friction_scale"]
        m.dof_damping[:] = nom["dof_damping"] * v["damping_scale"]
        m.dof_armature[:] = nom["dof_armature"] * v["armature_scale"]
        kp = nom["actuator_gainprm"][:, 0] * v["kp_scale"]
        m.actuator_gainprm[:, 0] = kp
        m.actuator_biasprm[:] = nom["actuator_biasprm"]
        m.actuator_biasprm[:, 1] = -kp
        m.actuator_forcerange[:] = nom["actuator_forcerange"] * v["force_limit_scale"]
        if m.nhistory:
            m.actuator_delay[:] = self.actuator_delay(v["action_delay"])
        # the cube: a box of edge cube_size and mass cube_mass
        half = v["cube_size"] / 2
        m.geom_size[ids.cube_geom] = half
        m.geom_rbound[ids.cube_geom] = half * math.sqrt(3)
        m.geom_aabb[ids.cube_geom] = (0, 0, 0, half, half, half)
        m.geom_pos[ids.marker_geoms] = nom["geom_pos"][ids.marker_geoms] + ids.marker_normals * (
            half - nom["geom_size"][ids.cube_geom, 0])  # printed markers keep their size; the faces move
        m.body_mass[ids.cube_body] = v["cube_mass"]
        m.body_inertia[ids.cube_body] = v["cube_mass"] * (2 * half) ** 2 / 6
        # the look
        m.light_pos[:] = nom["light_pos"] + self.values["light_pos_offset"]
        m.light_diffuse[:] = nom["light_diffuse"] * v["light_scale"]
        m.vis.headlight.diffuse[:] = self.nominal_headlight[0] * v["light_scale"]
        m.vis.headlight.ambient[:] = self.nominal_headlight[1] * v["light_scale"]
        m.mat_rgba[:] = nom["mat_rgba"]
        m.mat_rgba[ids.table_mat, :3] = np.clip(nom["mat_rgba"][ids.table_mat, :3] + self.values["table_rgb_offset"],
                                               0, 1)
        m.mat_rgba[ids.cube_mat, :3] = np.clip(nom["mat_rgba"][ids.cube_mat, :3] + self.values["cube_rgb_offset"],
                                              0, 1)
        cams = ids.jittered_cameras
        m.cam_pos[:] = nom["cam_pos"]
        m.cam_pos[cams] += self.values["camera_pos_offset"]
        rotation = np.zeros(4)
        mujoco.mju_axisAngle2Quat(rotation, *_axis_angle(self.values["camera_rot_offset"]))
        m.cam_quat[:] = nom["cam_quat"]
        for i in cams:
            mujoco.mju_mulQuat(m.cam_quat[i], nom["cam_quat"][i], rotation)
        m.cam_fovy[:] = nom["cam_fovy"]
        m.cam_fovy[cams] = np.clip(nom["cam_fovy"][cams] + v["camera_fovy_offset"], 1.0, 170.0)

    def actuator_delay(self, delay: float) -> np.ndarray:
        """MuJoCo's `actuator_delay` (nu,) for a command delay of `delay` s. With zero-order-hold buffers the delay
        is rounded to whole physics steps and set half a step short, so the sample it reads is the one `delay`
        before, whatever the rounding of `data.time` (a delay of exactly k steps reads k or k - 1 steps back
        depending on the last bit of the time); interpolating buffers take it as it is."""
        interp = self.model.actuator_history[:, 1]
        steps = round(delay / self.timestep)
        held = max(0.0, (steps - 0.5) * self.timestep)
        return np.where(interp == 0, held, delay)

    def init_ctrl_history(self, data: mujoco.MjData) -> None:
        """Fill the actuators' ctrl history with the current `data.ctrl` (the commands "sent" before the
        episode), stamped up to `data.time`, so a delayed episode starts by holding its initial targets."""
        if not self.model.nhistory:
            return
        for i in range(self.model.nu):
            n = int(self.model.actuator_history[i, 0])
            times = data.time + self.timestep * (np.arange(n, dtype=np.float64) - (n - 1))  # ending now
            mujoco.mj_initCtrlHistory(self.model, data, i, times[:, None], np.full((n, 1), data.ctrl[i]))

    def substeps(self, frame_skip: int, rng: np.random.Generator) -> tuple[int, int]:
        """(physics steps in this control period, steps from the observation to the period's end): the period
        jittered by +-`control_jitter`, the observation `obs_delay` old (both rounded to physics steps)."""
        jitter = self._per_step["jitter_steps"]
        n = frame_skip + (int(rng.integers(-jitter, jitter + 1)) if jitter else 0)
        return n, min(self._per_step["obs_steps"], n - 1)

    def measure(self, joint_pos: np.ndarray, cube_pos: np.ndarray, cube_quat: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sensors' readings of the true joint positions (6,) rad, cube position (3,) m and orientation (4,)
        w-x-y-z: the encoders add the episode's offsets and Gaussian noise, the cube pose gets Gaussian position
        noise and a rotation by a Gaussian rotation vector (one draw of 12 normals per step when any noise is on)."""
        ps = self._per_step
        offset = ps["joint_offset"]
        q = joint_pos if offset is None else joint_pos + offset
        if not ps["any_noise"]:
            return q, cube_pos, cube_quat
        z = rng.standard_normal(12)
        q = q + ps["joint_noise"] * z[:6]
        cube_pos = cube_pos + ps["cube_pos_noise"] * z[6:9]
        if ps["cube_rot_noise"]:
            r = ps["cube_rot_noise"] * z[9:]
            angle = math.sqrt(r @ r)
            turn, out = np.empty(4), np.empty(4)
            mujoco.mju_axisAngle2Quat(turn, r / angle if angle > 0 else _Z_AXIS, angle)
            mujoco.mju_mulQuat(out, turn, np.asarray(cube_quat, dtype=np.float64))
            cube_quat = out if out[0] >= 0 else -out
        return q, cube_pos, cube_quat


_Z_AXIS = np.array([0.0, 0.0, 1.0])


class _SceneIds:
    """Indices of the Lift scene's parts that worlds change."""

    def __init__(self, model: mujoco.MjModel):
        self.cube_body = model.body("cube").id
        self.cube_geom = model.geom("cube_geom").id
        base = model.body("base").id
        self.arm_bodies = np.array([b for b in range(1, model.nbody) if b != self.cube_body and
                                    _is_descendant(model, b, base) and b != base])
        self.marker_geoms = np.array([g for g in range(model.ngeom) if g != self.cube_geom and
                                      model.geom_bodyid[g] == self.cube_body], dtype=int)
        pos = model.geom_pos[self.marker_geoms].reshape(-1, 3)
        self.marker_normals = np.zeros_like(pos)  # each marker layer's face: its largest offset from the centre
        self.marker_normals[np.arange(len(pos)), np.abs(pos).argmax(axis=1)] = np.sign(
            pos[np.arange(len(pos)), np.abs(pos).argmax(axis=1)])
        self.scene_geoms = np.array([g for g in range(model.ngeom) if g != self.cube_geom and
                                     g not in set(self.marker_geoms)])
        self.table_mat = model.material("table").id
        # the policies' cameras; the marker camera is a calibrated sensor (its calibration would absorb a shift)
        self.jittered_cameras = np.array([c for c in range(model.ncam) if model.camera(c).name not in
                                          UNJITTERED_CAMERAS], dtype=int)
        self.cube_mat = model.material("cube").id


def _is_descendant(model: mujoco.MjModel, body: int, ancestor: int) -> bool:
    while body > 0:
        if body == ancestor:
            return True
        body = model.body_parentid[body]
    return False


def _axis_angle(rotvec: np.ndarray) -> tuple[np.ndarray, float]:
    angle = float(np.linalg.norm(rotvec))
    return (np.asarray(rotvec) / angle if angle > 0 else np.array([0.0, 0.0, 1.0])), angle


def _fix_tracking_cameras(model: mujoco.MjModel) -> None:
    """Turn cameras that track a body (mode targetbody) into fixed ones with the same pose, so a rotation can be
    added to their orientation."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    for i in range(model.ncam):
        if model.cam_mode[i] in (mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODY,
                                 mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODYCOM) and model.cam_bodyid[i] == 0:
            mujoco.mju_mat2Quat(model.cam_quat[i], data.cam_xmat[i])
            model.cam_mode[i] = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
