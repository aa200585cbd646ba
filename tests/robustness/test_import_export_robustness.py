"""`robolearn dataset import` and `export` against damaged metadata, bad options, awkward paths and outputs that are
not theirs to replace, as a careless or unlucky user would meet them. Every case ends in one of two ways: the
command works, or it prints one line naming the file, key or option and what was expected (exit 2), leaving no
output, no staging folder and no lock file behind, and never deleting anything it did not write."""

import json
import os
import shutil

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cli_helpers import leftovers, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rosbags.rosbag2 import StoragePlugin, Writer
from test_lerobot_format import LENGTHS, make_v3, make_v21
from test_robomimic_format import make_file
from test_rosbag_format import STORE, T, header, write_bag

from robolearn.datasets import ReplayBuffer


def refused(tmp_path, *args, fragments=()):
    """Run `robolearn dataset ARGS` expecting a one-line refusal containing `fragments`; check nothing is left."""
    result = run("dataset", *args, cwd=tmp_path)
    line = result.error_line
    for fragment in fragments:
        assert fragment in line, line
    out = tmp_path / "out"
    assert not out.exists() and leftovers(tmp_path) == [], sorted(p.name for p in tmp_path.iterdir())
    return line


def lerobot(tmp_path, *extra):
    return ("import", "format=lerobot", f"source={tmp_path / 'src'}", f"output={tmp_path / 'out'}", *extra)


# -- LeRobot metadata ------------------------------------------------------------------------------------------
def edit_info(change):
    def mutate(root):
        path = root / "meta/info.json"
        info = json.loads(path.read_text())
        change(info)
        path.write_text(json.dumps(info))
    return mutate


def edit_episodes(change):
    def mutate(root):
        path = root / "meta/episodes/chunk-000/file-000.parquet"
        pq.write_table(pa.Table.from_pylist(change(pq.read_table(path).to_pylist())), path)
    return mutate


def without(column):
    return edit_episodes(lambda rows: [{k: v for k, v in r.items() if k != column} for r in rows])


V3_CASES = {
    "features as a list": (edit_info(lambda i: i.update(features=list(i["features"]))), "`features`: expected"),
    "fps as text": (edit_info(lambda i: i.update(fps="ten")), "`fps`: expected a valid number, got 'ten'"),
    "fps zero": (edit_info(lambda i: i.update(fps=0)), "`fps`: expected a value greater than 0"),
    "a feature without dtype": (edit_info(lambda i: i["features"]["action"].pop("dtype")),
                                "`features.action.dtype` is missing"),
    "an unknown dtype": (edit_info(lambda i: i["features"]["action"].update(dtype="float33")),
                         "`features.action.dtype`: expected video, image, string or a numeric dtype"),
    "a negative shape": (edit_info(lambda i: i["features"]["action"].update(shape=[-2])), "features.action.shape"),
    "an unknown template field": (edit_info(lambda i: i.update(data_path="data/{foo}.parquet")), "names ['foo']"),
    "total_episodes as text": (edit_info(lambda i: i.update(total_episodes="2")), "`total_episodes`"),
    "info.json a list": (lambda root: (root / "meta/info.json").write_text("[1, 2]"), "codebase_version"),
    "no length": (without("length"), "row 0: `length` is missing"),
    "no data/chunk_index": (without("data/chunk_index"), "row 0: `data/chunk_index` is missing"),
    "no video window": (without("videos/observation.images.top/from_timestamp"), "`from_timestamp` is missing"),
    "an empty episode": (edit_episodes(lambda rows: [dict(rows[0], length=0), *rows[1:]]), "`length`"),
    "a negative episode_index": (edit_episodes(lambda rows: [dict(rows[0], episode_index=-1), *rows[1:]]),
                                 "`episode_index`"),
    "a repeated task_index": (lambda root: pq.write_table(pa.table({"task_index": [0, 0], "task": ["a", "b"]}),
                                                          root / "meta/tasks.parquet"), "`task_index` 0 appears"),
}


