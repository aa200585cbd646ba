"""Exclusive writer locks for datasets and run folders.

A writer of `<dir>/<name>` holds an advisory `flock` on the file `<dir>/.<name>.lock` for as long
as it writes. The lock file names its holder (pid, host, command, start time) so that a second
writer's error can say who holds it. The kernel releases a `flock` when its process dies, so the
lock of a killed writer (SIGKILL, power loss of a local process) is stale by construction: the
next writer takes it over and says so (a killed writer's lock file stays until then).

A clean release deletes the lock file while still holding the lock, so nothing is left beside a
dataset, a run or an output that was never made. That is safe against a writer that opened the file
just before it was deleted: after taking the `flock`, a writer checks that the path still names the
file it locked (same inode) and, if not, starts again on the new file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from robolearn.errors import UserError


class LockError(UserError):
    """Another live process is writing the path; the message names the holder."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of `path`: `<parent>/.<name>.lock` (beside it, so a path that does not exist yet
    can be locked before it is created)."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}.lock"


class WriterLock:
    """An exclusive, non-blocking writer lock on `path` (see the module docstring).

    Args:
        path: the dataset or run folder to be written.
        what: a word for messages ("dataset", "run folder").

    Attributes:
        took_over: the holder recorded in a stale lock file that was taken over (a dict), or None.

    Raises (from `acquire`):
        LockError: another live process holds the lock.
    """

    def __init__(self, path: str | os.PathLike, what: str = "dataset"):
        self.path = Path(path)
        self.what = what
        self.file = lock_path(path)
        self._fd: int | None = None
        self.took_over: dict | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WriterLock:
        if self._fd is not None:
            return self
        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockError(f"{self.what} {self.path} is being written by another process "
                                f"({_describe(holder)}); wait for it to finish or stop it") from None
            if _same_file(fd, self.file):
                break
            os.close(fd)  # its holder released and deleted it after we opened it: lock the file now there
        previous = _read_holder(fd)
        if previous and "pid" not in previous:  # not a file robolearn wrote: never truncate it
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LockError(f"{self.file} exists and is not a robolearn lock file; robolearn will not overwrite it "
                            f"(move it away to write {self.path})")
        if previous:  # a clean release empties the file: content means its writer died
            self.took_over = previous
            print(f"robolearn: took over the stale lock on {self.path} left by a process that is gone "
                  f"({_describe(previous)})", file=sys.stderr)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            if _same_file(self._fd, self.file):
                os.unlink(self.file)  # under the lock: a writer waiting on this file sees it gone and retries
        except FileNotFoundError:
            pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except OSError:
            pass


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the open file `fd` (same device and inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_holder(fd: int) -> dict:
    """The holder record in a lock file: {} if empty, {"unreadable": True} if it is not a JSON record."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        record = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"unreadable": True}
    return record if isinstance(record, dict) else {"unreadable": True}


def _describe(holder: dict) -> str:
    if not holder or "pid" not in holder:
        return "holder unknown"
    return f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}: {holder.get('command', '')}"
