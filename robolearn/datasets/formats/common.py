"""What every importer and exporter shares: format errors, atomic outputs, key maps, provenance.

An import or export never leaves a half-written output: it writes into a staging folder beside the
output (`.<name>.partial`), under the output's writer lock, and renames it into place only when every
episode is written. A run that is killed leaves the staging folder; the next run on the same output
removes it and starts again (restarts cleanly), and the output path itself is either absent or complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from robolearn.datasets.replay_buffer import (
    DatasetError,
    ReplayBuffer,
    key_name_problem,
)
from robolearn.lock import WriterLock
from robolearn.outputs import WRITER_KEY, is_writer_marker

#: dataset attribute that records where an imported dataset came from (`robolearn dataset info` shows it)
SOURCE_ATTR = "source"
#: dataset attributes with the task strings of an imported dataset and each episode's index into them
TASKS_ATTR = "tasks"
EPISODE_TASKS_ATTR = "episode_task_index"
#: dataset attribute holding named lists of episode indices (robomimic's masks: train, valid, ...); training takes
#: `valid` as its validation episodes (`robolearn.datasets.dataset.recorded_split`)
SPLITS_ATTR = "splits"


class FormatError(DatasetError):
    """A file of a foreign dataset is missing, damaged or not what its format says; the message names the file
    and what was expected."""


def staging_path(output: Path) -> Path:
    """The staging folder of `output`: `<parent>/.<name>.partial`."""
    return output.parent / f".{output.name}.partial"


@contextmanager
def atomic_output(output: str | os.PathLike, overwrite: bool, check_replaceable: Callable[[Path], None],
                  what: str = "dataset", nested: bool = False) -> Iterator[Path]:
    """Write `output` all at once: yields a staging path to write (absent on entry), renamed to `output` on a
    clean exit; on an exception the staging path is removed and `output` is untouched. With `nested`, the path
    yielded is `<staging>/<output name>` (for writers that name files after their folder, like rosbag2's).

    A staging folder left by a killed run is removed first (the run restarts). With `overwrite`, an existing
    `output` is replaced after `check_replaceable(output)` passes: the new output is renamed in and the old one
    deleted only then.

    Raises:
        FileExistsError: `output` exists and `overwrite` is False.
        LockError: another process is writing `output`.
        whatever `check_replaceable` raises (it must refuse anything robolearn did not write).
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(output, what=what):
        exists = output.exists() or output.is_symlink()
        if exists and not overwrite:
            raise FileExistsError(f"{output} already exists (pass overwrite=true to replace it)")
        if exists:
            check_replaceable(output)
        staging = staging_path(output)
        if staging.exists():
            print(f"robolearn: removing {staging}, left by an interrupted run; starting again", file=sys.stderr)
            _remove(staging)
        written = staging / output.name if nested else staging
        if nested:
            staging.mkdir()
        try:
            yield written
        except BaseException:
            _remove(staging)
            raise
        if not written.exists():
            _remove(staging)
            raise DatasetError(f"nothing was written for {output}")
        if exists:
            aside = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(output, aside)
            os.rename(written, output)
            _remove(aside)
        else:
            os.rename(written, output)
        if nested:
            staging.rmdir()


def check_own_export(path: Path, kind: str, read_marker: Callable[[Path], tuple[object, str, list[str]]]) -> None:
    """Refuse to replace `path` unless robolearn provably wrote it: a folder (not a link or a file) whose marker,
    as `read_marker(path)` parses it, is robolearn's (`robolearn.outputs.is_writer_marker`), holding nothing but
    what robolearn writes there.

    Args:
        kind: what robolearn writes, for messages (e.g. "a LeRobot export").
        read_marker: path -> (the parsed marker or None, where it was looked for, the unexpected entries).

    Raises:
        FormatError: naming what is missing or extra (nothing is changed).
    """
    refuse = "so overwrite=true will not replace it; move or delete it yourself, or choose another output="
    if path.is_symlink() or not path.is_dir():
        raise FormatError(f"{path} is not {kind} of robolearn (a file or a link), {refuse}")
    marker, where, extra = read_marker(path)
    if not is_writer_marker(marker):
        raise FormatError(f"{path} is not {kind} of robolearn ({where} with robolearn's `{WRITER_KEY}` marker is "
                          f"missing or unreadable), {refuse}")
    if extra:
        raise FormatError(f"{path} holds {extra[:5]}, which {kind} of robolearn does not hold, {refuse}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def resolve_key_map(available: list[str], default: Callable[[str], str | None],
                    overrides: Mapping[str, str | None] | None, source: str) -> dict[str, str]:
    """{source key: dataset key} for the keys of a foreign dataset.

    Args:
        available: the source's keys (feature names, HDF5 datasets, topics), in their order.
        default: the format's default name for a key (None: not imported by default).
        overrides: the user's {source key: dataset key or None (drop it)}; they win over the defaults.
        source: the source's path, for messages.

    Raises:
        FormatError: an override names a key the source does not have (listing those it has), a dataset key that
            is not a valid name (`key_name_problem`), two source keys map to one dataset key, or no key is mapped.
    """
    overrides = dict(overrides or {})
    missing = [k for k in overrides if k not in available]
    if missing:
        raise FormatError(f"{source}: the key map names {missing}, which the source does not have; "
                          f"it has {available}")
    mapping = {}
    for key in available:
        target = overrides[key] if key in overrides else default(key)
        if target is not None:
            mapping[key] = str(target)
    for key, target in mapping.items():
        problem = key_name_problem(target)
        if problem:
            raise FormatError(f"{source}: {key} would be stored as {target!r}: {problem}; give it another name in the "
                              "key map (keys=...)")
    if not mapping:
        raise FormatError(f"{source}: no key would be imported (it has {available or 'none'}); map one with "
                          "keys='{...: name}'")
    targets = list(mapping.values())
    clashes = sorted({t for t in targets if targets.count(t) > 1})
    if clashes:
        raise FormatError(f"{source}: several source keys map to {clashes} ({mapping}); "
                          "give each its own name in the key map (keys=...)")
    return mapping


def provenance(fmt: str, version: str, source: Path, key_map: Mapping[str, str], **extra) -> dict:
    """The `source` attribute of an imported dataset: format, version, absolute path, key map, time."""
    return {"format": fmt, "version": version, "path": str(Path(source).resolve()), "keys": dict(key_map),
            "imported_at": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}


def imported_from(path: str | os.PathLike) -> str | None:
    """"<format> <version>" of a dataset that `robolearn dataset import` wrote, else None."""
    try:
        with ReplayBuffer.open(path) as buffer:
            source = buffer.attrs.get(SOURCE_ATTR)
    except (DatasetError, FileNotFoundError):
        return None
    return f"{source['format']} {source.get('version', '')}".strip() if isinstance(source, dict) and \
        "format" in source else None


def dataset_fps(attrs: Mapping, given: float | None) -> float:
    """The control rate (Hz) of a robolearn dataset: `given` if set, else what its attributes record
    (an import's source fps, `robolearn record`'s rate_hz, a collection's env control_hz).

    Raises:
        DatasetError: neither is known (pass fps=...), or the rate is not positive.
    """
    robolearn = attrs.get("robolearn") or {}
    candidates = [given, (attrs.get(SOURCE_ATTR) or {}).get("fps"), robolearn.get("rate_hz"),
                  (robolearn.get("env_kwargs") or {}).get("control_hz"), robolearn.get("control_hz")]
    fps = next((c for c in candidates if c is not None), None)
    if fps is None:
        raise DatasetError("the dataset does not record its control rate; pass fps=<Hz>")
    if not float(fps) > 0:
        raise DatasetError(f"fps must be positive, got {fps}")
    return float(fps)



def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Camera frames uint8 (T, H, W, C) resized to `size` = (height, width) with area interpolation (None: as is)."""
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    import cv2

    return np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in frames])
