"""Episode-indexed zarr replay buffer in the reference Diffusion Policy layout.

Layout (Chi et al. 2023, real-stanford/diffusion_policy `ReplayBuffer`)::

    <root>/
      data/<key>          (T_total, ...)  every episode concatenated along time (axis 0)
      meta/episode_ends   (n_episodes,) int64, cumulative: episode i is data[ends[i-1]:ends[i]]

Stores are written in zarr format 3, chunked along time only and compressed with
Blosc-zstd (bit-shuffle; camera images byte-shuffle, ~512 KiB chunks) unless a key overrides chunks or
compressor. Stores in zarr
format 2 as the reference implementation writes them (directory stores and `.zarr.zip`
files) open read-only.

Crash safety: appending an episode writes the data arrays first and `meta/episode_ends`
last, and zarr's local store replaces every file atomically (temporary file, then
rename). An episode therefore exists only once its end is in `episode_ends`: after a
SIGKILL during the append of episode k, readers see episodes 0..k-1, and data beyond the
last committed end is ignored (and overwritten by the next append). No repair step.

Integrity (Reliability issue): at commit time the CRC-32 of each key's stored bytes for the
episode goes to `meta/checksums/<key>` (int64 (n_episodes,), -1 where none was recorded, e.g.
episodes written before checksums existed), and every chunk is written even when it holds only
fill values, so a chunk file that is missing later is corruption, never "zeros". Reads check what
they read: `load` and `get_episode` verify the chunks and checksums of the steps they return,
`verify()` checks the whole store. A chunk that cannot be decoded, a missing chunk, a checksum
mismatch and a malformed `episode_ends` are `DatasetError`s naming the key and episode.

Writers: `create` and `open(mode="a")` take an exclusive `robolearn.lock.WriterLock` on the path
for as long as the buffer is open (`close()` releases it); a second writer gets a `LockError`
naming the holder. `create(overwrite=True)` replaces only a replay buffer robolearn wrote
(`check_replaceable`: its writer marker, nothing else inside), by building the new one beside it and
swapping, and never `/`, the home folder or a folder holding the working directory.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from robolearn.lock import WriterLock
from robolearn.outputs import (
    WRITER_KEY,
    is_writer_marker,
    unexpected_entries,
    writer_marker,
)

EPISODE_ENDS = "meta/episode_ends"
CHECKSUMS = "meta/checksums"  # one int64 array per data key: CRC-32 of the episode's stored bytes, -1 = none
WRITE_CONFIG = {"write_empty_chunks": True}  # every chunk exists on disk: a missing one is corruption
DEFAULT_CHUNK_BYTES = 1 << 18  # about 256 KiB of uncompressed data per chunk
IMAGE_CHUNK_BYTES = 1 << 19  # camera images: about 512 KiB per chunk (18 frames of 96 x 96 x 3; 1 of 640 x 480)
ZARR_ENTRIES = ("zarr.json", "data", "meta")  # what a replay buffer folder robolearn writes holds at its top


class DatasetError(ValueError):
    """A dataset is missing, malformed or holds invalid values; the message names the key/episode."""


class NotAReplayBufferError(DatasetError):
    """A path holds something other than a replay buffer (no zarr group, or no `data/` group and
    `meta/episode_ends` array): robolearn neither writes into it nor replaces it."""


def buffer_layout(root: zarr.Group, path: Path) -> tuple[zarr.Group, zarr.Array]:
    """The `data/` group and `meta/episode_ends` array of a replay buffer's root group.

    Raises:
        NotAReplayBufferError: either is missing or of the wrong kind.
    """
    try:
        data, ends = root["data"], root[EPISODE_ENDS]
    except KeyError as exc:
        raise NotAReplayBufferError(f"{path} is not a replay buffer: it has no `data/` group and "
                                    f"`{EPISODE_ENDS}` array") from exc
    if not isinstance(data, zarr.Group) or not isinstance(ends, zarr.Array):
        raise NotAReplayBufferError(f"{path} is not a replay buffer: `data` must be a group and "
                                    f"`{EPISODE_ENDS}` an array")
    return data, ends


class DatasetWarning(UserWarning):
    """Something about a dataset a user should know that is not an error (an uncommitted tail dropped)."""


def episode_checksum(values: np.ndarray) -> int:
    """CRC-32 (zlib) of an array's bytes in C order: the per-episode checksum of one key."""
    return zlib.crc32(memoryview(np.ascontiguousarray(values)).cast("B"))