@pytest.mark.parametrize("case", sorted(V3_CASES))
def test_malformed_lerobot_v3_metadata_is_one_line_naming_file_and_key(tmp_path, case):
    mutate, fragment = V3_CASES[case]
    mutate(make_v3(tmp_path / "src"))
    line = refused(tmp_path, *lerobot(tmp_path), fragments=[fragment])
    assert str(tmp_path / "src" / "meta") in line


def test_a_repeated_episode_row_is_refused_not_imported_twice(tmp_path):
    edit_episodes(lambda rows: rows + [rows[-1]])(make_v3(tmp_path / "src"))
    line = refused(tmp_path, *lerobot(tmp_path), fragments=["`episode_index` 1 is also listed at"])
    assert "row 2" in line and "row 1" in line


V2_CASES = {
    "no data_path": (edit_info(lambda i: i.pop("data_path")), "needs `data_path`"),
    "no video_path": (edit_info(lambda i: i.pop("video_path")), "needs `video_path`"),
    "a repeated episode": (lambda root: (root / "meta/episodes.jsonl").write_text(
        (root / "meta/episodes.jsonl").read_text() * 2), "`episode_index` 0 appears in rows 0 and 2"),
    "a line that is a list": (lambda root: (root / "meta/episodes.jsonl").write_text("[1]\n"), "row 0: expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(V2_CASES))
def test_malformed_lerobot_v2_metadata_is_one_line(tmp_path, case):
    mutate, fragment = V2_CASES[case]
    mutate(make_v21(tmp_path / "src"))
    refused(tmp_path, *lerobot(tmp_path), fragments=[fragment])


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 1 << 40) | st.floats(allow_nan=False)
                           | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
INFO_FIELDS = ["codebase_version", "fps", "features", "total_episodes", "data_path", "video_path", "chunks_size"]
ROW_FIELDS = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index",
              "videos/observation.images.top/from_timestamp", "videos/observation.images.top/to_timestamp"]


