"""LeRobot datasets: import of v3.0 and v2.1 folders built here in LeRobot's documented layout, the errors of a
damaged dataset, and robolearn -> LeRobot -> robolearn round trips read back through LeRobot's own loading path
(HF `datasets` and pandas, as LeRobotDataset calls them)."""

import json
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robolearn.cli import main
from robolearn.datasets import ReplayBuffer
from robolearn.datasets.formats.common import FormatError
from robolearn.datasets.formats.lerobot import LeRobotSource

FPS = 10
LENGTHS = (5, 7)  # two episodes in one data file and one video file
TASKS = ["pick the cube", "place the cube"]


def state(n):
    return (np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 7).astype(np.float32)


def frame_value(i):
    """Frame i of the video is a flat grey of this value, so a decoded frame tells which one it is."""
    return 20 + 10 * i


def write_video(path, n_frames, size=32, codec="libx264"):
    """An mp4 written with PyAV directly (not with robolearn's writer), one frame per 1/FPS s: H.264, or the AV1
    (SVT-AV1, LeRobot's default) and HEVC that LeRobot also writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS, options={"crf": "0" if codec == "libx264" else "20", "g": "2"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv444p" if codec == "libx264" else "yuv420p"
        stream.time_base = Fraction(1, FPS)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), frame_value(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_table(lengths, first_index=0):
    rows = {"observation.state": [], "action": [], "next.reward": [], "timestamp": [], "frame_index": [],
            "episode_index": [], "index": [], "task_index": []}
    index = first_index
    for e, n in enumerate(lengths):
        s = state(n) + e
        rows["observation.state"] += list(s)
        rows["action"] += list(s[:, :2] * 2)
        rows["next.reward"] += [float(i == n - 1) for i in range(n)]
        rows["timestamp"] += [i / FPS for i in range(n)]
        rows["frame_index"] += list(range(n))
        rows["episode_index"] += [e] * n
        rows["index"] += list(range(index, index + n))
        rows["task_index"] += [e] * n
        index += n
    return pa.table({
        "observation.state": pa.array([list(map(float, r)) for r in rows["observation.state"]], pa.list_(pa.float32(), 3)),
        "action": pa.array([list(map(float, r)) for r in rows["action"]], pa.list_(pa.float32(), 2)),
        "next.reward": pa.array(rows["next.reward"], pa.float32()),
        "timestamp": pa.array(rows["timestamp"], pa.float32()),
        **{k: pa.array(rows[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")}})


FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
    "action": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "observation.images.top": {"dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channels"],
                               "info": {"video.fps": FPS, "video.codec": "h264", "video.pix_fmt": "yuv444p"}},
    **{k: {"dtype": d, "shape": [1], "names": None} for k, d in (("timestamp", "float32"), ("frame_index", "int64"),
                                                                 ("episode_index", "int64"), ("index", "int64"),
                                                                 ("task_index", "int64"))},
}


def make_v3(root, video_frames=sum(LENGTHS), codec="libx264"):
    """A LeRobot v3.0 dataset: both episodes in data/chunk-000/file-000.parquet and in one mp4."""
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    info = {"codebase_version": "v3.0", "robot_type": "so101_follower", "total_episodes": 2,
            "total_frames": sum(LENGTHS), "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": FPS, "splits": {"train": "0:2"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", "features": FEATURES}
    (root / "meta/info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task_index": [0, 1], "task": TASKS}), root / "meta/tasks.parquet")
    starts = np.cumsum([0, *LENGTHS])
    episodes = [{"episode_index": e, "tasks": [TASKS[e]], "length": n, "data/chunk_index": 0, "data/file_index": 0,
                 "dataset_from_index": int(starts[e]), "dataset_to_index": int(starts[e + 1]),
                 "videos/observation.images.top/chunk_index": 0, "videos/observation.images.top/file_index": 0,
                 "videos/observation.images.top/from_timestamp": starts[e] / FPS,
                 "videos/observation.images.top/to_timestamp": starts[e + 1] / FPS,
                 "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0} for e, n in enumerate(LENGTHS)]
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(frame_table(LENGTHS), root / "data/chunk-000/file-000.parquet")
    write_video(root / "videos/observation.images.top/chunk-000/file-000.mp4", video_frames, codec=codec)
    return root


def make_v21(root):
    """The same two episodes in LeRobot v2.1's layout: a parquet and an mp4 per episode, JSON-lines metadata."""
    (root / "meta").mkdir(parents=True)
    info = {"codebase_version": "v2.1", "robot_type": "koch", "total_episodes": 2, "total_frames": sum(LENGTHS),
            "total_tasks": 2, "chunks_size": 1000, "fps": FPS, "splits": {"train": "0:2"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": FEATURES}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                   for i, t in enumerate(TASKS)))
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps({"episode_index": e, "tasks": [TASKS[e]], "length": n})
                                                      + "\n" for e, n in enumerate(LENGTHS)))
    table = frame_table(LENGTHS)
    start = 0
    for e, n in enumerate(LENGTHS):
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(start, n), root / f"data/chunk-000/episode_{e:06d}.parquet")
        write_video(root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4", n)
        start += n
    return root


def check_imported(path, video_restarts):
    with ReplayBuffer.open(path) as buffer:
        assert buffer.episode_ends.tolist() == list(np.cumsum(LENGTHS))
        assert sorted(buffer.keys) == ["action", "joint_pos", "reward", "timestamp", "top_image"]
        for e, n in enumerate(LENGTHS):
            ep = buffer.get_episode(e)
            np.testing.assert_array_equal(ep["joint_pos"], state(n) + e)
            np.testing.assert_array_equal(ep["action"], (state(n) + e)[:, :2] * 2)
            assert ep["reward"].shape == (n, 1) and ep["reward"][-1, 0] == 1.0
            np.testing.assert_allclose(ep["timestamp"][:, 0], np.arange(n) / FPS, atol=1e-6)
            first = 0 if video_restarts else sum(LENGTHS[:e])
            means = ep["top_image"].reshape(n, -1).mean(1)
            np.testing.assert_allclose(means, [frame_value(first + i) for i in range(n)], atol=2)
        attrs = buffer.attrs
    assert attrs["tasks"] == TASKS and attrs["episode_task_index"] == [0, 1]
    assert attrs["source"]["format"] == "lerobot" and attrs["source"]["fps"] == FPS
    assert attrs["source"]["keys"]["observation.images.top"] == "top_image"
    return attrs


@pytest.mark.parametrize("codec", ["libx264", "libsvtav1", "libx265"])
def test_v3_dataset_imports_with_frames_at_their_timestamps(tmp_path, capsys, codec):
    src = make_v3(tmp_path / "so101_pick", codec=codec)
    assert main(["dataset", "import", "format=lerobot", f"source={src}", f"output={tmp_path}/out.zarr"]) == 0
    attrs = check_imported(tmp_path / "out.zarr", video_restarts=False)
    assert attrs["source"]["version"] == "v3.0"
    assert main(["dataset", "info", str(tmp_path / "out.zarr")]) == 0
    out = capsys.readouterr().out
    assert "imported from lerobot v3.0" in out and "observation.state -> joint_pos" in out


def test_v21_dataset_imports_the_same(tmp_path):
    src = make_v21(tmp_path / "koch_v21")
    assert main(["dataset", "import", "format=lerobot", f"source={src}", f"output={tmp_path}/out.zarr"]) == 0
    assert check_imported(tmp_path / "out.zarr", video_restarts=True)["source"]["version"] == "v2.1"


def test_key_map_overrides_and_drops_and_resizes(tmp_path):
    src = make_v3(tmp_path / "src")
    assert main(["dataset", "import", "format=lerobot", f"source={src}", f"output={tmp_path}/out.zarr",
                 "keys={observation.state: qpos, next.reward: null, timestamp: null}", "image_size=[16,24]"]) == 0
    with ReplayBuffer.open(tmp_path / "out.zarr") as buffer:
        assert sorted(buffer.keys) == ["action", "qpos", "top_image"]
        assert buffer.array("top_image").shape[1:] == (16, 24, 3)


def damage(kind, root):
    """Break a v3 dataset in one of the ways the issue names."""
    if kind == "missing video":
        (root / "videos/observation.images.top/chunk-000/file-000.mp4").unlink()
    elif kind == "frame count":
        write_video(root / "videos/observation.images.top/chunk-000/file-000.mp4", sum(LENGTHS) - 2)
    elif kind == "truncated parquet":
        path = root / "data/chunk-000/file-000.parquet"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated info":
        path = root / "meta/info.json"
        path.write_text(path.read_text()[:100])
    elif kind == "old version":
        info = json.loads((root / "meta/info.json").read_text())
        (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))


