"""Worlds by one rule: a world's name is its file's, a local world never silently loses to a shipped one, sysid
never writes one that would, results record the values they were measured with, and a world file that does not
parse or describes nothing valid is one line naming the file."""

import json
import shutil

import pytest
import yaml
from cli_helpers import run
from ros_helpers import tiny_lift_checkpoint

from robolearn.paths import config_dir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_lift_checkpoint(tmp_path_factory.mktemp("ckpt") / "policy")


def write_world(folder, name, text):
    path = folder / "configs" / "world" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def evaluate(tmp_path, checkpoint, *args):
    return run("eval", f"checkpoint={checkpoint}", "n_episodes=1", "n_video=0", "num_inference_steps=2",
               f"output_dir={tmp_path / 'ev'}", *args, cwd=tmp_path)


def test_a_local_world_with_a_shipped_name_is_refused_not_ignored(tmp_path, checkpoint):
    """Defect 2: ./configs/world/real_proxy.yaml was silently shadowed by the shipped real_proxy."""
    write_world(tmp_path, "real_proxy", "name: real_proxy\nphysics:\n  mass_scale: 1.9\n")
    line = evaluate(tmp_path, checkpoint, "world=real_proxy").error_line
    assert "configs/world/real_proxy.yaml has the name of a shipped world (real_proxy)" in line
    assert "rename the file" in line and not (tmp_path / "ev").exists()
    # a verbatim copy of the shipped file is no clash (nothing would be lost)
    shutil.copy(config_dir() / "world" / "real_proxy.yaml", tmp_path / "configs" / "world" / "real_proxy.yaml")
    assert evaluate(tmp_path, checkpoint, "world=real_proxy").code == 0


@pytest.mark.parametrize("name", ["real_proxy", "nominal", "randomized", "../escape", "a/b", "x.yaml", ""])
def test_sysid_refuses_shipped_and_path_like_names(tmp_path, name):
    line = run("sysid", f"dataset={tmp_path / 'none.zarr'}", f"name={name}", cwd=tmp_path).error_line
    assert "shipped worlds" in line if name in ("real_proxy", "nominal", "randomized") else "plain file name" in line
    assert not (tmp_path / "configs").exists()


def test_results_name_the_world_by_its_file_and_record_its_values(tmp_path, checkpoint):
    write_world(tmp_path, "heavy_arm", "physics:\n  mass_scale: 1.3\n")  # no name:, no tag:
    assert evaluate(tmp_path, checkpoint, "world=heavy_arm").code == 0
    results = json.loads((tmp_path / "ev" / "eval_results.json").read_text())
    assert results["world"] == "heavy_arm"
    assert results["world_config"]["physics"] == {"mass_scale": 1.3}
    assert results["world_config"]["tag"] == "_heavy_arm"  # its default datasets and runs are its own


@pytest.mark.parametrize(("text", "fragment"), [
    ("name: bad\nphysics: {mass_scale: [1,\n", "configs/world/w.yaml\", line 3"),
    ("physiks:\n  mass_scale: 1.3\n", "configs/world/w.yaml: world w: unknown group 'physiks'"),
    ("physics:\n  mass_scale: -2\n", "configs/world/w.yaml: world w: physics.mass_scale = [-2.0]"),
    ("latency:\n  action_delay: 0.5\n", "the actuator delay buffer"),
    ("name: other\n", "configs/world/w.yaml says `name: other`, but a world is named after its file (w)"),
    ("- 1\n- 2\n", "must map `name` and parameter groups to values"),
])
def test_a_bad_world_file_is_one_line_naming_it(tmp_path, checkpoint, text, fragment):
    write_world(tmp_path, "w", text)
    line = evaluate(tmp_path, checkpoint, "world=w").error_line
    assert fragment in line
    assert not (tmp_path / "ev").exists()


def test_sysid_writes_a_world_that_loads_by_its_name(tmp_path):
    """The round trip the rule is for: sysid's world is used by `world=<name>`, never shadowed."""
    from test_output_robustness import recording

    recording(tmp_path / "rec.zarr", episodes=1, steps=12)
    assert run("sysid", f"dataset={tmp_path / 'rec.zarr'}", "name=my_arm", "max_iter=1",
               "parameters=[kp_scale]", cwd=tmp_path).code == 0
    world = yaml.safe_load((tmp_path / "configs/world/my_arm.yaml").read_text())
    assert world["name"] == "my_arm" and "kp_scale" in world["physics"]


def test_sysid_on_data_it_cannot_fit_is_one_line(tmp_path):
    from test_output_robustness import recording

    recording(tmp_path / "five.zarr", joints=5)
    line = run("sysid", f"dataset={tmp_path / 'five.zarr'}", "name=a", cwd=tmp_path).error_line
    assert "five.zarr episode 0: recording `joint_pos` must have shape (T >= 2, 6), got (30, 5)" in line
    recording(tmp_path / "one_step.zarr", steps=1)
    line = run("sysid", f"dataset={tmp_path / 'one_step.zarr'}", "name=a", cwd=tmp_path).error_line
    assert "has no episode of two steps or more to fit to (2 episode(s) read)" in line
    for bad in ("episodes=0", "max_iter=-1", "rate_hz=0"):
        assert bad.split("=")[0] in run("sysid", f"dataset={tmp_path / 'five.zarr'}", "name=a", bad,
                                        cwd=tmp_path).error_line
    assert not (tmp_path / "configs").exists() and not (tmp_path / "outputs").exists()
