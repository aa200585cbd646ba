"""Replay buffer: layout, round trip, zarr format 2 reading, crash safety, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numcodecs
import numpy as np
import pytest
import zarr

from robolearn.datasets import DatasetError, ReplayBuffer
from robolearn.lock import LockError


def make_episode(index: int, length: int, image: bool = False) -> dict:
    """Deterministic episode content, so a reader can check every value."""
    t = np.arange(length, dtype=np.float32)
    ep = {
        "obs": np.stack([t + 1000 * index, -t], axis=1).astype(np.float32),
        "action": (t[:, None] * 0.5 + index).astype(np.float32),
        "done": np.arange(length) == length - 1,
    }
    if image:
        ep["image"] = np.full((length, 8, 6, 3), index, dtype=np.uint8)
    return ep


def test_layout_and_round_trip(tmp_path):
    path = tmp_path / "buf.zarr"
    rb = ReplayBuffer.create(path)
    lengths = [5, 3, 7]
    for i, n in enumerate(lengths):
        assert rb.add_episode(make_episode(i, n, image=True), chunks={"image": (2, 8, 6, 3)}) == i

    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == 3
    ends = root["meta/episode_ends"]
    assert ends.dtype == np.int64
    np.testing.assert_array_equal(ends[:], np.cumsum(lengths))
    assert sorted(root["data"].array_keys()) == ["action", "done", "image", "obs"]
    obs = root["data/obs"]
    assert obs.shape == (15, 2) and obs.chunks[1:] == (2,)  # chunked along time only
    codec = obs.compressors[0]
    assert codec.cname.value == "zstd"
    assert root["data/image"].dtype == np.uint8 and root["data/image"].chunks == (2, 8, 6, 3)

    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 3 and rb.n_steps == 15
    np.testing.assert_array_equal(rb.episode_lengths, lengths)
    for i, n in enumerate(lengths):
        got = rb.get_episode(i)
        for k, v in make_episode(i, n, image=True).items():
            np.testing.assert_array_equal(got[k], v)
    np.testing.assert_array_equal(rb.get_episode(-1)["action"], make_episode(2, 7)["action"])
    with pytest.raises(IndexError, match="episode 3 out of range"):
        rb.get_episode(3)


def test_per_key_compressor_override(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "b.zarr")
    rb.add_episode(make_episode(0, 4), compressors={"action": None})
    root = zarr.open_group(tmp_path / "b.zarr", mode="r")
    assert root["data/action"].compressors == ()
    assert root["data/obs"].compressors[0].cname.value == "zstd"


def write_reference_v2(path, episodes):
    """Write a zarr format 2 store by hand, as the reference implementation (zarr 2.x) lays it out."""
    data = {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}
    ends = np.cumsum([len(ep["obs"]) for ep in episodes]).astype(np.int64)
    lz4 = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)

    def write_array(folder, values, chunk_len, compressor):
        folder.mkdir(parents=True)
        chunks = [chunk_len, *values.shape[1:]]
        meta = {"zarr_format": 2, "shape": list(values.shape), "chunks": chunks, "dtype": values.dtype.str,
                "compressor": None if compressor is None else compressor.get_config(),
                "fill_value": False if values.dtype == bool else 0, "order": "C", "filters": None}
        (folder / ".zarray").write_text(json.dumps(meta))
        for c in range(0, len(values), chunk_len):
            block = np.zeros(chunks, dtype=values.dtype)
            part = values[c:c + chunk_len]
            block[: len(part)] = part
            raw = block.tobytes()
            name = ".".join([str(c // chunk_len)] + ["0"] * (values.ndim - 1))
            (folder / name).write_bytes(raw if compressor is None else compressor.encode(raw))

    for group in ("", "data", "meta"):
        (path / group).mkdir(parents=True, exist_ok=True)
        (path / group / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    for key, values in data.items():
        write_array(path / "data" / key, values, 4, lz4)
    write_array(path / "meta" / "episode_ends", ends, 100, None)


def test_reads_reference_zarr2_directory_and_zip(tmp_path):
    episodes = [make_episode(i, n) for i, n in enumerate([6, 9, 4])]
    v2 = tmp_path / "reference.zarr"
    write_reference_v2(v2, episodes)
    zpath = tmp_path / "reference.zarr.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(v2.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(v2).as_posix())

    for path in (v2, zpath):
        with ReplayBuffer.open(path) as rb:
            assert rb.root.metadata.zarr_format == 2
            assert rb.n_episodes == 3 and rb.n_steps == 19
            for i, ep in enumerate(episodes):
                got = rb.get_episode(i)
                for k, v in ep.items():
                    np.testing.assert_array_equal(got[k], v)
    with pytest.raises(DatasetError, match="opens read-only"):
        ReplayBuffer.open(v2, mode="a")


def test_uncommitted_tail_is_invisible_and_overwritten(tmp_path):
    """The state a crash leaves between writing data and committing episode_ends."""
    path = tmp_path / "b.zarr"
    rb = ReplayBuffer.create(path)
    rb.add_episode(make_episode(0, 5))
    root = zarr.open_group(path, mode="r+")
    for key in ("obs", "action"):  # episode 1 half written: two keys grew, one did not
        arr = root[f"data/{key}"]
        arr.resize((9, *arr.shape[1:]))
        arr[5:] = 7
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 1 and rb.n_steps == 5
    np.testing.assert_array_equal(rb.load()["obs"], make_episode(0, 5)["obs"])

    rb = ReplayBuffer.open(path, mode="a")
    rb.add_episode(make_episode(1, 3))
    rb = ReplayBuffer.open(path)
    assert rb.n_steps == 8 and rb.array("obs").shape[0] == 8
    np.testing.assert_array_equal(rb.get_episode(1)["obs"], make_episode(1, 3)["obs"])


def test_torn_episode_ends_resize_is_not_an_episode(tmp_path):
    """A crash after episode_ends grew but before its new value was written."""
    path = tmp_path / "b.zarr"
    rb = ReplayBuffer.create(path)
    rb.add_episode(make_episode(0, 5))
    rb.add_episode(make_episode(1, 4))
    ends = zarr.open_group(path, mode="r+")["meta/episode_ends"]
    ends.resize((3,))  # the new entry reads as the fill value 0
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 2
    rb = ReplayBuffer.open(path, mode="a")
    rb.add_episode(make_episode(2, 2))
    assert ReplayBuffer.open(path).episode_ends.tolist() == [5, 9, 11]


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_replay_buffer import make_episode
    from robolearn.datasets import ReplayBuffer
    rb = ReplayBuffer.create({path!r})
    status = open({status!r}, "w")
    for k in range(1000):
        status.write(f"{{k}}\\n"); status.flush()
        ep = make_episode(k, 20000 + k)
        ep["big"] = np.repeat(ep["obs"], 64, axis=1)  # ~10 MB per episode: writing takes a while
        rb.add_episode(ep)
""")


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03])
def test_sigkill_while_writing_keeps_finished_episodes(tmp_path, delay):
    path, status = tmp_path / "b.zarr", tmp_path / "status"
    script = WRITER.format(tests=os.path.dirname(__file__), path=str(path), status=str(status))
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            lines = status.read_text().split() if status.exists() else []
            if len(lines) >= 4:  # episode 3 is being written
                break
            assert proc.poll() is None, "writer died"
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    writing = int(status.read_text().split()[-1])
    rb = ReplayBuffer.open(path)
    # every finished episode (0..writing-1) is there, plus at most the one in flight
    assert writing <= rb.n_episodes <= writing + 1
    assert rb.n_episodes >= 3
    for i in range(rb.n_episodes):
        got = rb.get_episode(i, ["obs", "action"])
        expected = make_episode(i, 20000 + i)
        np.testing.assert_array_equal(got["obs"], expected["obs"])
        np.testing.assert_array_equal(got["action"], expected["action"])


