"""Shared fixtures."""

import subprocess
import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Code under test may set torch's thread count for its process (PolicyNode does); in-process tests must not
    leak it to later tests (a different thread count changes float results in the last bits)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_lift_policy(tmp_path_factory):
    """A default Diffusion Policy trained once per test session on 200 expert Lift demonstrations
    (2,500 steps, about 5-6 min on 2 cores), for tests that need a policy that works."""
    root = tmp_path_factory.mktemp("lift_policy")
    for args in (["collect", "n_episodes=200", f"output={root}/demo.zarr"],
                 ["train", f"dataset={root}/demo.zarr", f"run_dir={root}/run", "training.steps=2500",
                  "training.warmup_steps=300", "eval.n_episodes=0", "eval.final_n_episodes=0", "threads=2"]):
        proc = subprocess.run([sys.executable, "-m", "robolearn", *args], cwd=root, capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run" / "checkpoints" / "latest"


@pytest.fixture(scope="session")
def lift_image_demo(tmp_path_factory):
    """Two scripted Lift episodes with front and wrist camera frames (96 x 96) and every low-dim key, collected
    once per session (a few seconds): a robolearn dataset as `robolearn collect` writes it."""
    root = tmp_path_factory.mktemp("lift_image_demo")
    proc = subprocess.run([sys.executable, "-m", "robolearn", "collect", "task=lift_image", "n_episodes=2",
                           f"output={root}/demo.zarr"], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "demo.zarr"
