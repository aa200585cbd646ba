"""Checkpoints that were damaged or edited by hand: every case is a CheckpointError naming the file and
what was expected, found before any policy runs (and before a huge config allocates anything)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ros_helpers import tiny_lift_checkpoint
from safetensors.torch import load_file, save_file

from robolearn.errors import CheckpointError
from robolearn.policies.checkpoint import CheckpointManager, load_policy
from robolearn.policies.features import low_dim_spec
from robolearn.value import load_q_function


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return tiny_lift_checkpoint(tmp_path_factory.mktemp("ckpt") / "good")


def broken(good: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(good, folder)
    return folder


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_good_checkpoint_loads(good):
    policy = load_policy(good)
    obs = {"joint_pos": torch.zeros(1, 2, 6), "gripper_opening": torch.zeros(1, 2, 1),
           "cube_pos": torch.zeros(1, 2, 3), "cube_quat": torch.zeros(1, 2, 4)}
    assert torch.isfinite(policy.predict_action(obs)).all()


def nan_weights(folder):
    state = load_file(folder / "ema.safetensors")
    name = next(iter(state))
    state[name][...] = float("nan")
    save_file(state, folder / "ema.safetensors")


CASES = {
    "NaN weights": (nan_weights, r"ema.safetensors holds NaN or inf"),
    "inf normalizer": (lambda f: edit_json(f / "normalizer.json", lambda d: d["cube_pos"]["offset"].__setitem__(0, 1e999)),
                       r"`cube_pos.offset` holds NaN or inf"),
    "NaN normalizer": (lambda f: edit_json(f / "normalizer.json", lambda d: d["action"]["min"].__setitem__(0, float("nan"))),
                       r"`action.min` holds NaN or inf"),
    "zero scale": (lambda f: edit_json(f / "normalizer.json", lambda d: d["action"]["scale"].__setitem__(2, 0.0)),
                   r"`action.scale` must be > 0"),
    "wrong-sized normalizer": (lambda f: edit_json(f / "normalizer.json", lambda d: d["joint_pos"]["scale"].pop()),
                               r"`joint_pos.scale` has shape \(5,\), the config expects \(6,\)"),
    "normalizer missing a key": (lambda f: edit_json(f / "normalizer.json", lambda d: d.pop("cube_quat")),
                                 r"no statistics for `cube_quat`"),
    "normalizer not JSON": (lambda f: (f / "normalizer.json").write_text("{nope"), r"normalizer.json is invalid"),
    "huge down_dims": (lambda f: edit_yaml(f / "config.yaml", lambda d: d["policy"].__setitem__("down_dims", [100000, 200000, 400000])),
                       r"parameters, more than the limit"),
    "down_dims that do not fit the weights": (
        lambda f: edit_yaml(f / "config.yaml", lambda d: d["policy"].__setitem__("down_dims", [16, 48])),
        r"ema.safetensors does not match config.yaml"),
    "invalid YAML": (lambda f: (f / "config.yaml").write_text("policy: [unclosed\n  - x: {"), r"config.yaml is not valid YAML"),
    "YAML list": (lambda f: (f / "config.yaml").write_text("- 1\n- 2\n"), r"config.yaml must be a mapping, got list"),
    "no policy section": (lambda f: edit_yaml(f / "config.yaml", lambda d: d.pop("policy")), r"needs a mapping `policy:`"),
    "unknown policy key": (lambda f: edit_yaml(f / "config.yaml", lambda d: d["policy"].__setitem__("dwn_dims", [1])),
                           r"`policy` is invalid \(unknown DiffusionPolicyConfig keys \['dwn_dims'\]; it takes"),
    "wrong type in policy": (lambda f: edit_yaml(f / "config.yaml", lambda d: d["policy"].__setitem__("down_dims", "abc")),
                             r"does not describe a model that can be built"),
    "bad feature shape": (lambda f: edit_yaml(f / "config.yaml",
                                              lambda d: d["policy"]["obs_features"]["joint_pos"].__setitem__("shape", [0])),
                          r"obs_features `joint_pos`: shape must be a non-empty list of positive integers"),
    "unknown feature type": (lambda f: edit_yaml(f / "config.yaml",
                                                 lambda d: d["policy"]["obs_features"]["cube_pos"].__setitem__("type", "depth")),
                             r"obs_features `cube_pos`: type must be one of \['low_dim', 'rgb'\]"),
    "unknown policy class": (lambda f: edit_yaml(f / "config.yaml", lambda d: d.__setitem__("config_class", "os.system")),
                             r"unknown policy config class 'os.system'"),
    "weights not safetensors": (lambda f: (f / "ema.safetensors").write_bytes(b"\x80\x04pickle"),
                                r"ema.safetensors is not a readable safetensors file"),
    "missing file": (lambda f: (f / "ema.safetensors").unlink(), r"is missing \['ema.safetensors'\]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_checkpoint_is_a_clear_error(good, tmp_path, case):
    damage, message = CASES[case]
    folder = broken(good, tmp_path)
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        load_policy(folder)


def test_cli_prints_one_line_for_a_damaged_checkpoint(good, tmp_path):
    folder = broken(good, tmp_path)
    CASES["huge down_dims"][0](folder)
    proc = subprocess.run([sys.executable, "-m", "robolearn", "eval", f"checkpoint={folder}", "n_episodes=1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "more than the limit" in errors[0]


def test_q_function_checkpoints_are_validated_too(tmp_path):
    from robolearn.datasets import LinearNormalizer
    from robolearn.value import QFunction, QFunctionConfig
    from robolearn.value.qfunction import save_q_function

    config = QFunctionConfig(obs_features=low_dim_spec({"state": 3}), action_dim=2, n_obs_steps=2, n_action_steps=4)
    rng = np.random.default_rng(0)
    normalizer = LinearNormalizer.fit({"state": rng.normal(size=(20, 3)), "action": rng.normal(size=(20, 2))})
    save_q_function(tmp_path / "q", QFunction(config, normalizer))
    load_q_function(tmp_path / "q")
    edit_json(tmp_path / "q" / "normalizer.json", lambda d: d["state"]["scale"].__setitem__(0, -1.0))
    with pytest.raises(CheckpointError, match=r"`state.scale` must be > 0"):
        load_q_function(tmp_path / "q")


def test_failed_save_leaves_no_temporary_folder(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")

    def write_model(folder):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        manager.save(1, write_model, {}, {"step": 1})
    assert list((tmp_path / "checkpoints").iterdir()) == []
