"""Checks every command that writes makes before it starts: its outputs can be written, and no output is, holds or
lies inside one of its sources. A library module (the apps and the dataset writers call it).

    check_apart({"output": out}, {"source": src})     # UserError if out == src, out inside src or src inside out
    check_writable(out, "output")                     # UserError if out cannot be created or written

Both run before any work, so a command never spends minutes (an evaluation, a fit) and then fails to save what
it computed, and never replaces or writes into the data it reads. `write_text_or_keep` is the last line of
defence for a result file: if the disk fails anyway (full, remounted read-only), the text is written to the temp
folder instead and the error names both paths.
"""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from robolearn.errors import UserError

#: OS errors a user causes or can fix (a path's permissions, a read-only or full disk, a name too long, a file
#: where a folder should be): the CLI prints them as one line (exit 2), never as an internal error
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
                         errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ELOOP})


def is_user_os_error(exc: BaseException) -> bool:
    """True for an `OSError` whose errno is one of `USER_ERRNOS` (PermissionError, a read-only file system, ...)."""
    return isinstance(exc, OSError) and exc.errno in USER_ERRNOS


def _resolved(path: str | os.PathLike) -> Path:
    """The absolute path with symbolic links resolved as far as the path exists (a path to be created included)."""
    return Path(os.path.realpath(os.path.abspath(str(path))))


def overlap(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """How two paths overlap: "is" (the same file or folder), "inside" (a lies inside b), "holds" (b lies inside
    a), or None. Symbolic links are followed, so a link to a dataset is that dataset."""
    ra, rb = _resolved(a), _resolved(b)
    if ra == rb:
        return "is"
    if rb in ra.parents:
        return "inside"
    if ra in rb.parents:
        return "holds"
    return None


def check_apart(outputs: Mapping[str, str | os.PathLike | None], sources: Mapping[str, str | os.PathLike | None]) \
        -> None:
    """Refuse outputs that are, hold or lie inside a source (None entries are skipped).

    Args:
        outputs: {option name: path the command writes or replaces}, e.g. {"output": "data/x.zarr"}.
        sources: {option name: path the command reads}, e.g. {"source": "exports/x"}.

    Raises:
        UserError: naming both options and paths, e.g. "output=data/x.zarr lies inside source=data: ...".
    """
    words = {"is": "is", "inside": "lies inside", "holds": "holds"}
    for out_name, out in outputs.items():
        if out is None:
            continue
        for src_name, src in sources.items():
            if src is None:
                continue
            how = overlap(out, src)
            if how is not None:
                raise UserError(f"{out_name}={out} {words[how]} {src_name}={src}: a command never writes into, over "
                                f"or around what it reads; choose an {out_name}= outside it (nothing was written)")


def check_writable(path: str | os.PathLike, name: str) -> None:
    """Refuse a file or folder that cannot be written, before any work: the path itself when it exists (a folder:
    a probe file is made and removed in it), else its nearest existing ancestor (where it would be created).

    Args:
        path: the file or folder the command will write.
        name: the option that names it, for the message (e.g. "output_dir").

    Raises:
        UserError: the path or the folder it would be made in is not writable (permissions, a read-only disk),
            or a file stands where a folder is needed.
    """
    target = Path(os.path.abspath(str(path)))
    probe_dir = target if target.is_dir() else None
    if probe_dir is None:
        if target.exists() or target.is_symlink():  # an existing file: it will be replaced beside itself
            probe_dir = target.parent
        else:
            probe_dir = target.parent
            while not probe_dir.exists():
                probe_dir = probe_dir.parent
            if not probe_dir.is_dir():
                raise UserError(f"{name}={path}: {probe_dir} is a file, so no folder can be made under it")
    probe = probe_dir / f".robolearn-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{name}={path} cannot be written: {probe_dir} is not writable ({exc.strerror}); "
                        f"choose another {name}= (nothing was done)") from None


def write_text_or_keep(path: str | os.PathLike, text: str, what: str) -> Path:
    """Write `text` to `path` atomically (a temporary file beside it, then a rename); if that fails with an OS
    error, write it to the temp folder instead, so a finished computation is never lost.

    Returns:
        `path`.

    Raises:
        UserError: `path` could not be written; the message names the error and the file in the temp folder that
            holds `text`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
    except OSError as exc:
        fd, kept = tempfile.mkstemp(prefix=f"robolearn-{path.stem}-", suffix=path.suffix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        raise UserError(f"could not write the {what} to {path} ({exc.strerror or exc}); it was saved to {kept} "
                        "instead") from None


#: the marker robolearn puts in everything it writes that `overwrite=true` may later replace (a dataset's root
#: attributes, a LeRobot export's meta/robolearn.json, a bag export's custom data): {"tool": "robolearn", ...}
WRITER_KEY = "written_by"


def writer_marker() -> dict:
    """The value of `WRITER_KEY` for a new output: the tool and its version."""
    from robolearn import __version__

    return {"tool": "robolearn", "version": __version__}


def is_writer_marker(value) -> bool:
    """True when a parsed `WRITER_KEY` value is robolearn's (a mapping whose `tool` is "robolearn")."""
    return isinstance(value, Mapping) and value.get("tool") == "robolearn"


def unexpected_entries(folder: Path, allowed: set[str]) -> list[str]:
    """The names in `folder` that are not in `allowed` (sorted): what someone else put there."""
    return sorted(p.name for p in folder.iterdir() if p.name not in allowed)