# -- bad input ---------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ReplayBuffer.open(tmp_path / "nope.zarr")


def test_not_a_replay_buffer(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a replay buffer"):
        ReplayBuffer.open(tmp_path / "empty")
    zarr.open_group(tmp_path / "g.zarr", mode="w").create_group("data")
    with pytest.raises(DatasetError, match="episode_ends"):
        ReplayBuffer.open(tmp_path / "g.zarr")


def test_missing_keys_named(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "b.zarr")
    rb.add_episode(make_episode(0, 3))
    with pytest.raises(DatasetError, match=r"missing key\(s\) \['state'\]"):
        rb.load(["obs", "state"])
    with pytest.raises(DatasetError, match=r"missing \['done'\]"):
        rb.add_episode({k: v for k, v in make_episode(1, 3).items() if k != "done"})


def test_short_array_names_key_and_episode(tmp_path):
    path = tmp_path / "b.zarr"
    rb = ReplayBuffer.create(path)
    for i in range(3):
        rb.add_episode(make_episode(i, 4))
    arr = zarr.open_group(path, mode="r+")["data/action"]
    arr.resize((6, 1))
    with pytest.raises(DatasetError, match=r"data/action.* 6 steps .* episode 1 \(ends at 8\)"):
        ReplayBuffer.open(path)


def test_nan_and_inf_named(tmp_path):
    path = tmp_path / "b.zarr"
    rb = ReplayBuffer.create(path)
    bad = make_episode(0, 4)
    bad["action"][2, 0] = np.nan
    with pytest.raises(DatasetError, match=r"episode 0: `action` holds NaN or inf at step 2"):
        rb.add_episode(bad)
    assert rb.n_episodes == 0  # nothing written
    rb.add_episode(make_episode(0, 4))
    rb.add_episode(make_episode(1, 5))
    zarr.open_group(path, mode="r+")["data/obs"][6] = np.inf  # step 2 of episode 1
    rb = ReplayBuffer.open(path)
    with pytest.raises(DatasetError, match=r"data/obs` holds NaN or inf in episode 1 at step 2"):
        rb.load()
    with pytest.raises(DatasetError, match="episode 1 at step 2"):
        rb.get_episode(1)


def test_bad_episodes_rejected(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "b.zarr")
    ep = make_episode(0, 4)
    with pytest.raises(DatasetError, match="different lengths"):
        rb.add_episode({**ep, "done": ep["done"][:3]})
    with pytest.raises(DatasetError, match="must be uint8"):
        rb.add_episode({**ep, "image": np.zeros((4, 8, 8, 3), np.float32)})
    rb.add_episode(ep)
    with pytest.raises(DatasetError, match=r"per-step shape \(3,\)"):
        rb.add_episode({**ep, "obs": np.zeros((4, 3), np.float32)})
    with pytest.raises(DatasetError, match="has no steps"):
        rb.add_episode({k: v[:0] for k, v in ep.items()})
    with pytest.raises(PermissionError):
        ReplayBuffer.open(tmp_path / "b.zarr").add_episode(ep)
    with pytest.raises(LockError, match="being written by another process"):
        ReplayBuffer.create(tmp_path / "b.zarr")  # rb still holds the writer lock
    rb.close()
    with pytest.raises(FileExistsError):
        ReplayBuffer.create(tmp_path / "b.zarr")


def test_add_episodes_batches_like_single_appends_and_is_all_or_nothing(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [{"obs": rng.normal(size=(n, 3)).astype(np.float32), "img": rng.integers(0, 255, (n, 4, 4, 3), np.uint8)}
                for n in (3, 5, 2, 4)]
    one = ReplayBuffer.create(tmp_path / "one.zarr")
    for episode in episodes:
        one.add_episode(episode)
    batch = ReplayBuffer.create(tmp_path / "batch.zarr")
    assert batch.add_episodes(episodes[:1]) == [0]
    assert batch.add_episodes(episodes[1:]) == [1, 2, 3]
    assert batch.episode_ends.tolist() == one.episode_ends.tolist() == [3, 8, 10, 14]
    for key in ("obs", "img"):
        assert batch.checksums(key).tolist() == one.checksums(key).tolist()
    bad = {"obs": np.full((2, 3), np.nan, np.float32), "img": np.zeros((2, 4, 4, 3), np.uint8)}
    with pytest.raises(DatasetError, match="episode 5: `obs` holds NaN"):
        batch.add_episodes([episodes[0], bad])
    assert batch.n_episodes == 4
    one.close()
    batch.close()
    with ReplayBuffer.open(tmp_path / "batch.zarr") as reopened:
        assert reopened.verify().ok and reopened.n_steps == 14
        np.testing.assert_array_equal(reopened.get_episode(2)["img"], episodes[2]["img"])
        # block reads give the same episodes, whatever the block size
        for batch_bytes in (1, 200, 2**30):
            read = list(reopened.iter_episodes(batch_bytes=batch_bytes))
            assert len(read) == 4
            for got, expected in zip(read, episodes):
                for key in expected:
                    np.testing.assert_array_equal(got[key], expected[key])
        assert [len(e["obs"]) for e in reopened.get_episodes(1, 3, ["obs"])] == [5, 2]
        with pytest.raises(IndexError):
            reopened.get_episodes(3, 5)
