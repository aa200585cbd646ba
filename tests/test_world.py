"""World parameters (robolearn.sim.world): sampling, application, latency, recording and errors."""

import mujoco
import numpy as np
import pytest
import yaml

from robolearn.datasets.collection import collect_dataset
from robolearn.datasets.replay_buffer import ReplayBuffer
from robolearn.paths import config_dir
from robolearn.sim.arm import load_model
from robolearn.sim.lift import LiftEnv
from robolearn.sim.world import (
    PARAMETERS,
    World,
    WorldModel,
    load_model_for,
    world_param_names,
)
from robolearn.tasks import task_from_config


def world_config(name: str) -> dict:
    return yaml.safe_load((config_dir() / "world" / f"{name}.yaml").read_text())


def rollout(world, seed: int = 3, steps: int = 15) -> np.ndarray:
    env = LiftEnv(world=world)
    obs, _ = env.reset(seed=seed)
    out = [np.concatenate([obs["joint_pos"], obs["cube_pos"]])]
    for t in range(steps):
        obs, *_ = env.step(np.array([0.2 * np.sin(t / 3), 0.3, 1.4, 1.5, 0.1, 0.6]))
        out.append(np.concatenate([obs["joint_pos"], obs["cube_pos"]]))
    return np.array(out)


def test_shipped_worlds_parse_and_nominal_is_nominal():
    assert World(world_config("nominal")).is_nominal
    for name in ("randomized", "real_proxy"):
        world = World(world_config(name))
        assert not world.is_nominal and world.name == name


def test_nominal_values_reproduce_the_nominal_world_exactly():
    # the world path (sampling, mj_setConst, the split step, the sensor models) with values that change no
    # dynamics or reading: identical observations
    np.testing.assert_array_equal(rollout(None), rollout({"visual": {"light_scale": 0.99}}))
    model, nominal = load_model(), load_model()
    wm = WorldModel(World({"physics": {"mass_scale": {"low": 0.5, "high": 2.0}}}), model, 0.05)
    wm.apply({k: np.full(p.size, p.nominal) for k, p in PARAMETERS.items()})
    for field in ("body_mass", "body_inertia", "geom_friction", "dof_damping", "actuator_gainprm", "actuator_biasprm",
                  "geom_size", "cam_pos", "cam_quat", "light_pos", "mat_rgba"):
        np.testing.assert_array_equal(getattr(model, field), getattr(nominal, field), err_msg=field)


def test_ranges_sample_inside_their_bounds_reproducibly_and_never_compound():
    world = {"physics": {"mass_scale": {"low": 0.8, "high": 1.25, "dist": "log_uniform"}},
             "sensors": {"joint_offset": {"low": -0.01, "high": 0.01}}}
    env = LiftEnv(world=world)
    nominal_mass = load_model().body_mass
    arm = env.world.ids.arm_bodies
    seen = []
    for seed in range(12):
        _, info = env.reset(seed=seed)
        scale = info["world"]["mass_scale"]
        assert 0.8 <= scale <= 1.25
        assert all(-0.01 <= info["world"][f"joint_offset[{i}]"] <= 0.01 for i in range(6))
        # applied from the nominal model: the model's masses are nominal x this episode's factor
        np.testing.assert_allclose(env.model.body_mass[arm], nominal_mass[arm] * scale)
        seen.append(scale)
    assert len(set(seen)) == len(seen)
    again = LiftEnv(world=world)
    assert [again.reset(seed=s)[1]["world"]["mass_scale"] for s in range(12)] == seen
    # a seed spawns the same scene in every world: the cube pose does not depend on the world's draws
    np.testing.assert_array_equal(LiftEnv().reset(seed=5)[0]["cube_pos"][:2], env.reset(seed=5)[0]["cube_pos"][:2])


def test_a_fixed_value_overrides_a_range():
    world = world_config("randomized")
    world["physics"]["kp_scale"] = 1.1
    env = LiftEnv(world=world)
    assert {env.reset(seed=s)[1]["world"]["kp_scale"] for s in range(5)} == {1.1}


