"""robomimic HDF5: import of a file written here in robomimic's layout (demo order, masks, env_args), the split used
by training, and the errors of a damaged file."""

import json

import h5py
import numpy as np
import pytest

from robolearn.cli import main
from robolearn.datasets import ReplayBuffer, SequenceDataset
from robolearn.datasets.formats.common import FormatError
from robolearn.datasets.formats.robomimic import RobomimicSource

DEMOS = {"demo_0": 6, "demo_1": 4, "demo_10": 5, "demo_2": 7}  # robomimic orders them 0, 1, 2, 10
ORDER = ["demo_0", "demo_1", "demo_2", "demo_10"]


def make_file(path):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = sum(DEMOS.values())
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}})
        for name, n in DEMOS.items():
            k = int(name.removeprefix("demo_"))
            g = data.create_group(name)
            g.attrs["num_samples"] = n
            g["actions"] = np.full((n, 7), k, np.float64) + np.arange(n)[:, None]
            g["rewards"] = (np.arange(n) == n - 1).astype(np.float64)
            g["dones"] = (np.arange(n) == n - 1).astype(np.int64)
            g["states"] = np.zeros((n, 32))
            g["obs/robot0_eef_pos"] = np.full((n, 3), k, np.float64)
            g["obs/agentview_image"] = np.full((n, 8, 8, 3), k, np.uint8)
            g["next_obs/robot0_eef_pos"] = np.full((n, 3), k + 1, np.float64)
        f["mask/train"] = np.array([b"demo_0", b"demo_2", b"demo_10"])
        f["mask/valid"] = np.array([b"demo_1"])
    return path


def test_robomimic_file_imports_in_demo_order_with_its_split(tmp_path):
    src = make_file(tmp_path / "lift_ph.hdf5")
    assert main(["dataset", "import", "format=robomimic", f"source={src}", f"output={tmp_path}/lift.zarr"]) == 0
    with ReplayBuffer.open(tmp_path / "lift.zarr") as buffer:
        assert buffer.episode_lengths.tolist() == [DEMOS[d] for d in ORDER]
        assert sorted(buffer.keys) == ["action", "agentview_image", "done", "reward", "robot0_eef_pos", "sim_state"]
        for e, name in enumerate(ORDER):
            ep = buffer.get_episode(e)
            k = int(name.removeprefix("demo_"))
            assert ep["robot0_eef_pos"][0, 0] == k and ep["agentview_image"][0, 0, 0, 0] == k
            np.testing.assert_array_equal(ep["action"][:, 0], k + np.arange(DEMOS[name]))
        attrs = buffer.attrs
    assert attrs["splits"] == {"train": [0, 2, 3], "valid": [1]}
    assert attrs["source"]["env_args"]["env_name"] == "Lift"
    # training and validation windows come from the recorded split, not a random one
    train = SequenceDataset(tmp_path / "lift.zarr", ["robot0_eef_pos"], horizon=4, n_obs_steps=2, n_action_steps=2)
    assert train.val_mask.tolist() == [False, True, False, False]
    assert train.train_mask.tolist() == [True, False, True, True]


def test_robomimic_key_map_and_errors(tmp_path):
    src = make_file(tmp_path / "f.hdf5")
    source = RobomimicSource(src, keys={"next_obs/robot0_eef_pos": "next_eef_pos", "states": None})
    assert "next_eef_pos" in source.key_map.values() and "sim_state" not in source.key_map.values()
    source.close()
    with pytest.raises(FormatError, match=r"names \['obs/wrist_image'\]"):
        RobomimicSource(src, keys={"obs/wrist_image": "wrist_image"})
    (tmp_path / "trunc.hdf5").write_bytes(src.read_bytes()[:2000])
    with pytest.raises(FormatError, match="trunc.hdf5 is not a readable HDF5 file, or it is truncated"):
        RobomimicSource(tmp_path / "trunc.hdf5")
    with h5py.File(tmp_path / "bad_mask.hdf5", "w") as f:
        f["data/demo_0/actions"] = np.zeros((2, 1))
        f["mask/valid"] = np.array([b"demo_9"])
    with pytest.raises(FormatError, match=r"mask/valid names demos \['demo_9'\]"):
        RobomimicSource(tmp_path / "bad_mask.hdf5")
    with h5py.File(tmp_path / "short.hdf5", "w") as f:
        f["data/demo_0/actions"] = np.zeros((3, 1))
        f["data/demo_0/obs/x"] = np.zeros((2, 1))
        f["data/demo_0"].attrs["num_samples"] = 3
    source = RobomimicSource(tmp_path / "short.hdf5")
    with pytest.raises(FormatError, match="data/demo_0 has arrays of lengths"):
        list(source.episodes())
    source.close()
