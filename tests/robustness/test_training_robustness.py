"""`robolearn train` refuses bad values, data that does not fit the task, and a changed dataset on resume,
each with one line before the first training step; unexpected errors point to a saved traceback."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robolearn.datasets import ReplayBuffer

TINY = ["policy.down_dims=[8,16]", "policy.step_embed_dim=8", "policy.horizon=8", "policy.n_action_steps=4",
        "training.batch_size=8", "training.warmup_steps=1", "eval.n_episodes=0", "eval.final_n_episodes=0",
        "threads=1"]


def robolearn(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "robolearn", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(("override", "expected"), [
    ("training.steps=abc", "training.steps='abc': expected an integer >= 1"),
    ("training.steps=0", "training.steps=0: expected an integer >= 1"),
    ("training.steps=-5", "training.steps=-5: expected an integer >= 1"),
    ("training.lr=-1", "training.lr=-1: expected a finite number > 0"),
    ("training.batch_size=1.5", "training.batch_size=1.5: expected an integer >= 1"),
    ("training.val_ratio=2", "training.val_ratio=2: expected a finite number in [0, 0.9]"),
])
def test_bad_training_values_are_one_line_errors(tmp_path, override, expected):
    line = one_line_error(robolearn("train", override, f"dataset={tmp_path}/none.zarr", cwd=tmp_path))
    assert expected in line
    assert not (tmp_path / "none.zarr").exists()  # refused before anything was collected


@pytest.mark.parametrize(("args", "expected"), [
    (["collect", "n_episodes=abc"], "n_episodes='abc': expected an integer >= 1"),
    (["collect", "task.expert.failure_rate=1.5"], "failure_rate must be in [0, 1], got 1.5"),
    (["eval", "checkpoint=x", "n_episodes=0"], "n_episodes=0: expected an integer >= 1"),
    (["finetune", "checkpoint=x", "ppo.iterations=-1"], "ppo.iterations=-1: expected an integer >= 1"),
    (["finetune", "checkpoint=x", "ppo.gamma=nan"], "ppo.gamma=nan: expected a finite number in [0, 1]"),
    (["train-value", "training.steps=1e3"], "training.steps=1000.0: expected an integer >= 1"),
])
def test_bad_values_of_other_apps_are_one_line_errors(tmp_path, args, expected):
    assert expected in one_line_error(robolearn(*args, cwd=tmp_path))


def test_run_folder_is_locked_while_training(tmp_path):
    from robolearn.lock import WriterLock

    with WriterLock(tmp_path / "run", "run folder"):
        line = one_line_error(robolearn("train", "dataset=none.zarr", "run_dir=run", *TINY, cwd=tmp_path))
    assert "run folder run is being written by another process" in line


def test_data_that_does_not_fit_the_task_is_refused_before_training(tmp_path):
    rng = np.random.default_rng(0)
    with ReplayBuffer.create(tmp_path / "other.zarr") as rb:
        for _ in range(3):
            rb.add_episode({"joint_pos": rng.normal(size=(20, 6)).astype(np.float32),
                            "gripper_opening": rng.normal(size=(20, 1)).astype(np.float32),
                            "cube_pos": rng.normal(size=(20, 3)).astype(np.float32),
                            "cube_quat": rng.normal(size=(20, 4)).astype(np.float32),
                            "action": rng.normal(size=(20, 4)).astype(np.float32)})
    line = one_line_error(robolearn("train", "dataset=other.zarr", "run_dir=run", *TINY, cwd=tmp_path))
    assert "`action` has dimension 4, but robolearn/Lift-v0 takes actions of dimension 6" in line
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_resume_compares_the_dataset_by_content_not_path(tmp_path):
    assert robolearn("collect", "n_episodes=5", "output=d.zarr", cwd=tmp_path).returncode == 0
    first = robolearn("train", "dataset=d.zarr", "run_dir=run", "training.steps=2", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    normalizer = (tmp_path / "run/checkpoints/latest/normalizer.json").read_text()
    # the same dataset given as an absolute path resumes
    again = robolearn("train", f"dataset={tmp_path / 'd.zarr'}", "run_dir=run", "training.steps=3", *TINY,
                      cwd=tmp_path)
    assert again.returncode == 0 and "resumed from" in again.stdout, again.stderr[-3000:]
    # the dataset grows under the same path: refused, nothing changed
    assert robolearn("collect", "n_episodes=7", "output=d.zarr", cwd=tmp_path).returncode == 0
    line = one_line_error(robolearn("train", "dataset=d.zarr", "run_dir=run", "training.steps=4", *TINY,
                                    cwd=tmp_path))
    assert "was trained on a different dataset (5 episodes" in line and "(7 episodes" in line
    assert "allow_dataset_change=true" in line
    # told otherwise, it continues with the run's own normalizer (never refits it)
    told = robolearn("train", "dataset=d.zarr", "run_dir=run", "training.steps=4", "allow_dataset_change=true",
                     *TINY, cwd=tmp_path)
    assert told.returncode == 0 and "the dataset changed" in told.stdout, told.stderr[-3000:]
    assert (tmp_path / "run/checkpoints/latest/normalizer.json").read_text() == normalizer


def test_corrupted_dataset_is_never_trained_on(tmp_path):
    assert robolearn("collect", "n_episodes=3", "output=d.zarr", cwd=tmp_path).returncode == 0
    chunk = next(p for p in sorted((tmp_path / "d.zarr/data/action/c").rglob("*")) if p.is_file())
    chunk.unlink()
    line = one_line_error(robolearn("train", "dataset=d.zarr", "run_dir=run", "training.steps=2", *TINY,
                                    cwd=tmp_path))
    assert "`data/action` chunk" in line and "is missing" in line
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_internal_error_prints_a_short_message_and_saves_the_traceback(tmp_path, capsys, monkeypatch):
    from robolearn import cli

    monkeypatch.chdir(tmp_path)

    def broken_task(cfg):
        raise RuntimeError("something unexpected\nwith a second line")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_hydra_app("robolearn dataset info", "dataset_info", broken_task, [])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "robolearn dataset info: internal error: RuntimeError: something unexpected with a second line" in err
    path = Path(err.split("full traceback: ")[1].split(")")[0])
    assert "Traceback" in path.read_text() and "broken_task" in path.read_text()
    path.unlink()
