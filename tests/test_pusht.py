"""Push-T, the second task: the env and its metric, the scripted expert, collection, training on the reference
dataset's layout, and train/eval end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from robolearn.datasets import ReplayBuffer
from robolearn.sim.pusht import (
    GOAL_POSE,
    LOCAL_KEYPOINTS,
    PushTEnv,
    coverage,
    keypoints,
)
from robolearn.sim.pusht_expert import PushTExpert


def robolearn(*args, cwd, check=True, timeout=900):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, "-m", "robolearn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"robolearn {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_coverage_of_hand_built_poses():
    assert coverage(GOAL_POSE) == pytest.approx(1.0)
    assert coverage(GOAL_POSE + [300.0, 0.0, 0.0]) == 0.0  # far away: no overlap
    assert coverage(GOAL_POSE + [0.0, 0.0, np.pi]) < 0.5  # upside down on the goal
    # one pixel off along x loses about a 1/37 of the area (the T is 120 px tall along its own axis)
    assert 0.96 < coverage(GOAL_POSE + [1.0, 0.0, 0.0]) < 0.98


def place_block(env, pose):
    """Put the block's body origin at pose (x, y, angle): the angle first (pymunk turns a body about its centre
    of mass), then the position."""
    env.base.block.angle = float(pose[2])
    env.base.block.position = (float(pose[0]), float(pose[1]))


def test_env_reward_and_success_follow_the_paper():
    env = PushTEnv()
    # the agent parked in a corner, the block exactly on its goal: reward 1, success, termination
    env.reset(seed=0, options={"reset_to_state": [30.0, 30.0, 100.0, 400.0, 0.0]})
    place_block(env, GOAL_POSE)
    obs, reward, terminated, truncated, info = env.step(np.array([30.0, 30.0]))
    assert reward == pytest.approx(1.0) and info["is_success"] and terminated and not truncated
    assert info["coverage"] == pytest.approx(coverage(env.block_pose), abs=1e-6)
    # the observation keys of the reference dataset, in its units
    assert set(obs) == {"state", "keypoint", "agent_pos"} and obs["state"].shape == (5,) and obs["keypoint"].shape == (9, 2)
    np.testing.assert_allclose(obs["agent_pos"], obs["state"][:2])
    np.testing.assert_allclose(obs["keypoint"], keypoints(env.block_pose), atol=1e-3)
    np.testing.assert_allclose(obs["state"][:2], [30.0, 30.0], atol=1.0)
    # the block far from its goal: reward = clip(coverage / 0.95, 0, 1) = 0, no success
    place_block(env, [400.0, 100.0, 0.0])
    _, reward, terminated, _, info = env.step(np.array([30.0, 30.0]))
    assert reward == 0.0 and not info["is_success"] and not terminated
    with pytest.raises(ValueError, match="action must be finite"):
        env.step(np.array([np.nan, 1.0]))


def test_keypoints_are_the_corners_and_the_centre_of_mass():
    assert LOCAL_KEYPOINTS.shape == (9, 2)
    kp = keypoints(np.array([100.0, 200.0, np.pi / 2]))  # rotated a quarter turn: (x, y) -> (-y, x)
    np.testing.assert_allclose(kp[-1], [100.0 - 45.0, 200.0], atol=1e-4)


def test_expert_pushes_the_t_home_with_several_modes():
    env, expert = PushTEnv(), PushTExpert()
    scores, successes, modes = [], 0, set()
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        expert.reset(obs, np.random.default_rng(seed))
        modes.add(tuple(sorted(expert.mode.items())))
        best = 0.0
        for _ in range(300):
            obs, reward, terminated, _, info = env.step(expert.act(obs))
            best = max(best, reward)
            if terminated:
                break
        scores.append(best)
        successes += info["is_success"]
    assert successes >= 2 and np.mean(scores) > 0.75, (successes, scores)
    assert len(modes) >= 3  # the way around the block and the order of rotation and translation vary


def test_gym_make_works_in_a_fresh_process_without_importing_robolearn(tmp_path):
    code = ("import sys, gymnasium as gym\n"
            "for env_id in ('robolearn/Lift-v0', 'robolearn/PushT-v0'):\n"
            "    env = gym.make(env_id)\n"
            "    obs, _ = env.reset(seed=0)\n"
            "    print(env_id, sorted(obs), env.spec.max_episode_steps)\n"
            "print('robolearn.sim' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         check=True).stdout.splitlines()
    assert out[0].startswith("robolearn/Lift-v0 ['cube_pos', 'cube_quat', 'gripper_opening', 'joint_pos']")
    assert out[1] == "robolearn/PushT-v0 ['agent_pos', 'keypoint', 'state'] 300"


def test_collect_keeps_only_successful_pusht_episodes(tmp_path):
    out = tmp_path / "pusht.zarr"
    proc = robolearn("collect", "task=pusht", "n_episodes=2", f"output={out}", cwd=tmp_path)
    assert "failed ones discarded" in proc.stdout
    rb = ReplayBuffer.open(out)
    assert rb.n_episodes == 2
    assert {"state", "keypoint", "action", "success"} <= set(rb.keys)
    for i in range(2):
        assert rb.get_episode(i, ["success"])["success"][-1]
    assert rb.attrs["robolearn_collection"]["attempts"] >= 2
    assert rb.attrs["robolearn"]["expert"]["_target_"] == "robolearn.sim.pusht_expert.PushTExpert"


def reference_pusht_store(path, n_episodes=3, length=40, seed=0):
    """A small store in exactly the layout of the reference Diffusion Policy's Push-T zarr (zarr format 2:
    data/{action, img, keypoint, n_contacts, state}, meta/episode_ends), as the reference writes it."""
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = root.create_group("data")
    agent = np.cumsum(rng.normal(0, 5, (n, 2)), axis=0) % 400 + 50
    block = np.tile(rng.uniform(150, 350, (n_episodes, 1, 3)), (1, length, 1)).reshape(n, 3)
    block[:, 2] %= 2 * np.pi
    data.create_array("state", data=np.concatenate([agent, block], axis=1).astype(np.float32), chunks=(161, 5))
    data.create_array("keypoint", data=np.stack([keypoints(b) for b in block]).astype(np.float32),
                      chunks=(161, 9, 2))
    data.create_array("action", data=(agent + rng.normal(0, 3, (n, 2))).astype(np.float32), chunks=(161, 2))
    data.create_array("img", data=rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8), chunks=(1, 96, 96, 3))
    data.create_array("n_contacts", data=np.zeros((n, 1), np.float32), chunks=(161, 1))
    root.create_group("meta").create_array("episode_ends", data=np.arange(1, n_episodes + 1) * length,
                                           chunks=(n_episodes,))
    return path


TINY_TRAIN = ["policy.down_dims=[8,16]", "policy.step_embed_dim=8", "training.steps=30", "training.batch_size=16",
              "training.warmup_steps=2", "training.val_every=15", "training.checkpoint_every=15"]


def test_train_on_the_reference_pusht_layout(tmp_path):
    store = reference_pusht_store(tmp_path / "pusht_cchi_v7_replay.zarr")
    proc = robolearn("train", "task=pusht", f"dataset={store}", f"run_dir={tmp_path}/run", *TINY_TRAIN,
                     "eval.n_episodes=0", "eval.final_n_episodes=0", cwd=tmp_path)
    assert "windows from" in proc.stdout
    config = (tmp_path / "run" / "checkpoints" / "latest" / "config.yaml").read_text()
    assert "keypoint:" in config and "- 9\n" in config  # the feature spec travels in the checkpoint


def test_train_then_eval_pusht_end_to_end(tmp_path):
    robolearn("collect", "task=pusht", "n_episodes=3", f"output={tmp_path}/pusht.zarr", cwd=tmp_path)
    robolearn("train", "task=pusht", f"dataset={tmp_path}/pusht.zarr", f"run_dir={tmp_path}/run", *TINY_TRAIN,
              "training.eval_every=30", "eval.n_episodes=2", "eval.final_n_episodes=2", "eval.n_video=1",
              cwd=tmp_path)
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert results["n_episodes"] == 2 and 0.0 <= results["mean_score"] <= 1.0
    assert len(results["max_rewards"]) == 2 and all(length <= 300 for length in results["lengths"])
    assert (tmp_path / "run" / "eval.mp4").stat().st_size > 0
    proc = robolearn("eval", "task=pusht", f"checkpoint={tmp_path}/run/checkpoints/latest", "n_episodes=2",
                     "n_video=0", f"output_dir={tmp_path}/ev", cwd=tmp_path)
    assert "mean score" in proc.stdout
    assert json.loads((tmp_path / "ev" / "eval_results.json").read_text())["mean_score"] >= 0.0