@pytest.mark.parametrize("kind, message", [
    ("missing video", "file-000.mp4 is missing"),
    ("frame count", "video frames between"),
    ("truncated parquet", "file-000.parquet is damaged or truncated"),
    ("truncated info", "info.json is not valid JSON"),
    ("old version", "codebase_version 'v1.6' is not supported"),
])
def test_a_damaged_dataset_is_a_clear_error_and_leaves_no_output(tmp_path, capsys, kind, message):
    src = make_v3(tmp_path / "src")
    damage(kind, src)
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "import", "format=lerobot", f"source={src}", f"output={tmp_path}/out.zarr"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / ".out.zarr.partial").exists()


def test_key_map_naming_a_missing_feature_is_an_error(tmp_path):
    src = make_v3(tmp_path / "src")
    with pytest.raises(FormatError, match=r"names \['observation.wrench'\].*it has \['observation.state'"):
        LeRobotSource(src, keys={"observation.wrench": "wrench"})


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255**2 / mse)


def lerobot_hf_features(features):
    """LeRobot's mapping of info.json features to HF `datasets` features (`get_hf_features_from_features`),
    restated: shape (1,) -> a scalar Value, (n,) -> a fixed-length Sequence, videos are not in the parquet."""
    import datasets

    return datasets.Features({k: datasets.Value(ft["dtype"]) if tuple(ft["shape"]) == (1,) else
                              datasets.Sequence(datasets.Value(ft["dtype"]), length=ft["shape"][0])
                              for k, ft in features.items() if ft["dtype"] != "video"})