def first_motion_time(delay: float) -> float:
    """Time (s) at which the shoulder first moves after its target changes at t = 0."""
    world = World({"latency": {"action_delay": delay}})
    model = load_model_for(world)
    wm = WorldModel(world, model, 0.05)
    wm.apply(world.sample(np.random.default_rng(0)))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    wm.init_ctrl_history(data)
    hold = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, hold, model.key("home").id)
    wm.init_ctrl_history(hold)
    data.ctrl[0] += 0.3
    for _ in range(100):
        mujoco.mj_step(model, data)
        mujoco.mj_step(model, hold)
        if abs(data.qpos[0] - hold.qpos[0]) > 1e-9:
            return data.time
    raise AssertionError("the joint never moved")


def test_the_action_delay_shifts_the_first_motion_by_the_configured_time():
    assert first_motion_time(0.03) - first_motion_time(0.0) == pytest.approx(0.03, abs=1e-6)


def test_observation_delay_and_noise_change_only_the_readings():
    world = {"latency": {"obs_delay": 0.02}, "sensors": {"joint_noise": 0.01}}
    plain, delayed = rollout(None), rollout(world)
    assert np.abs(plain - delayed).max() > 1e-3
    np.testing.assert_array_equal(plain[0, 6:], delayed[0, 6:])  # the reset's cube pose is exact


def test_world_parameters_land_in_episode_info_and_datasets(tmp_path):
    task = task_from_config(yaml.safe_load((config_dir() / "task" / "lift.yaml").read_text().replace(
        "${data_dir}/lift_expert${oc.select:world.tag,''}.zarr", "x.zarr").replace(
        "${task.env_kwargs.control_hz}", "20")))
    task = task.with_world(world_config("randomized"))
    out = collect_dataset(tmp_path / "r.zarr", task, n_episodes=2)
    with ReplayBuffer.open(out) as buffer:
        names = buffer.attrs["robolearn"]["world_params"]
        assert names == world_param_names()
        values = buffer.get_episode(1, ["world"])["world"]
    assert values.shape[1] == len(names) and np.all(values == values[0])
    env = LiftEnv(world=world_config("randomized"))
    _, info = env.reset(seed=1)  # episode 1 was attempt seed 1
    np.testing.assert_allclose(values[0], np.array(list(info["world"].values()), dtype=np.float32))


@pytest.mark.parametrize("world, match", [
    ({"physics": {"mass_scale": -1.0}}, r"physics.mass_scale = \[-1.0\] x: must be > 0"),
    ({"object": {"cube_mass": {"low": -0.1, "high": 0.02}}}, r"object.cube_mass .* must be > 0"),
    ({"latency": {"action_delay": {"low": 0.0, "high": 0.5}}}, r"latency.action_delay .* actuator delay buffer"),
    ({"physics": {"kp_scal": 1.0}}, r"unknown parameter physics.kp_scal"),
    ({"physics": {"kp_scale": {"low": 0.0, "high": 2.0, "dist": "log_uniform"}}}, r"log_uniform range needs low > 0"),
    ({"physics": {"kp_scale": {"low": 2.0, "high": 1.0}}}, r"low \[2.0\] is above high"),
    ({"sensors": {"joint_offset": [0.1, 0.2]}}, r"sensors.joint_offset: expected 6 finite value"),
    ({"colour": {}}, r"unknown group 'colour'"),
])
def test_invalid_worlds_are_refused_naming_the_parameter(world, match):
    with pytest.raises(ValueError, match=match):
        World(world)


def test_an_observation_delay_beyond_the_control_period_is_refused():
    with pytest.raises(ValueError, match=r"obs_delay \+ latency.control_jitter = 0.06 s must stay below"):
        LiftEnv(world={"latency": {"obs_delay": 0.06}})


def test_a_task_without_world_parameters_refuses_a_world():
    task = task_from_config({"name": "pusht", "env_id": "robolearn/PushT-v0",
                             "obs_features": {"state": {"shape": [5], "type": "low_dim"}}})
    assert task.with_world(world_config("nominal")).env_kwargs == {}
    with pytest.raises(ValueError, match="has no world parameters; use world=nominal"):
        task.with_world(world_config("randomized"))
