"""Datasets under careless and hostile use: overwrite never deletes what robolearn did not create,
writers lock, corruption is detected on read, bad values are refused at write time; plus a
property-based test of random episodes, crashes and corruptions."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robolearn.datasets import (
    DatasetError,
    DatasetWarning,
    ReplayBuffer,
    SequenceDataset,
)
from robolearn.lock import LockError, WriterLock, lock_path


def episode(seed: int, length: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"obs": rng.normal(size=(length, 3)).astype(np.float32),
            "action": rng.normal(size=(length, 2)).astype(np.float32),
            "done": np.arange(length) == length - 1}


def make_buffer(path: Path, lengths=(5, 7, 4)) -> list[dict]:
    episodes = [episode(i, n) for i, n in enumerate(lengths)]
    with ReplayBuffer.create(path) as rb:
        for ep in episodes:
            rb.add_episode(ep)
    return episodes


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "robolearn", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- overwrite never deletes a user's files ---------------------------------------------------
def test_overwrite_refuses_a_folder_of_user_files(tmp_path):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    with pytest.raises(DatasetError, match="is not a robolearn dataset"):
        ReplayBuffer.create(user, overwrite=True)
    assert (user / "chapter1.tex").read_text() == "precious"
    (tmp_path / "notes.txt").write_text("also precious")
    with pytest.raises(DatasetError, match="is a file"):
        ReplayBuffer.create(tmp_path / "notes.txt", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "also precious"


def test_overwrite_refuses_the_working_directory_its_parents_home_and_links(tmp_path, monkeypatch):
    data = tmp_path / "work" / "d.zarr"
    data.parent.mkdir()
    make_buffer(data)
    monkeypatch.chdir(data)  # `.` is a real dataset, and still refused
    for target in (".", "..", str(tmp_path)):
        with pytest.raises(DatasetError, match="never deletes"):
            ReplayBuffer.create(target, overwrite=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(data))
    with pytest.raises(DatasetError, match="never deletes"):
        ReplayBuffer.create(data, overwrite=True)
    monkeypatch.delenv("HOME")
    (tmp_path / "link.zarr").symlink_to(data)
    with pytest.raises(DatasetError, match="symbolic link"):
        ReplayBuffer.create(tmp_path / "link.zarr", overwrite=True)
    assert ReplayBuffer.open(data).n_episodes == 3


def test_overwrite_replaces_a_dataset_by_swapping(tmp_path):
    path = tmp_path / "d.zarr"
    make_buffer(path)
    with ReplayBuffer.create(path, overwrite=True) as rb:
        assert rb.n_episodes == 0
    assert ReplayBuffer.open(path).n_episodes == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]  # no leftovers (the lock file goes on release)


def test_collect_cli_overwrite_of_user_folder_and_dot(tmp_path):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "a.jpg").write_bytes(b"\xff\xd8")
    proc = run_cli("collect", f"output={user}", "overwrite=true", "n_episodes=1", cwd=tmp_path)
    assert_one_line_error(proc, "is not a robolearn dataset", str(user))
    proc = run_cli("collect", f"output={user}", "n_episodes=1", cwd=tmp_path)
    assert_one_line_error(proc, "is not a robolearn dataset", "choose another output=")
    assert "overwrite" not in proc.stderr.replace(str(tmp_path), "")  # no invitation to the destructive option
    proc = run_cli("collect", "output=.", "overwrite=true", "n_episodes=1", cwd=user)
    assert_one_line_error(proc)
    assert (user / "a.jpg").read_bytes() == b"\xff\xd8"  # (hydra adds its outputs/ log folder beside it)


# -- writer locks --------------------------------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "d.zarr"
    make_buffer(path)
    with ReplayBuffer.open(path, mode="a"):
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            ReplayBuffer.open(path, mode="a")
        with pytest.raises(LockError):
            ReplayBuffer.create(path, overwrite=True)
        assert ReplayBuffer.open(path).n_episodes == 3  # readers are never blocked
    with ReplayBuffer.open(path, mode="a") as rb:  # released on close
        rb.add_episode(episode(9, 3))


def test_collect_refuses_a_dataset_another_process_writes(tmp_path):
    output = tmp_path / "d.zarr"
    with WriterLock(output):
        proc = run_cli("collect", f"output={output}", "n_episodes=1", cwd=tmp_path)
    assert_one_line_error(proc, "being written by another process", f"pid {os.getpid()}")
    assert not output.exists()


def test_concurrent_collects_never_mix_data(tmp_path):
    """Two collects started at once on one new output: one writes, the other is refused or finds the
    dataset complete; the result is exactly one run's episodes."""
    output = tmp_path / "d.zarr"
    procs = [subprocess.Popen([sys.executable, "-m", "robolearn", "collect", f"output={output}", "n_episodes=4"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert rc == 0 or (rc == 2 and "being written by another process" in err), err
    rb = ReplayBuffer.open(output)
    assert rb.n_episodes == 4 and rb.verify().ok
    assert rb.episode_ends[-1] == rb.array("action").shape[0]


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from robolearn.lock import WriterLock
    lock = WriterLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_stale_lock_of_a_killed_writer_is_taken_over(tmp_path, capsys):
    path = tmp_path / "d.zarr"
    make_buffer(path)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(LockError, match=f"pid {proc.pid}"):
        ReplayBuffer.open(path, mode="a")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads(lock_path(path).read_text())["pid"] == proc.pid  # the dead writer's record is still there
    with ReplayBuffer.open(path, mode="a") as rb:
        rb.add_episode(episode(5, 2))
        assert rb._lock.took_over["pid"] == proc.pid
    assert "took over the stale lock" in capsys.readouterr().err


# -- corruption is detected on read ----------------------------------------------------------
def chunk_files(path: Path, key: str) -> list[Path]:
    return sorted(p for p in (path / "data" / key / "c").rglob("*") if p.is_file())


def test_deleted_chunk_is_an_error_never_zeros(tmp_path):
    path = tmp_path / "d.zarr"
    with ReplayBuffer.create(path) as rb:  # small chunks: several files per key
        for i in range(4):
            rb.add_episode(episode(i, 6), chunks={"action": (5, 2)})
    chunk_files(path, "action")[1].unlink()
    rb = ReplayBuffer.open(path)
    with pytest.raises(DatasetError, match=r"`data/action` chunk c/1/0 .* is missing"):
        rb.load(["action"])
    with pytest.raises(DatasetError, match="missing"):
        rb.get_episode(1)
    rb.get_episode(3, ["obs"])  # other keys still read
    with pytest.raises(DatasetError, match="missing"):
        SequenceDataset(path, ["obs"], "action", horizon=4, n_obs_steps=2, n_action_steps=2)
    report = rb.verify()
    assert not report.ok and len(report.problems) == 1
    proc = run_cli("dataset", "verify", str(path))
    assert proc.returncode == 2 and "problem:" in proc.stdout and "1 problem(s) found" in proc.stderr
    proc = run_cli("dataset", "info", str(path))  # no statistics of a damaged dataset
    assert proc.returncode == 2 and "is missing" in proc.stdout and "episodes:" not in proc.stdout


def test_overwritten_chunk_bytes_are_an_error(tmp_path):
    path = tmp_path / "d.zarr"
    make_buffer(path)
    f = chunk_files(path, "obs")[0]
    raw = bytearray(f.read_bytes())
    for i in range(len(raw) // 2, len(raw)):
        raw[i] ^= 0x5A
    f.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"data/obs"):
        ReplayBuffer.open(path).load()
    assert not ReplayBuffer.open(path).verify().ok


def test_clean_dataset_verifies(tmp_path):
    path = tmp_path / "d.zarr"
    make_buffer(path)
    report = ReplayBuffer.open(path).verify()
    assert report.ok and report.n_checksummed == 3 and not report.notes
    proc = run_cli("dataset", "verify", str(path))
    assert proc.returncode == 0 and "OK, 3 episodes, 3 verified" in proc.stdout
    proc = run_cli("dataset", "info", str(path))
    assert proc.returncode == 0 and "integrity: verified, 3/3 episodes" in proc.stdout


def test_episode_ends_validated(tmp_path):
    path = tmp_path / "d.zarr"
    make_buffer(path, (5, 7, 4))  # ends 5, 12, 16
    ends = zarr.open_group(path, mode="r+")["meta/episode_ends"]
    ends[2] = 12  # not larger than the one before: never silently dropped
    with pytest.raises(DatasetError, match="strictly increasing"):
        ReplayBuffer.open(path)
    ends[2] = 7
    with pytest.raises(DatasetError, match="strictly increasing"):
        ReplayBuffer.open(path)
    ends[2] = 0  # exactly the state a crash leaves (resize, then killed): reported, not silent
    with pytest.warns(DatasetWarning, match="interrupted before its commit"):
        rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 2 and rb.uncommitted_tail
    assert "interrupted" in rb.verify().notes[0]
    for dtype, values in (("float64", [5.0, 12.0, 16.0]), ("float32", [5.5, 12.0, 16.0])):
        root = zarr.open_group(path, mode="r+")
        del root["meta/episode_ends"]
        root["meta"].create_array("episode_ends", shape=(3,), dtype=dtype)[:] = values
        with pytest.raises(DatasetError, match="must be a 1-D integer array, got float"):
            ReplayBuffer.open(path)
    root = zarr.open_group(path, mode="r+")
    del root["meta/episode_ends"]
    root["meta"].create_array("episode_ends", shape=(3,), dtype="<U4")[:] = ["5", "12", "16"]
    with pytest.raises(DatasetError, match="must be a 1-D integer array"):
        ReplayBuffer.open(path)


def test_values_that_do_not_fit_the_stored_dtype_are_refused(tmp_path):
    path = tmp_path / "d.zarr"
    make_buffer(path)
    with ReplayBuffer.open(path, mode="a") as rb:
        bad = episode(7, 3)
        bad["obs"] = bad["obs"].astype(np.float64)
        bad["obs"][1, 2] = 1e300
        with pytest.raises(DatasetError, match=r"1e\+300.*does not fit the stored float32"):
            rb.add_episode(bad)
        ok = episode(8, 3)
        ok["obs"] = ok["obs"].astype(np.float64)  # float64 that fits is stored as float32
        rb.add_episode(ok)
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes == 4 and rb.verify().ok
    with ReplayBuffer.create(tmp_path / "i.zarr") as ib:
        ib.add_episode({"count": np.array([1, 2], np.int16)})
        with pytest.raises(DatasetError, match="outside the stored int16"):
            ib.add_episode({"count": np.array([1, 70000], np.int32)})
        with pytest.raises(DatasetError, match="numeric dtype"):
            ib.add_episode({"count": np.array(["a", "b"])})


# -- property: nothing committed is lost, nothing corrupted is read as valid -----------------
CORRUPTIONS = ("none", "delete_chunk", "flip_bytes", "truncate_chunk", "crash_mid_append", "crash_after_resize")


@pytest.mark.filterwarnings("ignore::robolearn.datasets.DatasetWarning")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=6), chunk=st.integers(1, 40),
       corruption=st.sampled_from(CORRUPTIONS), pick=st.integers(0, 10**6), seed=st.integers(0, 10**6))
def test_property_committed_data_is_exact_or_an_error(lengths, chunk, corruption, pick, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.zarr"
        episodes = [episode(seed + i, n) for i, n in enumerate(lengths)]
        with ReplayBuffer.create(path) as rb:
            for ep in episodes:
                rb.add_episode(ep, chunks={"obs": (chunk, 3), "action": (chunk, 2), "done": (chunk,)})
        committed = len(episodes)
        root = zarr.open_group(path, mode="r+")
        corrupted = False
        if corruption in ("delete_chunk", "flip_bytes", "truncate_chunk"):
            files = [f for key in ("obs", "action", "done") for f in chunk_files(path, key)]
            f = files[pick % len(files)]
            raw = bytearray(f.read_bytes())
            if corruption == "delete_chunk":
                f.unlink()
            elif corruption == "flip_bytes":
                i = pick % len(raw)
                raw[i] ^= 1 + pick % 255
                f.write_bytes(bytes(raw))
            else:
                f.write_bytes(bytes(raw[: pick % len(raw)]))
            corrupted = True
        elif corruption == "crash_mid_append":  # data grown and written, episode_ends not yet
            for key, arr in root["data"].arrays():
                arr.resize((arr.shape[0] + 3, *arr.shape[1:]))
        elif corruption == "crash_after_resize":  # episode_ends grown, its value not yet written
            ends = root["meta/episode_ends"]
            ends.resize((ends.shape[0] + 1,))
        try:
            with ReplayBuffer.open(path) as rb:
                loaded = rb.load()
                assert rb.n_episodes == committed
                for i, ep in enumerate(episodes):
                    sl = rb.episode_slice(i)
                    for key, values in ep.items():
                        np.testing.assert_array_equal(loaded[key][sl], values)  # exact, or an error
                # A truncated Blosc chunk can decode differently on each read (once exact, once garbage): each read
                # is still exact or an error, so a later full check may flag what the first read got right.
                assert rb.verify().ok or corrupted
        except DatasetError:
            assert corrupted, f"{corruption}: a clean or merely interrupted store must read"
        # a writer can always continue a store that was only interrupted
        if not corrupted:
            with ReplayBuffer.open(path, mode="a") as rb:
                rb.add_episode(episode(seed + 99, 2))
            assert ReplayBuffer.open(path).n_episodes == committed + 1


def test_a_foreign_file_in_the_lock_files_place_is_never_overwritten(tmp_path):
    (tmp_path / ".d.zarr.lock").write_text("my notes")
    with pytest.raises(LockError, match="is not a robolearn lock file"):
        ReplayBuffer.create(tmp_path / "d.zarr")
    assert (tmp_path / ".d.zarr.lock").read_text() == "my notes" and not (tmp_path / "d.zarr").exists()


def test_lock_file_names_the_holder(tmp_path):
    with WriterLock(tmp_path / "x.zarr") as lock:
        record = json.loads(lock.file.read_text())
        assert record["pid"] == os.getpid() and time.strftime("%Y") in record["since"]
    assert not lock.file.exists()  # a clean release removes it: nothing left beside the output, no "stale" report


def test_lock_released_while_another_writer_opened_its_file_is_taken_again(tmp_path, monkeypatch):
    """A writer that opened the lock file just before its holder released (and deleted) it must not end up holding
    a lock on the deleted file (a third writer would then lock the new file too): it notices and starts again."""
    import robolearn.lock as lock_module

    first = WriterLock(tmp_path / "x.zarr").acquire()
    stale_fd = os.open(first.file, os.O_RDWR)  # the second writer's open, racing the release
    first.release()
    assert not first.file.exists()
    opens = []
    real_open = os.open

    def racing_open(path, flags, mode=0o777):
        opens.append(path)
        return stale_fd if len(opens) == 1 else real_open(path, flags, mode)

    monkeypatch.setattr(lock_module.os, "open", racing_open)
    second = WriterLock(tmp_path / "x.zarr").acquire()
    monkeypatch.setattr(lock_module.os, "open", real_open)
    assert len(opens) == 2 and second.file.exists()  # it retried on the new file
    with pytest.raises(LockError):  # so a third writer is refused
        WriterLock(tmp_path / "x.zarr").acquire()
    second.release()
