"""Every command that writes checks, before any work, that it can write its outputs and that no output is, holds or
lies inside what it reads; errors of the command line itself (an unknown option, a malformed override) are one
line; and a command that fails leaves no lock file and no empty output behind."""

import numpy as np
import pytest
from cli_helpers import leftovers, run, run_process
from hypothesis import given, settings
from hypothesis import strategies as st
from ros_helpers import tiny_lift_checkpoint

from robolearn.datasets import ReplayBuffer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_lift_checkpoint(tmp_path_factory.mktemp("ckpt") / "policy")


def recording(path, episodes=2, steps=30, joints=6):
    """A dataset shaped like `robolearn record`'s: joint_pos and action, rad."""
    rng = np.random.default_rng(0)
    with ReplayBuffer.create(path, attrs={"robolearn": {"rate_hz": 20.0}}) as buffer:
        for _ in range(episodes):
            q = np.cumsum(rng.normal(0, 0.01, (steps, joints)), axis=0).astype(np.float32)
            buffer.add_episode({"joint_pos": q, "action": q + 0.01})
    return path


# -- unwritable outputs: refused before the work, never after it ----------------------------------------------
def test_eval_with_an_unwritable_output_stops_before_the_rollouts(tmp_path, checkpoint):
    locked = tmp_path / "locked"
    result = run_process("eval", f"checkpoint={checkpoint}", f"output_dir={locked / 'ev'}", "n_episodes=3",
                         cwd=tmp_path, read_only=(locked,))
    line = result.error_line
    assert f"output_dir={locked / 'ev'} cannot be written" in line and "nothing was done" in line
    assert result.out == ""  # no rollout ran, no result was printed


def test_sysid_with_an_unwritable_output_stops_before_the_fit(tmp_path):
    recording(tmp_path / "rec.zarr")
    locked = tmp_path / "locked"
    for args in ([f"output={locked / 'w.yaml'}"], [f"report={locked / 'r.json'}"]):
        result = run_process("sysid", f"dataset={tmp_path / 'rec.zarr'}", "name=fitted", *args, cwd=tmp_path,
                             read_only=(locked,))
        assert "cannot be written" in result.error_line and "fitting" not in result.out


def test_import_collect_and_train_check_their_outputs_first(tmp_path):
    from test_lerobot_format import make_v3

    make_v3(tmp_path / "src")
    locked = tmp_path / "locked"
    for args in (["dataset", "import", "format=lerobot", f"source={tmp_path / 'src'}", f"output={locked / 'd.zarr'}"],
                 ["collect", "n_episodes=1", f"output={locked / 'd.zarr'}"],
                 ["train", f"run_dir={locked / 'run'}", f"dataset={tmp_path / 'none.zarr'}"]):
        assert "cannot be written" in run_process(*args, cwd=tmp_path, read_only=(locked,)).error_line, args
    assert list(locked.iterdir()) == [] and not (tmp_path / "none.zarr").exists()


def test_a_result_that_cannot_be_written_is_kept_elsewhere(tmp_path, monkeypatch):
    from robolearn.errors import UserError
    from robolearn.outputs import write_text_or_keep

    (tmp_path / "results.json").mkdir()  # a folder where the file goes: the write fails at the end
    with pytest.raises(UserError, match="it was saved to") as info:
        write_text_or_keep(tmp_path / "results.json", '{"success_rate": 0.9}', "evaluation results")
    kept = str(info.value).split("it was saved to ")[1].split(" instead")[0]
    from pathlib import Path
    assert Path(kept).read_text() == '{"success_rate": 0.9}'
    Path(kept).unlink()


# -- outputs apart from sources ----------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "template", "fragment"), [
    ("train", ["dataset={d}", "run_dir={d}"], "run_dir={d} is dataset={d}"),
    ("train", ["dataset={d}", "run_dir={d}/run"], "lies inside dataset="),
    ("train", ["dataset={d}", "run_dir={t}"], "holds dataset="),
    ("train-value", ["dataset={d}", "run_dir={d}/run"], "lies inside dataset="),
    ("finetune", ["checkpoint={c}", "run_dir={c}/..", "dataset={d}"], "holds checkpoint="),
    ("eval", ["checkpoint={c}", "output_dir={c}/eval"], "lies inside checkpoint="),
    ("sysid", ["dataset={d}", "name=x", "output={d}/x.yaml"], "lies inside dataset="),
    ("sysid", ["dataset={d}", "name=x", "report={d}/r.json"], "lies inside dataset="),
    ("dataset", ["export", "format=lerobot", "source={d}", "output={d}"], "is source="),
])
def test_no_command_writes_into_over_or_around_what_it_reads(tmp_path, checkpoint, command, template, fragment):
    import shutil

    d = recording(tmp_path / "data" / "rec.zarr")
    c = shutil.copytree(checkpoint, tmp_path / "runs" / "policy")
    fill = {"d": d, "c": c, "t": tmp_path}
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    line = run(command, *[a.format(**fill) for a in template], cwd=tmp_path).error_line
    assert fragment.format(**fill) in line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, moved or locked


# -- the command line itself ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragment"), [
    (["train", "trainig.steps=5"], "Could not override 'trainig.steps'. Key 'trainig' is not in struct"),
    (["train", "world=nowhere"], "Could not find 'world/nowhere'"),
    (["eval", "task=nope"], "Could not find 'task/nope'"),
    (["collect", "n_episodes=[1,"], "no viable alternative"),
    (["eval", "checkpoint=x", "world.physiks.mass_scale=2"], "Key 'physiks' is not in struct"),
])
def test_config_composition_errors_are_one_line(tmp_path, args, fragment):
    result = run(*args, cwd=tmp_path)
    line = result.error_line
    assert fragment in line and "HYDRA_FULL_ERROR" not in result.err and "Config search path" not in line
    assert list(tmp_path.iterdir()) == []  # hydra wrote nothing (no outputs/ folder)


def test_a_failed_command_leaves_no_lock_file_or_empty_output(tmp_path):
    from test_lerobot_format import make_v3

    src = make_v3(tmp_path / "src")
    (src / "meta/info.json").write_text("{}")
    (tmp_path / "out").mkdir()
    run("dataset", "import", "format=lerobot", f"source={src}", f"output={tmp_path / 'out' / 'd.zarr'}",
        cwd=tmp_path).error_line
    assert list((tmp_path / "out").iterdir()) == []
    run("train", f"dataset={tmp_path / 'none.zarr'}", "collect_if_missing=false", f"run_dir={tmp_path / 'runs/x'}",
        cwd=tmp_path).error_line
    assert leftovers(tmp_path / "runs") == [] and not (tmp_path / "runs" / "x").exists()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24))
def test_property_a_path_reaches_the_command_exactly_as_given(value):
    """Whatever a path looks like (non-ASCII, brackets, commas, quotes, backslashes, digits only, 'true'), a path
    option receives that text, not a number, a list, a sweep or a string hydra unescaped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from robolearn.cli import quote_path_override

    arg = quote_path_override(f"output={value}")
    if value == "null" or (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""):
        assert arg == f"output={value}"  # null, and a value the user quoted, are hydra's to read
        return
    assert OverridesParser.create().parse_override(arg).value() == value
