"""The Lift env: gymnasium conformance, seeding, action handling, success, rendering."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import robolearn.sim  # noqa: F401
from robolearn.sim import JOINT_NAMES, LIFT_ENV_ID, LiftEnv, joint_limits
from robolearn.sim.lift import CUBE_HALF_SIZE, HOME_QPOS, LIFT_HEIGHT


def test_check_env():
    env = gym.make(LIFT_ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_observation_and_action_spaces():
    env = LiftEnv()
    obs, info = env.reset(seed=0)
    assert set(obs) == {"joint_pos", "gripper_opening", "cube_pos", "cube_quat"}
    assert obs["joint_pos"].shape == (6,) and obs["cube_quat"].shape == (4,)
    assert env.action_space.shape == (6,)
    assert info == {"is_success": False}
    assert env.max_episode_steps == 200 and env.frame_skip == 25  # 10 s at 20 Hz over 500 Hz physics
    limits = joint_limits(env.model)
    np.testing.assert_allclose(env.action_space.low, limits.lower, rtol=1e-6)
    assert tuple(env.model.actuator(i).name for i in range(env.model.nu)) == JOINT_NAMES


def test_seeding_reproduces_episodes():
    def rollout(seed):
        env = LiftEnv()
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        traj = [obs["cube_pos"]]
        for _ in range(10):
            obs, *_ = env.step(env.action_space.sample())
            traj.append(np.concatenate([obs["joint_pos"], obs["cube_pos"]]))
        return traj

    a, b, c = rollout(7), rollout(7), rollout(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])


def test_out_of_range_actions_are_clipped_and_nan_rejected():
    env = LiftEnv()
    env.reset(seed=0)
    env.step(np.full(6, 100.0))
    np.testing.assert_allclose(env.data.ctrl, env.action_high, rtol=1e-6)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        env.step(np.zeros(5))


def test_success_terminates_with_sparse_reward():
    env = LiftEnv()
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(HOME_QPOS)
    assert (reward, terminated, info["is_success"]) == (0.0, False, False)
    # Teleport the cube above the success height: the next step reports success.
    adr = env.model.joint("cube_joint").qposadr[0]
    env.data.qpos[adr:adr + 3] = (0.3, 0.2, CUBE_HALF_SIZE + LIFT_HEIGHT + 0.2)
    _, reward, terminated, truncated, info = env.step(HOME_QPOS)
    assert (reward, terminated, truncated, info["is_success"]) == (1.0, True, False, True)


def test_truncation_after_max_episode_seconds():
    env = LiftEnv(max_episode_seconds=0.5)
    env.reset(seed=0)
    for i in range(10):
        _, _, terminated, truncated, _ = env.step(HOME_QPOS)
        assert truncated == (i == 9) and not terminated


def test_vector_env():
    envs = gym.make_vec(LIFT_ENV_ID, num_envs=3, vectorization_mode="sync")
    obs, _ = envs.reset(seed=[1, 2, 3])
    assert obs["cube_pos"].shape == (3, 3)
    obs, reward, terminated, truncated, info = envs.step(np.tile(HOME_QPOS, (3, 1)))
    assert reward.shape == (3,) and info["is_success"].shape == (3,)
    envs.close()


def test_offscreen_render_and_image_obs():
    env = LiftEnv(render_mode="rgb_array", image_obs=True, image_size=(48, 64))
    obs, _ = env.reset(seed=0)
    for key in ("front_image", "wrist_image"):
        assert obs[key].shape == (48, 64, 3) and obs[key].dtype == np.uint8
        assert obs[key].std() > 5  # not a blank frame
        assert env.observation_space[key].contains(obs[key])
    assert not np.array_equal(obs["front_image"], obs["wrist_image"])
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.std() > 5
    env.close()
