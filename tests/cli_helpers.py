"""Helpers for tests that run `robolearn` commands as a user would and judge what they print and leave behind."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from robolearn.cli import main

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one error line of a refused command (asserting there is exactly one, exit code 2, no traceback)."""
        assert self.code == 2, f"exit {self.code}\n{self.out[-2000:]}\n{self.err[-3000:]}"
        assert "Traceback" not in self.err and "internal error" not in self.err, self.err[-3000:]
        lines = [line for line in self.err.splitlines() if ": error: " in line]
        assert len(lines) == 1, self.err[-3000:]
        return lines[0]


def run(*args: str, cwd: Path) -> Result:
    """`robolearn ARGS` in this process, from the folder `cwd` (what it prints captured)."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code
    finally:
        os.chdir(before)
    return Result(int(code or 0), out.getvalue(), err.getvalue())


def run_process(*args: str, cwd: Path, read_only: tuple[Path, ...] = (), timeout: float = 600) -> Result:
    """`robolearn ARGS` in a process of its own, with the folders `read_only` (made if need be) unwritable for it:
    by their permissions for a user other than root, and for root (whom permissions do not stop) by a read-only
    bind mount in a mount namespace of the process's own (`unshare`, which needs the right to mount; the test is
    skipped where that is not given)."""
    command = [sys.executable, "-m", "robolearn", *args]
    for folder in read_only:
        folder.mkdir(parents=True, exist_ok=True)
    if read_only and os.geteuid() != 0:
        for folder in read_only:
            folder.chmod(0o555)
    elif read_only:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
            pytest.skip("running as root without the right to mount: no way to make a folder read-only")
        mounts = " && ".join(f"mount --bind '{f}' '{f}' && mount -o remount,ro,bind '{f}'" for f in read_only)
        command = ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh", *command]
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    finally:
        for folder in read_only:
            folder.chmod(0o755)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def leftovers(folder: Path) -> list[str]:
    """What a failed command left in `folder`: lock files, staging folders, temporary files (sorted names)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith((".lock", ".partial")) or ".tmp-" in p.name or ".old-" in p.name
                  or p.name.startswith(".robolearn-write-test"))