@settings(max_examples=int(os.environ.get("ROBOLEARN_PROPERTY_EXAMPLES", 30)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(where="info", field=2, value={}, drop=False)  # no features at all (found by this test)
@given(where=st.sampled_from(["info"] * 2 + ["row"]), field=st.integers(0, 100), value=JSON_VALUES,
       drop=st.booleans())
def test_property_any_metadata_value_imports_or_is_one_line(tmp_path_factory, where, field, value, drop):
    """Whatever value one metadata field takes (or if it is dropped), the import works or is refused in one
    line: never an internal error, never a partial output."""
    tmp_path = tmp_path_factory.mktemp("prop")
    root = make_v3(tmp_path / "src")
    if where == "info":
        key = INFO_FIELDS[field % len(INFO_FIELDS)]
        edit_info(lambda i: i.pop(key) if drop else i.update({key: value}))(root)
    else:
        key = ROW_FIELDS[field % len(ROW_FIELDS)]
        if isinstance(value, dict) and not value:
            value = None  # parquet cannot store an empty struct
        try:
            edit_episodes(lambda rows: [({k: v for k, v in r.items() if k != key} if drop else {**r, key: value})
                                        for r in rows])(root)
        except (pa.ArrowException, TypeError, ValueError):
            return  # a value parquet itself cannot store
    result = run("dataset", *lerobot(tmp_path), cwd=tmp_path)
    if result.code == 0:
        with ReplayBuffer.open(tmp_path / "out") as buffer:
            assert buffer.n_episodes == len(LENGTHS)
    else:
        result.error_line  # noqa: B018 - asserts one line, exit 2
        assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# -- robomimic -------------------------------------------------------------------------------------------------
def scalar_reward(f):
    del f["data/demo_0/rewards"]
    f["data/demo_0/rewards"] = 1.0


def replace_mask(f, names):
    for name in list(f["mask"]):
        del f[f"mask/{name}"]
    f["mask/valid"] = names


ROBOMIMIC_CASES = {
    "a scalar array": (scalar_reward, "data/demo_0/rewards is a scalar"),
    "env_args not JSON": (lambda f: f["data"].attrs.update(env_args="not json {"), "env_args is not JSON"),
    "env_args a list": (lambda f: f["data"].attrs.update(env_args="[1, 2]"), "env_args: expected a mapping"),
    "num_samples text": (lambda f: f["data/demo_0"].attrs.update(num_samples="six"), "`num_samples`"),
    "a demo that is an array": (lambda f: f.create_dataset("data/demo_99", data=np.zeros(3)), "not a group"),
    "a mask of numbers": (lambda f: replace_mask(f, np.array([1, 2])), "mask/valid must be a 1-D array"),
    "a mask naming a missing demo": (lambda f: replace_mask(f, np.array([b"demo_7"])), "demo_7"),
}


@pytest.mark.parametrize("case", sorted(ROBOMIMIC_CASES))
def test_malformed_robomimic_file_is_one_line(tmp_path, case):
    mutate, fragment = ROBOMIMIC_CASES[case]
    src = make_file(tmp_path / "src.hdf5")
    with h5py.File(src, "a") as f:
        mutate(f)
    refused(tmp_path, "import", "format=robomimic", f"source={src}", f"output={tmp_path / 'out'}",
            fragments=[fragment, "src.hdf5"])


def test_robomimic_text_and_zero_width_arrays_are_left_out_by_default_and_refused_when_named(tmp_path):
    src = make_file(tmp_path / "src.hdf5")
    with h5py.File(src, "a") as f:
        for demo in f["data"]:
            n = f[f"data/{demo}/actions"].shape[0]
            f[f"data/{demo}/obs/lang"] = np.array([b"pick"] * n)
            f[f"data/{demo}/obs/none"] = np.zeros((n, 0))
    assert run("dataset", "import", "format=robomimic", f"source={src}", f"output={tmp_path / 'ok.zarr'}",
               cwd=tmp_path).code == 0
    with ReplayBuffer.open(tmp_path / "ok.zarr") as buffer:
        assert "lang" not in buffer.keys and "none" not in buffer.keys
    refused(tmp_path, "import", "format=robomimic", f"source={src}", f"output={tmp_path / 'out'}",
            "keys={obs/none: none}", fragments=["`none` has per-step shape (0,)", "leave the key out"])


def test_a_recorded_split_with_no_training_episode_is_one_line_at_train(tmp_path):
    src = make_file(tmp_path / "src.hdf5")
    with h5py.File(src, "a") as f:
        replace_mask(f, np.array([b"demo_0", b"demo_1", b"demo_2", b"demo_10"]))
    assert run("dataset", "import", "format=robomimic", f"source={src}", f"output={tmp_path / 'd.zarr'}",
               cwd=tmp_path).code == 0
    line = run("train", "task=imported", f"dataset={tmp_path / 'd.zarr'}", f"run_dir={tmp_path / 'run'}",
               "training.steps=1", "policy.horizon=4", "policy.n_action_steps=2", cwd=tmp_path).error_line
    assert "no training episodes among its 4" in line and "puts every episode in `valid`" in line


def test_cameras_too_small_for_the_image_encoder_are_one_line_at_train(tmp_path):
    write_bag(tmp_path / "bag")  # a 4 x 6 px camera
    assert run("dataset", "import", "format=rosbag", f"source={tmp_path / 'bag'}", f"output={tmp_path / 'd.zarr'}",
               "rosbag.joint_names=[j0,j1,j2]", cwd=tmp_path).code == 0
    line = run("train", "task=imported", f"dataset={tmp_path / 'd.zarr'}", f"run_dir={tmp_path / 'run'}",
               "training.steps=1", "policy.horizon=4", "policy.n_action_steps=2", cwd=tmp_path).error_line
    assert "camera images of 4 x 6 px" in line and "needs a crop of at least" in line and "image_size=" in line


def test_text_keys_of_a_foreign_store_are_left_out_of_training_and_shown_by_info(tmp_path, dataset):
    import zarr

    group = zarr.open_group(dataset, mode="r+")
    n = int(group["meta/episode_ends"][-1])
    group["data"].create_array("language", shape=(n,), dtype=str)[:] = np.array(["pick"] * n)
    info = run("dataset", "info", str(dataset), cwd=tmp_path)
    assert info.code == 0 and "language" in info.out, info.err[-2000:]
    result = run("train", "task=imported", f"dataset={dataset}", f"run_dir={tmp_path / 'run'}", "training.steps=1",
                 "policy.horizon=4", "policy.n_action_steps=2", cwd=tmp_path)
    assert result.code == 0, result.err[-2000:]
    assert "leaving out keys that do not hold numbers: ['language']" in result.err


# -- ROS 2 bags ------------------------------------------------------------------------------------------------
S = 1_000_000_000


def joint_state_bag(path, positions, names):
    """A bag with /joint_states only, at 50 Hz: message k carries `positions(k)` named `names(k)`."""
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conn = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=STORE)
    for k in range(40):
        t = 1000 * S + k * S // 50
        msg = T["sensor_msgs/msg/JointState"](header=header(t), name=names(k), position=np.asarray(positions(k), float),
                                              velocity=np.zeros(0), effort=np.zeros(0))
        writer.write(conn, t, STORE.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
    writer.close()
    return path


BAG_CASES = {
    "no positions": (lambda p: joint_state_bag(p, lambda k: [], lambda k: []), [],
                     "carries no values for `joint_pos`"),
    "positions of varying width": (lambda p: joint_state_bag(p, lambda k: [1, 2, 3][:3 - k // 20], lambda k: []), [],
                                   "of shape (2,)"),
    "fewer names than positions": (lambda p: joint_state_bag(p, lambda k: [1, 2, 3], lambda k: ["a", "b"]), [],
                                   "names 2 joints but carries 3 positions"),
    "a rate far above the messages'": (write_bag, ["rosbag.rate_hz=1e9"], "choose rosbag.rate_hz <= 100"),
    "a joint the bag lacks": (write_bag, ["rosbag.joint_names=[j0,zz]"], "no joint(s) ['zz']"),
    "a trigger topic of another type": (write_bag, ["rosbag.trigger_topic=/joint_states"], "not std_msgs/msg/String"),
}


@pytest.mark.parametrize("case", sorted(BAG_CASES))
def test_malformed_bag_is_one_line(tmp_path, case):
    make, extra, fragment = BAG_CASES[case]
    make(tmp_path / "src")
    refused(tmp_path, "import", "format=rosbag", f"source={tmp_path / 'src'}", f"output={tmp_path / 'out'}", *extra,
            fragments=[fragment])


# -- options ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragment"), [
    (["keys=5"], "keys=5: expected a valid dictionary"),
    (["keys={observation.state: 7}"], "keys.observation.state=7: expected a valid string"),
    (["keys={observation.state: a/b}"], "a key name cannot hold '/'"),
    (["keys={observation.state: __x}"], "cannot start with '.' or '__'"),
    (["image_size=[100000,100000]"], "image_size=[100000, 100000]: expected [height, width] in pixels, each 1-4096"),
    (["image_size=[0,4]"], "expected [height, width]"),
    (["lerobot.tolerance_s=-1"], "lerobot.tolerance_s=-1: expected a value greater than 0"),
    (["rosbag.stamp=wall"], "rosbag.stamp='wall': expected 'log' or 'header'"),
    (["rosbag.joint_names=[]"], "expected distinct joint names"),
    (["overwrite=maybe"], "overwrite='maybe'"),
])
def test_bad_import_options_are_one_line_naming_the_option(tmp_path, args, fragment):
    make_v3(tmp_path / "src")
    refused(tmp_path, *lerobot(tmp_path, *args), fragments=[fragment])


@pytest.fixture
def dataset(tmp_path):
    make_v3(tmp_path / "src")
    assert run("dataset", *lerobot(tmp_path), cwd=tmp_path).code == 0
    (tmp_path / "out").rename(tmp_path / "d.zarr")
    shutil.rmtree(tmp_path / "src")
    return tmp_path / "d.zarr"


@pytest.mark.parametrize(("args", "fragment"), [
    (["format=lerobot", "lerobot.video.pix_fmt=yuv999"], "FFmpeg refuses these encoder settings (not a pixel format"),
    (["format=lerobot", "lerobot.video.pix_fmt=rgb48le"], "lerobot.video.pix_fmt=rgb48le"),
    (["format=lerobot", "lerobot.video.crf=abc"], "lerobot.video.crf='abc': expected a valid integer"),
    (["format=lerobot", "lerobot.video.crf=99"], "lerobot.video.crf=99: expected a value less than or equal to 63"),
    (["format=lerobot", "lerobot.video.codec=nope"], "has no encoder"),
    (["format=lerobot", "lerobot.task=5"], "lerobot.task=5: expected a valid string"),
    (["format=rosbag", "rosbag.episodes=[]"], "rosbag.episodes=[]: expected at least one episode index"),
    (["format=rosbag", "rosbag.episodes=abc"], "rosbag.episodes='abc': expected a valid list"),
    (["format=rosbag", "rosbag.episodes=[0,0]"], "expected each episode once"),
    (["format=rosbag", "rosbag.episodes=[9]"], "asked for [9]"),
    (["format=rosbag", "rosbag.storage=zip"], "rosbag.storage='zip': expected 'mcap' or 'sqlite3'"),
    (["format=rosbag", "fps=-1"], "fps=-1: expected a value greater than 0"),
])
def test_bad_export_options_are_one_line_before_any_work(tmp_path, dataset, args, fragment):
    refused(tmp_path, "export", f"source={dataset}", f"output={tmp_path / 'out'}", *args, fragments=[fragment])


@pytest.mark.parametrize("name", ["with space", "données", "run (2)", "it's=a,b", "back\\slash"])
def test_paths_are_taken_as_given(tmp_path, name):
    """Spaces, non-ASCII letters, parentheses, quotes, '=' and ',' in source= and output= (hydra's grammar would
    refuse several unquoted)."""
    folder = tmp_path / name
    make_v3(folder / "src")
    assert run("dataset", "import", "format=lerobot", f"source={folder / 'src'}", f"output={folder / 'd.zarr'}",
               cwd=tmp_path).code == 0
    assert run("dataset", "export", "format=lerobot", f"source={folder / 'd.zarr'}", f"output={folder / 'exp'}",
               cwd=tmp_path).code == 0
    assert (folder / "exp" / "meta" / "info.json").is_file()


# -- replace only what robolearn wrote, never a source ---------------------------------------------------------
def test_export_never_replaces_a_bag_that_only_mentions_robolearn(tmp_path, dataset):
    """Defect 1: a `ros2 bag record -a` made beside robolearn's nodes names /robolearn/ topics in its metadata."""
    bag = tmp_path / "deploy_bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": {
        "version": 9, "relative_file_paths": ["deploy_bag_0.mcap"],
        "topics_with_message_count": [{"topic_metadata": {"name": "/robolearn/driver_status"}},
                                      {"topic_metadata": {"name": "/robolearn/episode"}}],
        "custom_data": {"note": "recorded with robolearn"}}}))
    (bag / "deploy_bag_0.mcap").write_bytes(b"recording")
    line = run("dataset", "export", "format=rosbag", f"source={dataset}", f"output={bag}", "overwrite=true",
               cwd=tmp_path).error_line
    assert "is not a bag export of robolearn" in line
    assert (bag / "deploy_bag_0.mcap").read_bytes() == b"recording"


