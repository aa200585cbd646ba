"""`robolearn train` and `robolearn eval` end to end on a tiny config, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

# A network and schedule small enough for CI; every other setting is the shipped default.
TINY = ["policy.down_dims=[16,32]", "policy.step_embed_dim=16", "policy.horizon=8", "policy.n_action_steps=4",
        "training.batch_size=32", "training.warmup_steps=5", "training.log_every=5", "training.val_every=20",
        "eval.n_episodes=2", "eval.final_n_episodes=2", "eval.n_video=1", "collect.n_episodes=4", "threads=1"]


def robolearn_cmd(*args):
    return [sys.executable, "-m", "robolearn", *args]


def run(*args, cwd, check=True, timeout=600):
    proc = subprocess.run(robolearn_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ})
    if check and proc.returncode != 0:
        raise AssertionError(f"robolearn {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def test_train_then_eval_end_to_end(tmp_path):
    proc = run("train", f"dataset={tmp_path}/demo.zarr", f"run_dir={tmp_path}/run", "training.steps=40",
               "training.eval_every=20", "training.checkpoint_every=20", *TINY, cwd=tmp_path)
    out = proc.stdout
    assert "collecting it with the scripted expert" in out  # the dataset was missing
    assert "success" in out and "checkpoint:" in out and "video:" in out and "tensorboard --logdir" in out
    run_dir = tmp_path / "run"
    latest = run_dir / "checkpoints" / "latest"
    for name in ("config.yaml", "normalizer.json", "model.safetensors", "ema.safetensors",
                 "train_state.safetensors", "train_state.json"):
        assert (latest / name).is_file(), name
    assert json.loads((latest / "train_state.json").read_text())["counters"]["step"] == 40
    assert (run_dir / "eval.mp4").stat().st_size > 1000
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    results = json.loads((run_dir / "eval_results.json").read_text())
    assert results["n_episodes"] == 2 and 0.0 <= results["success_rate"] <= 1.0
    assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob("*.pkl")) and not list(run_dir.rglob("*.ckpt"))

    proc = run("eval", f"checkpoint={latest}", "n_episodes=2", "n_video=1", "num_inference_steps=3",
               f"output_dir={tmp_path}/ev", cwd=tmp_path)
    assert "success" in proc.stdout
    ev = json.loads((tmp_path / "ev" / "eval_results.json").read_text())
    assert ev["num_inference_steps"] == 3 and ev["n_episodes"] == 2 and len(ev["ci95"]) == 2
    assert (tmp_path / "ev" / "eval.mp4").stat().st_size > 1000
    # the same policy in the real-proxy world (configs/world/real_proxy.yaml)
    proc = run("eval", f"checkpoint={latest}", "world=real_proxy", "n_episodes=1", "n_video=0",
               "num_inference_steps=3", f"output_dir={tmp_path}/ev_proxy", cwd=tmp_path)
    assert "in world real_proxy: success" in proc.stdout
    assert json.loads((tmp_path / "ev_proxy" / "eval_results.json").read_text())["world"] == "real_proxy"


def latest_step(run_dir: Path) -> int:
    link = run_dir / "checkpoints" / "latest"
    return int(os.readlink(link).split("_")[1]) if link.is_symlink() else -1


def test_killed_training_resumes_and_matches_an_uninterrupted_run(tmp_path):
    common = [f"dataset={tmp_path}/demo.zarr", "training.steps=300", "training.checkpoint_every=10",
              "eval.n_episodes=0", "eval.final_n_episodes=1", "eval.n_video=0", *TINY]
    run("collect", "n_episodes=4", f"output={tmp_path}/demo.zarr", cwd=tmp_path)
    run("train", f"run_dir={tmp_path}/a", *common, cwd=tmp_path)

    killed_at = kill_after_checkpoint(["train", f"run_dir={tmp_path}/b", *common], tmp_path / "b", tmp_path, 20)
    assert 20 <= killed_at < 300

    out = run("train", f"run_dir={tmp_path}/b", *common, cwd=tmp_path).stdout
    assert f"at step {killed_at}" in out and "resumed from" in out
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "a" / "checkpoints" / "latest" / name)
        b = load_file(tmp_path / "b" / "checkpoints" / "latest" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] == b[key]).all(), f"{name}:{key} differs after resume"


def kill_after_checkpoint(args, run_dir: Path, cwd: Path, min_step: int) -> int:
    """Start `robolearn <args>`, SIGKILL it once `run_dir` holds a checkpoint at step >= min_step; the step."""
    proc = subprocess.Popen(robolearn_cmd(*args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while latest_step(run_dir) < min_step:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    return latest_step(run_dir)


def test_image_policy_trains_resumes_with_its_encoders_and_evaluates_on_lift_image(tmp_path):
    """task=lift_image end to end at CI size: two 96 x 96 cameras collected, an image policy trained, killed,
    resumed to the same weights as an uninterrupted run (image encoders included), then evaluated with a video
    that shows the policy's camera views."""
    common = ["task=lift_image", f"dataset={tmp_path}/img.zarr", "training.steps=60", "training.checkpoint_every=5",
              "training.batch_size=8", "eval.n_episodes=0", "eval.final_n_episodes=1", "eval.n_video=0",
              *[arg for arg in TINY if not arg.startswith(("training.batch_size", "eval."))]]
    run("collect", "task=lift_image", "n_episodes=3", f"output={tmp_path}/img.zarr", cwd=tmp_path)
    run("train", f"run_dir={tmp_path}/a", *common, cwd=tmp_path)
    killed_at = kill_after_checkpoint(["train", f"run_dir={tmp_path}/b", *common], tmp_path / "b", tmp_path, 10)
    assert 10 <= killed_at < 60
    out = run("train", f"run_dir={tmp_path}/b", *common, cwd=tmp_path).stdout
    assert f"at step {killed_at}" in out
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "a" / "checkpoints" / "latest" / name)
        b = load_file(tmp_path / "b" / "checkpoints" / "latest" / name)
        assert any(k.startswith("obs_encoder.image_encoders.wrist_image.") for k in a)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), f"{name} differs after resume"
    proc = run("eval", "task=lift_image", f"checkpoint={tmp_path}/a/checkpoints/latest", "n_episodes=1",
               "n_video=1", f"output_dir={tmp_path}/ev", cwd=tmp_path)
    import imageio

    frame = imageio.get_reader(tmp_path / "ev" / "eval.mp4").get_data(0)
    assert frame.shape[0] == 240 and frame.shape[1] > 320  # the scene (240 x 320) with the camera column beside it
    proc = run("eval", f"checkpoint={tmp_path}/a/checkpoints/latest", "n_episodes=1", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "front_image" in proc.stderr and "task=" in proc.stderr  # task=lift has no cameras


def test_resume_refuses_a_changed_policy_config(tmp_path):
    base = [f"dataset={tmp_path}/demo.zarr", f"run_dir={tmp_path}/r", "training.steps=10",
            "training.checkpoint_every=10", "eval.n_episodes=0", "eval.final_n_episodes=1", "eval.n_video=0", *TINY]
    run("train", *base, cwd=tmp_path)
    proc = run("train", *base, "policy.kernel_size=3", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "pass another run_name=" in proc.stderr
    proc = run("train", *base, "resume=false", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "already holds checkpoints" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["eval"], "give a checkpoint folder"),
    (["eval", "checkpoint=nowhere"], "checkpoint folder not found: nowhere"),
    (["train", "dataset=missing.zarr", "collect_if_missing=false"], "dataset missing.zarr not found"),
    (["train", "device=cuda:3", "dataset=missing.zarr"], "CUDA is not available"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    if "cuda" in " ".join(args):
        import torch
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    proc = run(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_default_main_job_reaches_80_percent(tmp_path):
    """The README's main job with its shipped defaults (about 15-20 min on 2 CPU cores; CI skips it)."""
    run("train", cwd=tmp_path, timeout=3600)
    results = json.loads((tmp_path / "runs" / "lift_diffusion_unet" / "eval_results.json").read_text())
    assert results["n_episodes"] == 50
    assert results["success_rate"] >= 0.8, results["success_rate"]
