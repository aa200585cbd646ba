"""`robolearn train` on torch.distributed: launched with torchrun, 2 Gloo ranks on CPU (loopback only) take the same
steps as one process with the whole batch, a run killed on N ranks resumes on M, and evaluation episodes are split
across ranks and gathered."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

TINY = ["policy.down_dims=[16,32]", "policy.step_embed_dim=16", "policy.horizon=8", "policy.n_action_steps=4",
        "training.batch_size=8", "training.warmup_steps=2", "training.val_every=50", "threads=1"]
NO_EVAL = ["eval.n_episodes=0", "eval.final_n_episodes=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(n_ranks, *args, app="train"):
    if n_ranks == 1:
        return [sys.executable, "-m", "robolearn", app, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={n_ranks}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "robolearn", app, *args]


ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}  # Gloo over loopback only


def run(n_ranks, *args, cwd, app="train"):
    proc = subprocess.run(command(n_ranks, *args, app=app), cwd=cwd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def params(run_dir, files=("model", "ema")):
    folder = run_dir / "checkpoints/latest"
    return {f"{f}.{k}": v for f in files for k, v in load_file(folder / f"{f}.safetensors").items()}


def assert_same_params(a, b, atol=1e-4):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < atol, worst


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    subprocess.run([sys.executable, "-m", "robolearn", "collect", "n_episodes=4", f"output={root}/demo.zarr"],
                   cwd=root, check=True, capture_output=True, timeout=600)
    return root


def test_two_gloo_ranks_at_half_batch_match_one_process(demo):
    common = [f"dataset={demo}/demo.zarr", "training.steps=8", "training.checkpoint_every=8", *TINY, *NO_EVAL]
    run(1, *common, f"run_dir={demo}/one", cwd=demo)
    two = run(2, *common, f"run_dir={demo}/two", cwd=demo)
    assert "2 processes" in two.stdout
    assert_same_params(params(demo / "one"), params(demo / "two"), atol=1e-5)


def kill_after_a_checkpoint(n_ranks, args, run_dir, cwd):
    """Start a run and SIGKILL every rank once it has written a checkpoint past step 0; returns that step."""
    proc = subprocess.Popen(command(n_ranks, *args), cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = run_dir / "checkpoints/latest"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.is_symlink() and int(os.readlink(latest).split("_")[-1]) >= 4:
                break
            time.sleep(0.01)
    finally:
        for pid in [*descendants(proc.pid), proc.pid]:  # torchrun starts each rank in a session of its own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    return int(os.readlink(latest).split("_")[-1])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_run_killed_on_two_ranks_resumes_on_one_and_back(demo):
    steps = 100
    common = [f"dataset={demo}/demo.zarr", f"training.steps={steps}", "training.checkpoint_every=2", *TINY, *NO_EVAL]
    run(1, *common, f"run_dir={demo}/whole", cwd=demo)
    chained = demo / "chained"
    first = kill_after_a_checkpoint(2, [*common, f"run_dir={chained}"], chained, demo)
    second = kill_after_a_checkpoint(1, [*common, f"run_dir={chained}"], chained, demo)
    assert 4 <= first <= second < steps, (first, second)  # both kills landed mid-run
    run(2, *common, f"run_dir={chained}", cwd=demo)
    assert_same_params(params(demo / "whole"), params(chained))


def test_evaluation_episodes_are_split_across_ranks_and_gathered(demo):
    run(2, f"dataset={demo}/demo.zarr", f"run_dir={demo}/evals", "training.steps=4", "training.checkpoint_every=4",
        "training.eval_every=4", "eval.n_episodes=3", "eval.final_n_episodes=3", "eval.n_video=1", *TINY, cwd=demo)
    results = json.loads((demo / "evals/eval_results.json").read_text())
    assert results["seeds"] == [100000, 100001, 100002] and results["n_episodes"] == 3
    assert len(results["successes"]) == 3 and (demo / "evals/eval.mp4").exists()


def test_batch_not_divisible_by_ranks_is_an_error(demo):
    proc = subprocess.run(command(2, f"dataset={demo}/demo.zarr", f"run_dir={demo}/odd", "training.steps=2",
                                  *TINY, "training.batch_size=7", *NO_EVAL), cwd=demo, capture_output=True, text=True,
                          timeout=600, env=ENV)
    assert proc.returncode != 0
    assert "training.batch_size=7 must be divisible by the number of processes (2)" in proc.stderr


def test_torch_is_built_with_gloo():
    assert torch.distributed.is_available() and torch.distributed.is_gloo_available()


def test_train_value_on_two_ranks_matches_one_process(demo):
    """IQL draws nothing at random in its update, so 2 ranks x 8 rows take exactly the steps of 1 x 16."""
    common = [f"dataset={demo}/demo.zarr", "algorithm=iql", "network.hidden=[32,32]", "training.batch_size=16",
              "training.steps=10", "training.checkpoint_every=10", "n_action_steps=4", "threads=1"]
    run(1, *common, f"run_dir={demo}/q1", cwd=demo, app="train-value")
    out = run(2, *common, f"run_dir={demo}/q2", cwd=demo, app="train-value").stdout
    assert "2 processes" in out
    folder = demo / "q1/checkpoints/latest"
    files = [p.stem for p in folder.glob("*.safetensors") if not p.stem.startswith("train_state")]
    assert files
    assert_same_params(params(demo / "q1", files), params(demo / "q2", files), atol=1e-5)


def test_dppo_finetune_on_two_ranks_runs_their_own_envs_and_resumes_on_one(demo):
    run(1, f"dataset={demo}/demo.zarr", f"run_dir={demo}/pre", "training.steps=10", "training.checkpoint_every=10",
        *[o for o in TINY if not o.startswith(("policy.horizon", "policy.n_action_steps"))], *NO_EVAL, cwd=demo)
    ft = [f"checkpoint={demo}/pre/checkpoints/latest", "policy.ft_denoising_steps=3", "policy.compile_rollouts=false",
          "task.env_kwargs.max_episode_seconds=0.5", "ppo.n_envs=2", "ppo.n_steps=4", "ppo.minibatch_size=16",
          "ppo.update_epochs=1", "ppo.critic_hidden=[16]", "ppo.critic_warmup_iters=0", "eval.every=1",
          "eval.n_episodes=3", "eval.final_n_episodes=3", "eval.n_video=0", "threads=1"]
    run(1, *ft, f"run_dir={demo}/ft1", "ppo.iterations=1", cwd=demo, app="finetune")
    run(2, *ft, f"run_dir={demo}/ft2", "ppo.iterations=1", cwd=demo, app="finetune")
    one = json.loads((demo / "ft1/eval_results.json").read_text())
    two = json.loads((demo / "ft2/eval_results.json").read_text())
    assert 1.5 < two["env_steps"] / one["env_steps"] < 2.5  # each rank stepped its own envs
    assert two["seeds"] == [100000, 100001, 100002] and two["curve"][-1]["iteration"] == 1
    run(1, *ft, f"run_dir={demo}/ft2", "ppo.iterations=2", cwd=demo, app="finetune")  # resumes on one rank
    resumed = json.loads((demo / "ft2/eval_results.json").read_text())
    assert [c["iteration"] for c in resumed["curve"]] == [0, 1, 2]
