"""System identification (robolearn sysid): recover known world parameters from a synthetic recording."""

import json

import pytest
import yaml
from test_train_cli import run

from robolearn.sim.sysid import ArmReplay, Recording
from robolearn.sim.world import World

TRUTH = {"name": "truth", "tag": "_truth", "physics": {"mass_scale": 1.25, "damping_scale": 1.6},
         "latency": {"action_delay": 0.03}}


def test_sysid_recovers_mass_damping_and_delay_from_a_recording(tmp_path):
    # a "real arm" with known parameters: the simulated arm in a world config of its own (./configs/world, found
    # through the apps' search path), driven by the scripted expert in virtual time
    (tmp_path / "configs" / "world").mkdir(parents=True)
    (tmp_path / "configs" / "world" / "truth.yaml").write_text(yaml.safe_dump(TRUTH))
    run("record", "device=expert", "world=truth", "max_episodes=3", "realtime=false",
        f"output={tmp_path}/rec.zarr", cwd=tmp_path)
    out = run("sysid", f"dataset={tmp_path}/rec.zarr", "name=fitted", "parameters=[mass_scale,damping_scale,action_delay]",
              f"report={tmp_path}/report.json", cwd=tmp_path)
    assert "wrote configs/world/fitted.yaml" in out.stdout
    fitted = World(yaml.safe_load((tmp_path / "configs" / "world" / "fitted.yaml").read_text()))
    assert fitted.range("mass_scale").low[0] == pytest.approx(1.25, rel=0.1)
    assert fitted.range("damping_scale").low[0] == pytest.approx(1.6, rel=0.1)
    assert fitted.range("action_delay").low[0] == pytest.approx(0.03, abs=0.002)  # one physics step
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rms_after_rad"] < 0.1 * report["rms_before_rad"]
    # the fitted world loads in the apps (world=fitted), and an existing output is not overwritten
    again = run("sysid", f"dataset={tmp_path}/rec.zarr", "name=fitted", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "exists; pass overwrite=true" in again.stderr
    # overwrite=true replaces a fitted world, never a file robolearn did not write
    other = tmp_path / "configs" / "world" / "truth.yaml"
    refused = run("sysid", f"dataset={tmp_path}/rec.zarr", "name=truth", "overwrite=true", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "was not written by robolearn sysid" in refused.stderr
    assert yaml.safe_load(other.read_text()) == TRUTH


def test_sysid_refuses_bad_recordings():
    with pytest.raises(ValueError, match=r"`joint_pos` must have shape \(T >= 2, 6\)"):
        Recording([[0.0] * 5] * 3, [[0.0] * 6] * 3)
    with pytest.raises(ValueError, match="at least one recorded episode"):
        ArmReplay([], 20)
    with pytest.raises(ValueError, match=r"cannot fit \['cube_size'\]"):
        ArmReplay([Recording([[0.0] * 6] * 3, [[0.0] * 6] * 3)], 20, parameters=["cube_size"])