def fit_dtype(key: str, values: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """`values` cast to the stored `dtype`, refusing values the dtype cannot hold.

    Raises:
        DatasetError: a finite float that overflows to inf in `dtype` (e.g. 1e300 into float32), or an
            integer outside `dtype`'s range; the message names `key` and `where` (e.g. "episode 3").
    """
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if np.issubdtype(dtype, np.floating) and np.issubdtype(values.dtype, np.number) and values.size:
        with np.errstate(over="ignore", invalid="ignore"):
            cast = values.astype(dtype)
        overflow = ~np.isfinite(cast) & np.isfinite(values)
        if overflow.any():
            bad = values[overflow].flat[0]
            raise DatasetError(f"{where}: `{key}` holds {bad!r}, which does not fit the stored {dtype} "
                               f"(largest magnitude {np.finfo(dtype).max:.3g})")
        return cast
    if np.issubdtype(dtype, np.integer) and np.issubdtype(values.dtype, np.integer) and values.size:
        info = np.iinfo(dtype)
        lo, hi = values.min(), values.max()
        if lo < info.min or hi > info.max:
            raise DatasetError(f"{where}: `{key}` holds {lo if lo < info.min else hi}, outside the stored "
                               f"{dtype}'s range [{info.min}, {info.max}]")
    return values.astype(dtype)


@dataclass
class VerifyReport:
    """What `ReplayBuffer.verify()` found.

    Attributes:
        n_episodes: committed episodes.
        n_checksummed: episodes whose every key has a recorded checksum (and was checked against it).
        problems: one line per problem found (empty: the store is intact).
        notes: things that are not errors (an uncommitted tail, episodes without checksums).
    """

    n_episodes: int
    n_checksummed: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_replaceable(path: Path) -> None:
    """Refuse to replace `path` unless it is a replay buffer folder that robolearn wrote and may delete: a zarr
    group with the buffer layout, robolearn's writer marker in its attributes (`robolearn.outputs.WRITER_KEY`,
    parsed, not searched for) and nothing else in it (no folder or file someone put inside).

    Raises:
        DatasetError: `path` is a symbolic link, a file, `/`, the home folder, the working
            directory or a folder holding it, anything that is not a replay buffer, a replay buffer without
            robolearn's marker (another tool's, or one written before robolearn marked its datasets), or a
            dataset folder holding anything else.
    """
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if path.is_symlink():
        raise DatasetError(f"{path} is a symbolic link; overwrite=true does not replace links (remove it yourself)")
    if resolved in (Path(resolved.anchor), Path.home().resolve()) or resolved == cwd or resolved in cwd.parents:
        raise DatasetError(f"refusing to replace {path} ({resolved}): robolearn never deletes the root or home "
                           "folder or a folder that holds the working directory; choose another output=")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a robolearn dataset folder; overwrite=true replaces only "
                           "datasets: move or delete it yourself, or choose another output=")
    try:
        root = zarr.open_group(path, mode="r")
        buffer_layout(root, path)
        marker = root.attrs.get(WRITER_KEY)
    except Exception as exc:  # noqa: BLE001 - whatever zarr raises, the folder is not a replay buffer
        raise NotAReplayBufferError(f"{path} is not a robolearn dataset ({exc}), so overwrite=true will not replace "
                                    "it; move or delete it yourself, or choose another output=") from None
    if not is_writer_marker(marker):
        raise NotAReplayBufferError(f"{path} holds no `{WRITER_KEY}` marker of robolearn (a dataset of another tool, "
                                    "or one written before robolearn marked its datasets), so overwrite=true will not "
                                    "replace it; move or delete it yourself, or choose another output=")
    extra = unexpected_entries(path, set(ZARR_ENTRIES))
    for group in ("data", "meta"):
        if (path / group).is_dir():
            extra += [f"{group}/{name}" for name in unexpected_entries(path / group, {"zarr.json"}) if not
                      (path / group / name / "zarr.json").is_file()]
    if extra:
        raise DatasetError(f"{path} holds {extra[:5]}, which are not part of the dataset robolearn wrote, so "
                           "overwrite=true will not replace it (that would delete them); move them out first, or "
                           "choose another output=")