def test_robolearn_to_lerobot_and_back(tmp_path, lift_image_demo, capsys):
    datasets = pytest.importorskip("datasets")
    pd = pytest.importorskip("pandas")
    out = tmp_path / "lerobot"
    assert main(["dataset", "export", "format=lerobot", f"source={lift_image_demo}", f"output={out}",
                 "lerobot.task=lift the cube", "lerobot.robot_type=robolearn_desktop_arm"]) == 0
    info = json.loads((out / "meta/info.json").read_text())
    with ReplayBuffer.open(lift_image_demo) as original:
        ends, data = original.episode_ends, original.load()
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == ends[-1] and info["fps"] == 20
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "h264"
    # LeRobot's loading path: the frames through HF datasets with LeRobot's features, metadata through pandas
    frames = datasets.Dataset.from_parquet(sorted(str(p) for p in (out / "data").glob("*/*.parquet")),
                                           features=lerobot_hf_features(info["features"]),
                                           cache_dir=str(tmp_path / "hf_cache"))
    assert len(frames) == ends[-1]
    np.testing.assert_array_equal(np.asarray(frames["observation.state"], np.float32), data["joint_pos"])
    tasks = pd.read_parquet(out / "meta/tasks.parquet")
    assert tasks.index.name == "task" and tasks.loc["lift the cube"].task_index == 0
    episodes = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    assert episodes["dataset_to_index"].tolist() == ends.tolist()
    second = episodes.iloc[1]
    assert second["videos/observation.images.front/from_timestamp"] == ends[0] / 20
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(stats["observation.state"]["mean"], data["joint_pos"].mean(0), rtol=1e-5)

    assert main(["dataset", "import", "format=lerobot", f"source={out}", f"output={tmp_path}/back.zarr"]) == 0
    with ReplayBuffer.open(tmp_path / "back.zarr") as back:
        assert back.episode_ends.tolist() == ends.tolist()
        restored = back.load()
        assert back.attrs["tasks"] == ["lift the cube"]
    assert sorted(restored) == sorted(data)
    for key, values in data.items():
        if values.dtype == np.uint8:
            assert psnr(values, restored[key]) >= 35, (key, psnr(values, restored[key]))
        else:
            assert restored[key].dtype == values.dtype and restored[key].tobytes() == values.tobytes(), key
    capsys.readouterr()


def test_export_refuses_to_replace_what_it_did_not_write(tmp_path, lift_image_demo, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "export", "format=lerobot", f"source={lift_image_demo}", f"output={tmp_path}/mine",
              "overwrite=true"])
    assert exc.value.code == 2 and "will not replace it" in capsys.readouterr().err
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"


def test_episodes_across_several_data_and_video_files_and_png_image_columns(tmp_path):
    """Episode 1 lives in data file-001 and video file-001 (LeRobot rolls files over at its size caps), and a
    second camera is stored as LeRobot's `image` dtype (PNG bytes in the parquet)."""
    import cv2

    root = make_v3(tmp_path / "src")
    pngs = [cv2.imencode(".png", np.full((6, 8, 3), 7 * i, np.uint8))[1].tobytes() for i in range(sum(LENGTHS))]
    table = frame_table(LENGTHS).append_column(
        "observation.images.side", pa.array([{"bytes": b, "path": None} for b in pngs],
                                            pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    (root / "data/chunk-000/file-000.parquet").unlink()
    pq.write_table(table.slice(0, LENGTHS[0]), root / "data/chunk-000/file-000.parquet")
    pq.write_table(table.slice(LENGTHS[0]), root / "data/chunk-000/file-001.parquet")
    video = root / "videos/observation.images.top/chunk-000"
    write_video(video / "file-000.mp4", LENGTHS[0])
    write_video(video / "file-001.mp4", LENGTHS[1])
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.side"] = {"dtype": "image", "shape": [6, 8, 3],
                                                   "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    episodes[1].update({"data/file_index": 1, "videos/observation.images.top/file_index": 1,
                        "videos/observation.images.top/from_timestamp": 0.0,
                        "videos/observation.images.top/to_timestamp": LENGTHS[1] / FPS})
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    assert main(["dataset", "import", "format=lerobot", f"source={root}", f"output={tmp_path}/out.zarr"]) == 0
    with ReplayBuffer.open(tmp_path / "out.zarr") as buffer:
        assert buffer.episode_ends.tolist() == list(np.cumsum(LENGTHS))
        second = buffer.get_episode(1)
        np.testing.assert_array_equal(second["joint_pos"], state(LENGTHS[1]) + 1)
        np.testing.assert_allclose(second["top_image"].reshape(LENGTHS[1], -1).mean(1),
                                   [frame_value(i) for i in range(LENGTHS[1])], atol=2)
        side = buffer.load(["side_image"])["side_image"]
        assert side.shape == (sum(LENGTHS), 6, 8, 3) and side[9, 0, 0, 0] == 63
