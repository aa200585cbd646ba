"""Resume that survives damage: a checkpoint is read back before `latest` points at it, the one before stays as
`previous`, and a damaged `latest` is named in one line with the way to resume from `previous`."""

import os

import pytest
import torch
from cli_helpers import run
from ros_helpers import IMAGE_FEATURES, tiny_lift_checkpoint
from safetensors.torch import save_file

from robolearn.errors import CheckpointError
from robolearn.policies.checkpoint import CheckpointManager

TINY = ["policy.down_dims=[8,16]", "policy.step_embed_dim=8", "policy.horizon=8", "policy.n_action_steps=4",
        "training.batch_size=8", "training.warmup_steps=1", "eval.n_episodes=0", "eval.final_n_episodes=0",
        "threads=1", "training.checkpoint_every=2"]


def save(manager, step, damaged=False):
    def write_model(folder):
        save_file({"w": torch.full((4,), float(step))}, folder / "model.safetensors")
        if damaged:
            with open(folder / "model.safetensors", "r+b") as f:
                f.truncate(20)
    return manager.save(step, write_model, {"x": torch.zeros(1)}, {"step": step})


def test_latest_previous_and_pruning(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert not (tmp_path / "checkpoints").exists() and manager.resume_point() is None  # nothing made before a save
    for step in (2, 4, 6):
        save(manager, step)
    links = {name: os.readlink(tmp_path / "checkpoints" / name) for name in ("latest", "previous")}
    assert links == {"latest": "step_0000006", "previous": "step_0000004"}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "previous", "step_0000004",
                                                                             "step_0000006"]


def test_a_checkpoint_that_does_not_read_back_never_becomes_latest(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    save(manager, 2)
    with pytest.raises(CheckpointError, match="model.safetensors is damaged or cut short"):
        save(manager, 4, damaged=True)
    assert os.readlink(tmp_path / "checkpoints" / "latest") == "step_0000002"
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("damage", ["truncate", "delete folder", "bad json"])
def test_a_damaged_latest_is_named_with_the_way_back(tmp_path, damage):
    manager = CheckpointManager(tmp_path / "checkpoints")
    for step in (2, 4):
        save(manager, step)
    latest = tmp_path / "checkpoints" / "step_0000004"
    if damage == "truncate":
        os.truncate(latest / "train_state.safetensors", 30)
    elif damage == "delete folder":
        import shutil
        shutil.rmtree(latest)
    else:
        (latest / "train_state.json").write_text('{"step": ')
    with pytest.raises(CheckpointError) as info:
        manager.resume_point("latest")
    assert "cannot resume from `latest` (step_0000004)" in str(info.value)
    assert "resume from the intact `previous` (step_0000002) with resume_from=previous" in str(info.value)
    assert manager.resume_point("previous") == tmp_path / "checkpoints" / "previous"
    # the next save after resuming from previous keeps an intact `previous`, never the damaged folder
    save(manager, 6)
    assert os.readlink(tmp_path / "checkpoints" / "previous") == "step_0000002"
    assert not latest.exists()


def test_train_resumes_from_previous_after_latest_was_cut_short(tmp_path):
    assert run("collect", "n_episodes=3", "output=d.zarr", cwd=tmp_path).code == 0
    assert run("train", "dataset=d.zarr", "run_dir=run", "training.steps=4", *TINY, cwd=tmp_path).code == 0
    ckpts = tmp_path / "run" / "checkpoints"
    os.truncate(ckpts / "latest" / "model.safetensors", 100)
    line = run("train", "dataset=d.zarr", "run_dir=run", "training.steps=6", *TINY, cwd=tmp_path).error_line
    assert "cannot resume from `latest` (step_0000004)" in line and "model.safetensors is damaged" in line
    assert "resume_from=previous" in line
    again = run("train", "dataset=d.zarr", "run_dir=run", "training.steps=6", "resume_from=previous", *TINY,
                cwd=tmp_path)
    assert again.code == 0 and "at step 2" in again.out, again.err[-2000:]
    assert os.readlink(ckpts / "latest") == "step_0000006"
    line = run("train", "dataset=d.zarr", "run_dir=run", "resume_from=step_9/../x", *TINY, cwd=tmp_path).error_line
    assert "resume_from='step_9/../x': expected one of ['latest', 'previous', 'best'] or a step folder" in line


def test_finetune_refuses_a_checkpoint_for_other_observations_before_any_rollout(tmp_path):
    """A policy trained on an imported dataset (other keys than the simulator gives) is refused in one line."""
    policy = tiny_lift_checkpoint(tmp_path / "imported_policy", features=IMAGE_FEATURES)
    line = run("finetune", f"checkpoint={policy}", "run_dir=ft", cwd=tmp_path).error_line
    assert "does not fit task=lift" in line and "front_image" in line
    line = run("finetune", f"checkpoint={policy}", "run_dir=ft", "task=imported", cwd=tmp_path).error_line
    assert "task imported has no simulator to fine-tune in" in line
    assert not (tmp_path / "ft").exists()