def test_export_replaces_its_own_export_but_not_one_with_files_added(tmp_path, dataset):
    for fmt in ("rosbag", "lerobot"):
        out = tmp_path / f"exp_{fmt}"
        args = ("dataset", "export", f"format={fmt}", f"source={dataset}", f"output={out}")
        assert run(*args, cwd=tmp_path).code == 0
        assert run(*args, "overwrite=true", cwd=tmp_path).code == 0  # its own: replaced
        (out / "my_notes.txt").write_text("mine")
        assert "which" in run(*args, "overwrite=true", cwd=tmp_path).error_line
        assert (out / "my_notes.txt").read_text() == "mine"


def test_a_lerobot_folder_without_robolearns_marker_is_not_replaced(tmp_path, dataset):
    folder = make_v3(tmp_path / "theirs")
    (folder / "meta/robolearn.json").write_text(json.dumps({"keys": {}, "shapes": {}}))  # no writer marker
    line = run("dataset", "export", "format=lerobot", f"source={dataset}", f"output={folder}", "overwrite=true",
               cwd=tmp_path).error_line
    assert "`written_by` marker is missing" in line and (folder / "meta/info.json").is_file()


def test_a_dataset_folder_holding_other_files_is_not_replaced(tmp_path, dataset):
    (dataset / "exports").mkdir()
    (dataset / "exports" / "keep.txt").write_text("keep")
    make_v3(tmp_path / "src")
    line = run("dataset", *lerobot(tmp_path)[:2], f"source={tmp_path / 'src'}", f"output={dataset}",
               "overwrite=true", cwd=tmp_path).error_line
    assert "holds ['exports']" in line and (dataset / "exports" / "keep.txt").read_text() == "keep"
    line = run("collect", "n_episodes=1", f"output={dataset}", "overwrite=true", cwd=tmp_path).error_line
    assert "holds ['exports']" in line and (dataset / "exports" / "keep.txt").read_text() == "keep"


