"""`robolearn collect` and `robolearn dataset info` end to end, as a user runs them."""

import os
import subprocess
import sys

import numpy as np
import pytest

from robolearn.datasets import ReplayBuffer


def robolearn(*args, cwd, check=True):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, "-m", "robolearn", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"robolearn {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_collect_three_episodes_then_info_then_resume(tmp_path):
    out = tmp_path / "demo.zarr"
    proc = robolearn("collect", "n_episodes=3", f"output={out}", cwd=tmp_path)
    assert "3 episodes" in proc.stdout and "expert success" in proc.stdout
    assert "collect" in proc.stderr and "3/3" in proc.stderr  # the tqdm progress bar

    rb = ReplayBuffer.open(out)
    assert rb.n_episodes == 3
    expected = {"joint_pos", "gripper_opening", "cube_pos", "cube_quat", "action", "reward", "done",
                "success", "timestamp"}
    assert set(rb.keys) == expected
    ep = rb.get_episode(0)
    assert ep["done"][-1] and not ep["done"][:-1].any()
    assert ep["success"][-1] and ep["reward"][-1] == 1.0 and ep["reward"][:-1].sum() == 0
    assert ep["action"].shape[1] == 6
    np.testing.assert_allclose(np.diff(ep["timestamp"]), 0.05)

    info = robolearn("dataset", "info", str(out), cwd=tmp_path).stdout
    assert "episodes: 3" in info and f"steps: {rb.n_steps}" in info
    for key in expected:
        assert key in info
    assert "(6,)" in info and "float32" in info

    # Running again with a larger n_episodes tops the dataset up, reusing the first episodes.
    robolearn("collect", "n_episodes=4", f"output={out}", cwd=tmp_path)
    rb2 = ReplayBuffer.open(out)
    assert rb2.n_episodes == 4
    np.testing.assert_array_equal(rb2.get_episode(0)["action"], ep["action"])


def test_default_output_goes_to_the_data_folder(tmp_path):
    robolearn("collect", "n_episodes=1", cwd=tmp_path)
    assert ReplayBuffer.open(tmp_path / "data" / "lift_expert.zarr").n_episodes == 1


def test_collect_with_recoveries(tmp_path):
    out = tmp_path / "recovery.zarr"
    robolearn("collect", "n_episodes=2", "task.expert.failure_rate=1.0", "task.expert.max_retries=1", f"output={out}",
              cwd=tmp_path)
    rb = ReplayBuffer.open(out)
    expert = rb.attrs["robolearn"]["expert"]
    assert expert["failure_rate"] == 1.0 and expert["max_retries"] == 1
    for i in range(2):
        ep = rb.get_episode(i, ["action", "success"])
        assert ep["success"][-1]  # every mistake was recovered
        gripper = ep["action"][:, 5]  # rad: open 0.7, closed -0.15
        closed = np.flatnonzero(gripper < 0)
        assert len(closed) and (gripper[closed[0]:] > 0.5).any()  # closed, reopened, closed again
        assert gripper[-1] < 0


@pytest.mark.parametrize("args,message", [
    (["dataset", "info", "missing.zarr"], "replay buffer not found: missing.zarr"),
    (["collect", "n_episodes=0"], "n_episodes=0: expected an integer >= 1"),
    (["collect", "n_episodes=1", "task.expert.action_noise=-1"], "action_noise must be >= 0 rad, got -1"),
    (["collect", "n_episodes=1", "task.expert.max_retries=-1"], "max_retries must be >= 0, got -1"),
    (["collect", "n_episodes=1", "+task.expert.gripper=1"], "cannot build the expert robolearn.sim.expert.LiftExpert"),
    (["collect", "n_episodes=1", "+task.obs_featrues={}"], "task config has unknown keys ['obs_featrues']"),
    (["frobnicate"], "unknown command"),
])
def test_bad_input_gives_a_clear_error(tmp_path, args, message):
    proc = robolearn(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_rejects_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes").mkdir()
    proc = robolearn("dataset", "info", "notes", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "not a replay buffer" in proc.stderr
