"""Episode-indexed zarr replay buffer in the reference Diffusion Policy layout.

Layout (Chi et al. 2023, real-stanford/diffusion_policy `ReplayBuffer`)::

    <root>/
      data/<key>          (T_total, ...)  every episode concatenated along time (axis 0)
      meta/episode_ends   (n_episodes,) int64, cumulative: episode i is data[ends[i-1]:ends[i]]

Stores are written in zarr format 3, chunked along time only and compressed with
Blosc-zstd (bit-shuffle) unless a key overrides chunks or compressor. Stores in zarr
format 2 as the reference implementation writes them (directory stores and `.zarr.zip`
files) open read-only.

Crash safety: appending an episode writes the data arrays first and `meta/episode_ends`
last, and zarr's local store replaces every file atomically (temporary file, then
rename). An episode therefore exists only once its end is in `episode_ends`: after a
SIGKILL during the append of episode k, readers see episodes 0..k-1, and data beyond the
last committed end is ignored (and overwritten by the next append). No repair step.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

EPISODE_ENDS = "meta/episode_ends"
DEFAULT_CHUNK_BYTES = 1 << 18  # about 256 KiB of uncompressed data per chunk


class DatasetError(ValueError):
    """A dataset is missing, malformed or holds invalid values; the message names the key/episode."""


def default_compressor() -> BloscCodec:
    """Blosc with zstd, level 5, bit-shuffle: the default for every data key."""
    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


def default_chunk_length(step_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Steps per chunk so that one chunk holds about `DEFAULT_CHUNK_BYTES` (256 KiB) (at least 1 step)."""
    step_bytes = max(1, math.prod(step_shape) * np.dtype(dtype).itemsize)
    return max(1, DEFAULT_CHUNK_BYTES // step_bytes)


def first_nonfinite_step(values: np.ndarray) -> int | None:
    """Index along axis 0 of the first step holding NaN or inf, or None (non-float arrays: None)."""
    if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
        return None
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def _is_zip(path: Path) -> bool:
    return path.suffix == ".zip"


class ReplayBuffer:
    """An episode-indexed zarr store (see the module docstring for the layout).

    Open with `ReplayBuffer.open(path)` (read-only, format 2 or 3, directory or .zip),
    `ReplayBuffer.open(path, mode="a")` (append; format 3 directories), or
    `ReplayBuffer.create(path)`.

    Raises:
        FileNotFoundError: the path does not exist.
        DatasetError: the store is not a replay buffer (no `data/` group or no
            `meta/episode_ends`), `episode_ends` is not increasing, or a `data/` array is
            shorter than `episode_ends[-1]`; the message names the key and episode.
    """

    def __init__(self, root: zarr.Group, path: Path, writable: bool, store=None):
        self.root = root
        self.path = path
        self.writable = writable
        self._store = store
        self._validate_layout()

    # -- opening and creating --------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> ReplayBuffer:
        """Open an existing replay buffer; `mode` is "r" (read-only) or "a" (append)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"replay buffer not found: {path}")
        store = None
        try:
            if _is_zip(path):
                if mode != "r":
                    raise DatasetError(f"{path}: .zarr.zip stores open read-only")
                store = zarr.storage.ZipStore(path, mode="r")
                root = zarr.open_group(store, mode="r")
            else:
                root = zarr.open_group(path, mode="r" if mode == "r" else "r+")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError,
                ValueError, KeyError) as exc:
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(f"{path} is not a replay buffer: no zarr group at its root ({exc})") from exc
        if mode == "a" and root.metadata.zarr_format != 3:
            raise DatasetError(f"{path} is a zarr format {root.metadata.zarr_format} store: "
                               "it opens read-only; copy it to a new buffer to append")
        return cls(root, path, writable=(mode == "a"), store=store)

    @classmethod
    def create(cls, path: str | os.PathLike, overwrite: bool = False,
               attrs: Mapping | None = None) -> ReplayBuffer:
        """Create an empty replay buffer (zarr format 3 directory store) at `path`.

        Raises:
            FileExistsError: `path` exists and `overwrite` is False.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
        # Build the empty store beside its destination, then rename it into place: a reader or a
        # crash never sees a half-created store.
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        root = zarr.open_group(tmp, mode="w", zarr_format=3)
        root.create_group("data")
        meta = root.create_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=0,
                          compressors=None)
        if attrs:
            root.attrs.update(dict(attrs))
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
        return cls(zarr.open_group(path, mode="r+"), path, writable=True)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, attrs: Mapping | None = None) -> ReplayBuffer:
        """Open `path` for appending if it exists, else create it."""
        return cls.open(path, mode="a") if Path(path).exists() else cls.create(path, attrs=attrs)

    def close(self) -> None:
        """Release the store (needed for .zip stores)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- layout ------------------------------------------------------------------------
    def _validate_layout(self) -> None:
        try:
            self._data = self.root["data"]
            ends_array = self.root[EPISODE_ENDS]
        except KeyError as exc:
            raise DatasetError(f"{self.path} is not a replay buffer: it has no `data/` group and "
                               f"`{EPISODE_ENDS}` array") from exc
        if not isinstance(self._data, zarr.Group) or not isinstance(ends_array, zarr.Array):
            raise DatasetError(f"{self.path} is not a replay buffer: `data` must be a group and "
                               f"`{EPISODE_ENDS}` an array")
        ends = np.asarray(ends_array[:], dtype=np.int64)
        # A SIGKILL between resizing episode_ends and writing its new value leaves a trailing
        # fill value (0), never larger than the previous end: that episode is not committed.
        if len(ends) and ends[-1] <= (ends[-2] if len(ends) > 1 else 0):
            ends = ends[:-1]
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

    def array(self, key: str) -> zarr.Array:
        """The zarr array `data/<key>` (may hold uncommitted steps past `n_steps`)."""
        self._require_keys([key])
        return self._data[key]

    def _require_keys(self, keys: Iterable[str]) -> None:
        missing = [k for k in keys if k not in self._data]
        if missing:
            raise DatasetError(f"{self.path}: missing key(s) {missing} under `data/`; "
                               f"available: {self.keys}")

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
        """Arrays of one episode, each (T_episode, ...); float arrays are checked for NaN/inf."""
        keys = self.keys if keys is None else list(keys)
        self._require_keys(keys)
        sl = self.episode_slice(index)
        out = {k: self._data[k][sl] for k in keys}
        for k, v in out.items():
            self._check_finite(k, v, offset=sl.start)
        return out

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Read the committed steps of `keys` into memory: {key: (n_steps, ...)}.

        Raises:
            DatasetError: a key is missing, or a float array holds NaN/inf (naming the
                key, episode and step).
        """
        keys = self.keys if keys is None else list(keys)
        self._require_keys(keys)
        out = {k: self._data[k][: self.n_steps] for k in keys}
        for k, v in out.items():
            self._check_finite(k, v)
        return out

    def _check_finite(self, key: str, values: np.ndarray, offset: int = 0) -> None:
        bad = first_nonfinite_step(values)
        if bad is not None:
            step = offset + bad
            episode = int(np.searchsorted(self._episode_ends, step, side="right"))
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
                default: time-only chunks of about 256 KiB.
            compressors: per-key compressor override for new keys (a zarr codec, or None
                for no compression); default Blosc-zstd.

        Raises:
            DatasetError: keys differ from the buffer's, lengths disagree, T is 0, a
                per-step shape or dtype differs, an image is not uint8, or values are
                NaN/inf. Nothing is written then.
            PermissionError: the buffer was opened read-only.
        """
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only")
        index = self.n_episodes
        arrays = {k: np.asarray(v) for k, v in episode.items()}
        self._validate_episode(arrays, index)
        n_old = self.n_steps
        n_new = len(next(iter(arrays.values())))
        chunks = dict(chunks or {})
        compressors = dict(compressors or {})
        for key, values in arrays.items():
            if key in self._data:
                arr = self._data[key]
            else:
                step_shape = values.shape[1:]
                arr = self._data.create_array(
                    key, shape=(0, *step_shape), dtype=values.dtype,
                    chunks=chunks.get(key, (default_chunk_length(step_shape, values.dtype), *step_shape)),
                    compressors=compressors.get(key, default_compressor()), fill_value=0)
            arr.resize((n_old + n_new, *arr.shape[1:]))  # also drops steps of an uncommitted append
            arr[n_old:] = values
        # Commit: only now does the episode exist for readers.
        ends = self.root[EPISODE_ENDS]
        ends.resize((index + 1,))
        ends[index] = n_old + n_new
        self._episode_ends = np.append(self._episode_ends, n_old + n_new)
        return index

    def _validate_episode(self, arrays: dict[str, np.ndarray], index: int) -> None:
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
        for key, values in arrays.items():
            if values.dtype == object:
                raise DatasetError(f"episode {index}: `{key}` has dtype object; use a numeric dtype")
            if values.ndim == 4 and (values.dtype != np.uint8 or values.shape[-1] not in (1, 3, 4)):
                raise DatasetError(f"episode {index}: image `{key}` must be uint8 (T, H, W, C) with C in "
                                   f"1/3/4, got {values.dtype} {values.shape}")
            if key in existing:
                arr = self._data[key]
                if values.shape[1:] != arr.shape[1:]:
                    raise DatasetError(f"episode {index}: `{key}` has per-step shape {values.shape[1:]}, "
                                       f"the buffer stores {arr.shape[1:]}")
                if not np.can_cast(values.dtype, arr.dtype, casting="same_kind"):
                    raise DatasetError(f"episode {index}: `{key}` has dtype {values.dtype}, "
                                       f"the buffer stores {arr.dtype}")
            bad = first_nonfinite_step(values)
            if bad is not None:
                raise DatasetError(f"episode {index}: `{key}` holds NaN or inf at step {bad}")

    def __repr__(self) -> str:
        return f"ReplayBuffer({str(self.path)!r}, episodes={self.n_episodes}, steps={self.n_steps}, keys={self.keys})"