def test_a_zarr_store_of_another_tool_is_not_replaced(tmp_path):
    import zarr

    root = zarr.open_group(tmp_path / "theirs.zarr", mode="w", zarr_format=3)  # the reference's layout, unmarked
    root.create_group("data").create_array("x", shape=(3,), dtype="f4")
    root.create_group("meta").create_array("episode_ends", shape=(1,), dtype="i8")
    make_v3(tmp_path / "src")
    line = run("dataset", "import", "format=lerobot", f"source={tmp_path / 'src'}", f"output={tmp_path / 'theirs.zarr'}",
               "overwrite=true", cwd=tmp_path).error_line
    assert "holds no `written_by` marker of robolearn" in line and (tmp_path / "theirs.zarr" / "data" / "x").is_dir()


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
def test_an_import_never_writes_over_into_or_around_its_source(tmp_path, dataset, where):
    """Defect 3: `overwrite=true` with the source inside the output deleted the source."""
    source = {"is": dataset, "inside": dataset / "exp", "holds": tmp_path}[where]
    if where == "inside":
        shutil.copytree(make_v3(tmp_path / "src"), source)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    line = run("dataset", "import", "format=lerobot", f"source={source}", f"output={dataset}", "overwrite=true",
               cwd=tmp_path).error_line
    assert {"is": " is source=", "inside": " holds source=", "holds": " lies inside source="}[where] in line
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_an_export_into_its_own_source_is_refused(tmp_path, dataset):
    for fmt in ("lerobot", "rosbag"):
        line = run("dataset", "export", f"format={fmt}", f"source={dataset}", f"output={dataset / 'exp'}",
                   cwd=tmp_path).error_line
        assert "lies inside source=" in line and not (dataset / "exp").exists()
    assert sorted(p.name for p in dataset.iterdir()) == ["data", "meta", "zarr.json"]
