"""`robolearn dataset import/export` as users run them: bad options, an interrupted import leaves nothing and the
rerun starts over, and `robolearn train task=imported` trains on an imported dataset."""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from robolearn.cli import main
from robolearn.datasets import ReplayBuffer
from robolearn.datasets.formats.common import FormatError, atomic_output, staging_path
from robolearn.datasets.replay_buffer import check_replaceable
from tests.test_lerobot_format import LENGTHS, make_v3


@pytest.mark.parametrize("args, message", [
    (["import", "format=parquet", "source=x"], "format='parquet': robolearn dataset import takes format=lerobot|robomimic|rosbag"),
    (["export", "format=robomimic", "source=x", "output=y"], "takes format=lerobot|rosbag"),
    (["import", "format=lerobot"], "give the dataset to import: source=PATH"),
    (["import", "format=lerobot", "source=/nowhere/at/all"], "/nowhere/at/all is not a LeRobot dataset"),
    (["import", "format=lerobot", "source=x", "image_size=[0,4]"], "image_size=[0, 4]: expected [height, width]"),
])
def test_bad_options_are_one_line_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["dataset", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_interrupted_import_leaves_no_output_and_a_rerun_starts_over(tmp_path, capsys):
    src = make_v3(tmp_path / "src")
    out = tmp_path / "out.zarr"
    # a failure after the first episode is written: nothing at the output, no staging left
    with pytest.raises(FormatError), atomic_output(out, False, check_replaceable) as staging:
        buffer = ReplayBuffer.create(staging, lock=False)
        buffer.add_episode({"x": np.zeros((3, 1), np.float32)})
        buffer.close()
        raise FormatError("the source broke half way")
    assert not out.exists() and not staging_path(out).exists()
    # a killed run leaves its staging folder: the next run removes it and imports from the start
    staging_path(out).mkdir()
    (staging_path(out) / "half.bin").write_bytes(b"\0" * 10)
    assert main(["dataset", "import", "format=lerobot", f"source={src}", f"output={out}"]) == 0
    assert "left by an interrupted run; starting again" in capsys.readouterr().err
    with ReplayBuffer.open(out) as buffer:
        assert buffer.episode_ends.tolist() == list(np.cumsum(LENGTHS))
    assert not staging_path(out).exists()
    # an existing output is kept unless overwrite=true, which replaces it whole
    with pytest.raises(SystemExit):
        main(["dataset", "import", "format=lerobot", f"source={src}", f"output={out}"])
    assert main(["dataset", "import", "format=lerobot", f"source={src}", f"output={out}", "overwrite=true",
                 "keys={next.reward: null}"]) == 0
    with ReplayBuffer.open(out) as buffer:
        assert "reward" not in buffer.keys


def test_killed_import_process_leaves_no_output(tmp_path):
    src = make_v3(tmp_path / "src")
    out = tmp_path / "killed.zarr"
    code = ("import os, signal, robolearn.datasets.replay_buffer as rb\n"
            "add = rb.ReplayBuffer.add_episodes\n"
            "def add_then_die(self, *a, **k):\n"
            "    out = add(self, *a, **k)\n"
            "    if self.n_episodes >= 1: os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return out\n"
            "rb.ReplayBuffer.add_episodes = add_then_die\n"
            "from robolearn.cli import main\n"
            f"main(['dataset', 'import', 'format=lerobot', 'source={src}', 'output={out}'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=300)
    assert proc.returncode == -9
    assert not out.exists() and staging_path(out).exists()  # half an import, never at the output path
    with ReplayBuffer.open(staging_path(out)) as half:
        assert half.n_episodes == 1  # killed after the first episode was committed to the staging dataset


def test_train_on_an_imported_dataset(tmp_path):
    src = make_v3(tmp_path / "so101_pick")
    assert main(["dataset", "import", "format=lerobot", f"source={src}", f"output={tmp_path}/so101.zarr"]) == 0
    proc = subprocess.run([sys.executable, "-m", "robolearn", "train", "task=imported", f"dataset={tmp_path}/so101.zarr",
                           f"run_dir={tmp_path}/run", "training.steps=4", "training.batch_size=4",
                           "training.warmup_steps=1", "training.val_every=2", "training.checkpoint_every=4",
                           "policy.down_dims=[16,32]", "policy.step_embed_dim=16", "policy.horizon=4",
                           "policy.n_action_steps=2", "threads=1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "run/checkpoints/latest/config.yaml").read_text())
    assert sorted(config["policy"]["obs_features"]) == ["joint_pos", "top_image"]  # read from the dataset