def default_compressor() -> BloscCodec:
    """Blosc with zstd, level 5, bit-shuffle: the default for every data key."""
    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


def image_compressor() -> BloscCodec:
    """Blosc with zstd, level 5, byte shuffle: the default for camera images (uint8 (T, H, W, C) keys).

    Chosen by `bench/image_storage.py` on the Lift cameras: with 16-frame chunks it stores 96 x 96 frames at
    1/20 of their size, losslessly (bit-shuffle: 1/9; a JPEG at quality 90: 1/11 and lossy), and decodes a
    whole dataset at about 20,000 frames/s; one-frame chunks were 3-7x larger and 8x slower to load.
    """
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def is_image(values: np.ndarray) -> bool:
    """Whether per-episode `values` are camera images: uint8 (T, H, W, C)."""
    return values.dtype == np.uint8 and values.ndim == 4


def default_chunk_length(step_shape: tuple[int, ...], dtype: np.dtype, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Steps per chunk so that one chunk holds about `chunk_bytes` (default 256 KiB) (at least 1 step)."""
    step_bytes = max(1, math.prod(step_shape) * np.dtype(dtype).itemsize)
    return max(1, chunk_bytes // step_bytes)


def key_name_problem(key: object) -> str | None:
    """Why `key` cannot name a per-step array of a replay buffer (None when it can): a key is a non-empty text
    without '/' or '\\' (zarr would make it a nested group), not '.'-led and not '__'-led (zarr reserves those)."""
    if not isinstance(key, str) or not key.strip():
        return "expected a non-empty name"
    if "/" in key or "\\" in key:
        return "a key name cannot hold '/' or '\\'"
    if key.startswith((".", "__")):
        return "a key name cannot start with '.' or '__'"
    return None


def first_nonfinite_step(values: np.ndarray) -> int | None:
    """Index along axis 0 of the first step holding NaN or inf, or None (non-float arrays: None)."""
    if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
        return None
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def _is_zip(path: Path) -> bool:
    return path.suffix == ".zip"


class ReplayBuffer:
    """An episode-indexed zarr store (see the module docstring for the layout and integrity checks).

    Open with `ReplayBuffer.open(path)` (read-only, format 2 or 3, directory or .zip),
    `ReplayBuffer.open(path, mode="a")` (append; format 3 directories; takes the writer lock), or
    `ReplayBuffer.create(path)` (takes the writer lock). `close()` releases the lock.

    Attributes:
        uncommitted_tail: True if the store ends in an episode whose append was interrupted
            before its commit (it is ignored and reported with a `DatasetWarning`).

    Raises:
        FileNotFoundError: the path does not exist.
        DatasetError: the store is not a replay buffer (no `data/` group or no
            `meta/episode_ends`), `episode_ends` is not a 1-D integer array, not strictly
            increasing, or ends past the data; the message names the key and episode.
        LockError: (writable) another process is writing the buffer.
    """

    def __init__(self, root: zarr.Group, path: Path, writable: bool, store=None, lock: WriterLock | None = None):
        self.root = root
        self.path = path
        self.writable = writable
        self._store = store
        self._lock = lock
        self.uncommitted_tail = False
        try:
            self._validate_layout()
        except BaseException:
            self.close()
            raise

    # -- opening and creating --------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> ReplayBuffer:
        """Open an existing replay buffer; `mode` is "r" (read-only) or "a" (append, locked)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"replay buffer not found: {path}")
        store = lock = None
        try:
            if _is_zip(path):
                if mode != "r":
                    raise DatasetError(f"{path}: .zarr.zip stores open read-only")
                store = zarr.storage.ZipStore(path, mode="r")
                root = zarr.open_group(store, mode="r")
            else:
                if mode == "a":
                    lock = WriterLock(path).acquire()
                root = zarr.open_group(path, mode="r" if mode == "r" else "r+")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError,
                ValueError, KeyError) as exc:
            if lock is not None:
                lock.release()
            if isinstance(exc, DatasetError):
                raise
            raise NotAReplayBufferError(f"{path} is not a replay buffer: no zarr group at its root ({exc})") from exc
        if mode == "a" and root.metadata.zarr_format != 3:
            lock.release()
            raise DatasetError(f"{path} is a zarr format {root.metadata.zarr_format} store: "
                               "it opens read-only; copy it to a new buffer to append")
        return cls(root, path, writable=(mode == "a"), store=store, lock=lock)

    @classmethod
    def create(cls, path: str | os.PathLike, overwrite: bool = False,
               attrs: Mapping | None = None, lock: bool = True) -> ReplayBuffer:
        """Create an empty replay buffer (zarr format 3 directory store) at `path`, locked for writing.

        With `overwrite`, an existing replay buffer at `path` is replaced: the new store is built
        beside it, the old one is renamed aside, the new one renamed into place, then the old one
        deleted. Nothing else is ever deleted (see `check_replaceable`).

        `lock=False` is for a caller that already holds a lock covering `path` (an import's staging folder).

        Raises:
            FileExistsError: `path` exists and `overwrite` is False.
            DatasetError: `overwrite` is True and `path` is not a replaceable replay buffer.
            LockError: another process is writing `path`.
        """
        path = Path(path)
        lock = WriterLock(path).acquire() if lock else None
        try:
            exists = path.exists() or path.is_symlink()
            if exists and not overwrite:
                raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
            if exists:
                check_replaceable(path)
            # Build the empty store beside its destination, then rename it into place: a reader or a
            # crash never sees a half-created store.
            tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
            root = zarr.open_group(tmp, mode="w", zarr_format=3)
            root.create_group("data")
            meta = root.create_group("meta")
            meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=0,
                              compressors=None)
            meta.create_group("checksums")
            root.attrs.update({**dict(attrs or {}), WRITER_KEY: writer_marker()})
            if exists:
                aside = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(path, aside)
                os.rename(tmp, path)
                shutil.rmtree(aside)
            else:
                os.rename(tmp, path)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(zarr.open_group(path, mode="r+"), path, writable=True, lock=lock)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, attrs: Mapping | None = None) -> ReplayBuffer:
        """Open `path` for appending if it exists, else create it."""
        return cls.open(path, mode="a") if Path(path).exists() else cls.create(path, attrs=attrs)

    def close(self) -> None:
        """Release the store (needed for .zip stores) and the writer lock."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- layout ------------------------------------------------------------------------
    def _validate_layout(self) -> None:
        self._data, ends_array = buffer_layout(self.root, self.path)
        if ends_array.ndim != 1 or not np.issubdtype(ends_array.dtype, np.integer):
            raise DatasetError(f"{self.path}: `{EPISODE_ENDS}` must be a 1-D integer array, got "
                               f"{ends_array.dtype} with shape {ends_array.shape}")
        ends = np.asarray(self._read_array(ends_array, EPISODE_ENDS, slice(None)), dtype=np.int64)
        # A SIGKILL between resizing episode_ends and writing its new value leaves a trailing fill
        # value (0): that episode was never committed. Only exactly that state is forgiven.
        if len(ends) and ends[-1] == 0 and (len(ends) == 1 or ends[-2] > 0):
            ends = ends[:-1]
            self.uncommitted_tail = True
            warnings.warn(f"{self.path}: the last episode's append was interrupted before its commit; "
                          f"it is ignored ({len(ends)} committed episodes)", DatasetWarning, stacklevel=3)
        steps = np.diff(ends, prepend=0)
        bad = np.flatnonzero(steps <= 0)
        if len(bad):
            raise DatasetError(f"{self.path}: `{EPISODE_ENDS}` must be strictly increasing, but "
                               f"episode {bad[0]} ends at {ends[bad[0]]} (has {steps[bad[0]]} steps)")
        self._episode_ends = ends
        n_steps = int(ends[-1]) if len(ends) else 0
        for key in self.keys:
            length = self._data[key].shape[0]
            if length < n_steps:
                episode = int(np.searchsorted(ends, length, side="right"))
                raise DatasetError(f"{self.path}: `data/{key}` has {length} steps but `{EPISODE_ENDS}` "
                                   f"says {n_steps}; episode {episode} (ends at {ends[episode]}) is cut short")
        self._checksums = {}
        group = self.root.get(CHECKSUMS)
        for key in self.keys:
            sums = group.get(key) if isinstance(group, zarr.Group) else None
            values = np.full(self.n_episodes, -1, dtype=np.int64)
            if isinstance(sums, zarr.Array):
                stored = np.asarray(self._read_array(sums, f"{CHECKSUMS}/{key}", slice(None)), dtype=np.int64)
                n = min(len(stored), self.n_episodes)
                values[:n] = stored[:n]
            self._checksums[key] = values

    @property
    def keys(self) -> list[str]:
        """Names of the per-step arrays under `data/`."""
        return sorted(self._data.array_keys())

    @property
    def episode_ends(self) -> np.ndarray:
        """(n_episodes,) int64, cumulative end index of each committed episode."""
        return self._episode_ends.copy()

    @property
    def n_episodes(self) -> int:
        return len(self._episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self._episode_ends[-1]) if len(self._episode_ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        """(n_episodes,) int64 steps per episode."""
        return np.diff(self._episode_ends, prepend=0)

    @property
    def attrs(self) -> dict:
        """User attributes stored on the root group (e.g. the collection config)."""
        return dict(self.root.attrs)

    def update_attrs(self, attrs: Mapping) -> None:
        """Merge `attrs` into the buffer's attributes (e.g. collection progress).

        Raises:
            DatasetError: the buffer is open read-only.
        """
        if not self.writable:
            raise DatasetError(f"{self.path} is open read-only")
        self.root.attrs.update(dict(attrs))

    def array(self, key: str) -> zarr.Array:
        """The zarr array `data/<key>` (may hold uncommitted steps past `n_steps`)."""
        self._require_keys([key])
        return self._data[key]

    def _require_keys(self, keys: Iterable[str]) -> None:
        missing = [k for k in keys if k not in self._data]
        if missing:
            raise DatasetError(f"{self.path}: missing key(s) {missing} under `data/`; "
                               f"available: {self.keys}")

    # -- integrity -----------------------------------------------------------------------
    def _episode_at(self, step: int) -> int:
        return int(np.searchsorted(self._episode_ends, step, side="right"))

    def _read_array(self, arr: zarr.Array, name: str, sl: slice) -> np.ndarray:
        """arr[sl], with a chunk that cannot be read or decoded reported as a DatasetError."""
        try:
            return arr[sl]
        except Exception as exc:  # noqa: BLE001 - codecs raise many types on corrupt bytes
            raise DatasetError(f"{self.path}: `{name}` cannot be read at {sl.start or 0}:{sl.stop} (a corrupt "
                               f"chunk? {type(exc).__name__}: {exc})") from exc

    def _read(self, key: str, sl: slice) -> np.ndarray:
        self._check_chunks_present(key, sl.start, sl.stop)
        return self._read_array(self._data[key], f"data/{key}", sl)

    def _check_chunks_present(self, key: str, start: int, stop: int) -> None:
        """Every chunk file under steps [start, stop) of checksummed episodes must exist (local stores).

        Chunks are written even when they hold only fill values, so a missing one was lost or deleted;
        zarr would silently read it as fill values. Episodes without checksums (written before this
        rule) are not checked.
        """
        if self._store is not None or stop <= start or not os.path.isdir(self.path):
            return
        sums = self._checksums.get(key)
        if sums is None or not (sums >= 0).any():
            return
        arr = self._data[key]
        ends = self._episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        checked = sums >= 0
        c0 = arr.chunks[0]
        grid_rest = [math.ceil(n / c) for n, c in zip(arr.shape[1:], arr.chunks[1:])]
        for t in range(start // c0, (stop - 1) // c0 + 1):
            lo, hi = t * c0, min((t + 1) * c0, stop)
            first, last = self._episode_at(lo), self._episode_at(hi - 1)
            if not checked[first:last + 1].any():
                continue
            for rest in np.ndindex(*grid_rest):  # () once for 1-D arrays
                chunk_key = arr.metadata.encode_chunk_key((t, *rest))
                if not os.path.exists(os.path.join(self.path, "data", key, chunk_key)):
                    episode = first + int(np.argmax(checked[first:last + 1]))
                    raise DatasetError(f"{self.path}: `data/{key}` chunk {chunk_key} (steps {lo}-{hi - 1}, "
                                       f"episode {episode} starts at {starts[episode]}) is missing from the "
                                       "store: the dataset is damaged")

    def _check_checksums(self, key: str, values: np.ndarray, first_episode: int, last_episode: int,
                         offset: int) -> None:
        """Compare the CRC-32 of each episode in `values` (steps from `offset`) with the recorded one."""
        sums = self._checksums[key]
        ends = self._episode_ends
        for i in range(first_episode, last_episode + 1):
            if sums[i] < 0:
                continue
            start = int(ends[i - 1]) if i > 0 else 0
            if episode_checksum(values[start - offset:int(ends[i]) - offset]) != sums[i]:
                raise DatasetError(f"{self.path}: `data/{key}` of episode {i} does not match the checksum "
                                   "recorded when it was written: the dataset is corrupted")

    def checksums(self, key: str) -> np.ndarray:
        """(n_episodes,) int64 recorded CRC-32 of `data/<key>` per episode; -1 where none was recorded."""
        self._require_keys([key])
        return self._checksums[key].copy()

    def verify(self) -> VerifyReport:
        """Check the whole store: every chunk of every key is present and decodes, every recorded
        checksum matches, float values are finite. Reads whole episodes about one chunk at a time
        (images, chunked per step, one episode at a time), so memory stays small and each chunk decodes once.

        Returns a `VerifyReport`; problems are collected (at most one per key), not raised.
        """
        report = VerifyReport(self.n_episodes,
                              int(np.all([self._checksums[k] >= 0 for k in self.keys], axis=0).sum())
                              if self.keys and self.n_episodes else 0)
        if self.uncommitted_tail:
            report.notes.append("the last episode's append was interrupted before its commit: ignored")
        unchecked = self.n_episodes - report.n_checksummed
        if unchecked:
            report.notes.append(f"{unchecked} episode(s) have no recorded checksums (written before robolearn "
                                "recorded them): only structure, decoding and finiteness are checked there")
        ends = self._episode_ends
        for key in self.keys:
            block = self._data[key].chunks[0]  # read whole episodes about one chunk at a time: each chunk decodes once
            try:
                first = 0
                while first < self.n_episodes:
                    start = int(ends[first - 1]) if first else 0
                    last = max(first, int(np.searchsorted(ends, start + block, side="left")) - 1)
                    values = self._read(key, slice(start, int(ends[last])))
                    self._check_finite(key, values, offset=start)
                    self._check_checksums(key, values, first, last, start)
                    first = last + 1
            except DatasetError as exc:
                report.problems.append(str(exc))
        return report

    # -- reading -----------------------------------------------------------------------
    def episode_slice(self, index: int) -> slice:
        """Time slice of episode `index` (negative indices count from the end)."""
        n = self.n_episodes
        if not -n <= index < n:
            raise IndexError(f"episode {index} out of range: the buffer has {n} episodes")
        index %= n
        start = int(self._episode_ends[index - 1]) if index > 0 else 0
        return slice(start, int(self._episode_ends[index]))

    def get_episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of one episode, each (T_episode, ...), verified (chunks, checksums, finite floats).

        Raises:
            DatasetError: a missing or undecodable chunk, a checksum mismatch, or NaN/inf.
        """
        self.episode_slice(index)  # IndexError when out of range
        index %= self.n_episodes
        return self.get_episodes(index, index + 1, keys)[0]

    def get_episodes(self, start: int, stop: int, keys: Iterable[str] | None = None) -> list[dict[str, np.ndarray]]:
        """Episodes start..stop-1, read with one read per key (much faster than one `get_episode` each when
        episodes share chunks) and verified like `get_episode`.

        Raises:
            IndexError: not 0 <= start < stop <= n_episodes.
            DatasetError: as `get_episode`.
        """
        if not 0 <= start < stop <= self.n_episodes:
            raise IndexError(f"episodes {start}..{stop - 1} out of range: the buffer has {self.n_episodes} episodes")
        keys = self.keys if keys is None else list(keys)
        self._require_keys(keys)
        lo = int(self._episode_ends[start - 1]) if start > 0 else 0
        hi = int(self._episode_ends[stop - 1])
        data = {k: self._read(k, slice(lo, hi)) for k in keys}
        for k, v in data.items():
            self._check_finite(k, v, offset=lo)
            self._check_checksums(k, v, start, stop - 1, lo)
        cuts = self._episode_ends[start:stop - 1] - lo
        return [dict(zip(data, parts)) for parts in zip(*(np.split(v, cuts) for v in data.values()))] \
            if data else [{} for _ in range(stop - start)]

    def iter_episodes(self, keys: Iterable[str] | None = None, batch_bytes: int = 64 * 2**20):
        """Yields every episode in order ({key: (T, ...)}, verified), reading about `batch_bytes` of
        consecutive episodes at a time (`get_episodes`)."""
        keys = self.keys if keys is None else list(keys)
        step_bytes = sum(self._data[k].dtype.itemsize * int(np.prod(self._data[k].shape[1:], dtype=int)) for k in keys)
        lengths = self.episode_lengths
        start = 0
        while start < self.n_episodes:
            stop, size = start, 0
            while stop < self.n_episodes and (stop == start or size + lengths[stop] * step_bytes <= batch_bytes):
                size += lengths[stop] * step_bytes
                stop += 1
            yield from self.get_episodes(start, stop, keys)
            start = stop

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Read the committed steps of `keys` into memory, verified: {key: (n_steps, ...)}.

        Raises:
            DatasetError: a key is missing, a chunk is missing or cannot be decoded, an episode does
                not match its recorded checksum, or a float array holds NaN/inf (naming the key,
                episode and step).
        """
        keys = self.keys if keys is None else list(keys)
        self._require_keys(keys)
        out = {k: self._read(k, slice(0, self.n_steps)) for k in keys}
        for k, v in out.items():
            self._check_finite(k, v)
            if self.n_episodes:
                self._check_checksums(k, v, 0, self.n_episodes - 1, 0)
        return out

    def _check_finite(self, key: str, values: np.ndarray, offset: int = 0) -> None:
        bad = first_nonfinite_step(values)
        if bad is not None:
            step = offset + bad
            episode = self._episode_at(step)
            start = int(self._episode_ends[episode - 1]) if episode > 0 else 0
            raise DatasetError(f"{self.path}: `data/{key}` holds NaN or inf in episode {episode} "
                               f"at step {step - start}")

    # -- writing -----------------------------------------------------------------------
    def add_episode(self, episode: Mapping[str, np.ndarray],
                    chunks: Mapping[str, tuple] | None = None,
                    compressors: Mapping[str, object] | None = None) -> int:
        """Append one episode atomically; returns its index.

        Args:
            episode: {key: array (T, ...)}, the same T for every key. The first episode
                fixes the keys, per-step shapes and dtypes; later ones must match.
                Images are uint8 (T, H, W, C) with C in {1, 3, 4}.
            chunks: per-key chunk shape override for new keys, e.g. {"image": (1, 96, 96, 3)};
                default: time-only chunks of about 256 KiB (images: about 512 KiB).
            compressors: per-key compressor override for new keys (a zarr codec, or None
                for no compression); default Blosc-zstd (`default_compressor`, images `image_compressor`).

        Raises:
            DatasetError: keys differ from the buffer's, a key is not a valid name (`key_name_problem`),
                lengths disagree, T is 0, a key holds no values per step (a zero-width shape such as
                (T, 0)), a per-step shape or dtype differs, an image is not uint8, values are NaN/inf,
                or values do not fit the stored dtype (1e300 into float32). Nothing is written then.
            PermissionError: the buffer was opened read-only.
        """
        return self.add_episodes([episode], chunks, compressors)[0]

    def add_episodes(self, episodes: Sequence[Mapping[str, np.ndarray]],
                     chunks: Mapping[str, tuple] | None = None,
                     compressors: Mapping[str, object] | None = None) -> list[int]:
        """Append several episodes with one write per key; they commit together (all or none; the first
        episode of an empty buffer commits on its own first, as it creates the arrays). Much faster than
        `add_episode` per episode for short episodes (an importer's batches). Returns their indices.

        Raises:
            as `add_episode`, for any of the episodes (naming its index); nothing of the batch is written then.
        """
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only")
        episodes = [{k: np.asarray(v) for k, v in episode.items()} for episode in episodes]
        if not episodes:
            return []
        if not self.keys and len(episodes) > 1:
            return self.add_episodes(episodes[:1], chunks, compressors) + self.add_episodes(episodes[1:])
        index = self.n_episodes
        batch = [self._validate_episode(arrays, index + i) for i, arrays in enumerate(episodes)]
        lengths = [len(next(iter(arrays.values()))) for arrays in batch]
        n_old = self.n_steps
        n_new = sum(lengths)
        chunks = dict(chunks or {})
        compressors = dict(compressors or {})
        sums_group = self.root.require_group(CHECKSUMS)
        sums_new = {}
        for key in batch[0]:
            values = batch[0][key] if len(batch) == 1 else np.concatenate([arrays[key] for arrays in batch])
            if key in self._data:
                arr = self._data[key]
            else:
                step_shape = values.shape[1:]
                image = is_image(values)
                length = default_chunk_length(step_shape, values.dtype, IMAGE_CHUNK_BYTES if image else DEFAULT_CHUNK_BYTES)
                arr = self._data.create_array(
                    key, shape=(0, *step_shape), dtype=values.dtype, chunks=chunks.get(key, (length, *step_shape)),
                    compressors=compressors.get(key, image_compressor() if image else default_compressor()),
                    fill_value=0)
            arr.resize((n_old + n_new, *arr.shape[1:]))  # also drops steps of an uncommitted append
            arr.with_config(WRITE_CONFIG)[n_old:] = values
            if key in sums_group:
                sums = sums_group[key]
            else:
                sums = sums_group.create_array(key, shape=(0,), chunks=(4096,), dtype="int64", fill_value=-1,
                                               compressors=None)
            sums_new[key] = np.array([episode_checksum(arrays[key]) for arrays in batch], dtype=np.int64)
            sums.resize((index + len(batch),))
            sums[index:] = sums_new[key]
        # Commit: only now do the episodes exist for readers.
        new_ends = n_old + np.cumsum(lengths)
        ends = self.root[EPISODE_ENDS]
        ends.resize((index + len(batch),))
        ends[index:] = new_ends
        self._episode_ends = np.append(self._episode_ends, new_ends)
        for key in batch[0]:
            self._checksums[key] = np.append(self._checksums.get(key, np.full(index, -1, np.int64)), sums_new[key])
        return list(range(index, index + len(batch)))

    def _validate_episode(self, arrays: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        """Check an episode against the buffer; returns the arrays cast to the stored dtypes."""
        if not arrays:
            raise DatasetError(f"episode {index}: no arrays given")
        existing = set(self.keys)
        if existing and set(arrays) != existing:
            raise DatasetError(f"episode {index}: keys {sorted(arrays)} differ from the buffer's "
                               f"{sorted(existing)} (missing {sorted(existing - set(arrays))}, "
                               f"extra {sorted(set(arrays) - existing)})")
        lengths = {k: (v.shape[0] if v.ndim else 0) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DatasetError(f"episode {index}: arrays have different lengths {lengths}")
        if next(iter(lengths.values())) == 0:
            raise DatasetError(f"episode {index}: has no steps")
        out = {}
        for key, values in arrays.items():
            problem = key_name_problem(key)
            if problem:
                raise DatasetError(f"episode {index}: key {key!r}: {problem}")
            if values.dtype == object or values.dtype.kind in "USV":
                raise DatasetError(f"episode {index}: `{key}` has dtype {values.dtype}; use a numeric dtype")
            if 0 in values.shape[1:]:
                raise DatasetError(f"episode {index}: `{key}` has per-step shape {values.shape[1:]}, so it holds no "
                                   "values; leave the key out (a key needs at least one value per step)")
            if values.ndim == 4 and (values.dtype != np.uint8 or values.shape[-1] not in (1, 3, 4)):
                raise DatasetError(f"episode {index}: image `{key}` must be uint8 (T, H, W, C) with C in "
                                   f"1/3/4, got {values.dtype} {values.shape}")
            bad = first_nonfinite_step(values)
            if bad is not None:
                raise DatasetError(f"episode {index}: `{key}` holds NaN or inf at step {bad}")
            if key in existing:
                arr = self._data[key]
                if values.shape[1:] != arr.shape[1:]:
                    raise DatasetError(f"episode {index}: `{key}` has per-step shape {values.shape[1:]}, "
                                       f"the buffer stores {arr.shape[1:]}")
                if not np.can_cast(values.dtype, arr.dtype, casting="same_kind"):
                    raise DatasetError(f"episode {index}: `{key}` has dtype {values.dtype}, "
                                       f"the buffer stores {arr.dtype}")
                values = fit_dtype(key, values, arr.dtype, f"episode {index}")
            out[key] = np.ascontiguousarray(values)
        return out

    def __repr__(self) -> str:
        return f"ReplayBuffer({str(self.path)!r}, episodes={self.n_episodes}, steps={self.n_steps}, keys={self.keys})"
