"""LeRobot datasets (v3.0, and v2.x read-only) to and from robolearn replay buffers, without importing lerobot.

LeRobot v3.0 layout (LeRobot >= 0.4; `huggingface/lerobot`, docs `lerobot-dataset-v3`)::

    meta/info.json                     codebase_version "v3.0", fps, features {name: {dtype, shape, names, info}},
                                       totals, path templates, file size caps
    meta/stats.json                    {feature: {min, max, mean, std, count}} (images: per channel, (3, 1, 1), in [0, 1])
    meta/tasks.parquet                 task strings (the pandas index "task") and their `task_index`
    meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length,
                                       data/{chunk,file}_index, dataset_{from,to}_index,
                                       videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}, stats/...
    data/chunk-000/file-000.parquet    one row per frame, many episodes per file: the features plus
                                       timestamp, frame_index, episode_index, index, task_index
    videos/<key>/chunk-000/file-000.mp4  one camera, many episodes per file; episode e's frames are those at
                                       from_timestamp + timestamp

A vector feature of shape (n,) is a fixed-size list column, shape (1,) a scalar column. v2.0/v2.1 kept one
parquet and one mp4 per episode (`data/chunk-000/episode_000000.parquet`) and JSON-lines metadata
(`meta/episodes.jsonl`, `meta/tasks.jsonl`); they are read the same way. v1.x is refused.

Exports also write `meta/robolearn.json` (ignored by LeRobot): the robolearn key and per-step shape of each
feature, so that robolearn -> LeRobot -> robolearn gives back the same keys, shapes and (low-dim) bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.datasets.formats.common import (
    FormatError,
    check_own_export,
    resize_frames,
    resolve_key_map,
)
from robolearn.datasets.formats.schema import (
    LeRobotEpisodeV2,
    LeRobotEpisodeV3,
    LeRobotInfo,
    LeRobotTask,
    validated,
    validated_rows,
)
from robolearn.datasets.formats.video import (
    VideoReader,
    VideoSettings,
    VideoWriter,
    probe,
)
from robolearn.datasets.replay_buffer import ReplayBuffer, is_image
from robolearn.outputs import (
    WRITER_KEY,
    unexpected_entries,
    writer_marker,
)

CODEBASE_VERSION = "v3.0"
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
INFO_PATH = "meta/info.json"
ROBOLEARN_META = "meta/robolearn.json"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100  # LeRobot's caps per data and video file
VIDEO_FILE_MB = 200
DEFAULT_TOLERANCE_S = 1e-4  # LeRobot's own tolerance between a row's timestamp and its video frame


def default_import_key(name: str) -> str | None:
    """robolearn's name for a LeRobot feature: observation.state -> joint_pos (SO-100/SO-101/Koch store joint
    positions there), observation.images.<cam> -> <cam>_image, observation.<x> -> x, next.<x> -> x, action ->
    action; LeRobot's index columns are not imported (timestamp is kept as `timestamp`, s)."""
    if name == "observation.state":
        return "joint_pos"
    if name.startswith("observation.images."):
        return name.removeprefix("observation.images.").replace(".", "_") + "_image"
    if name in INDEX_COLUMNS:
        return "timestamp" if name == "timestamp" else None
    for prefix in ("observation.", "next."):
        if name.startswith(prefix):
            return name.removeprefix(prefix).replace(".", "_")
    return name.replace(".", "_")


def default_export_key(key: str, image: bool) -> str:
    """LeRobot's name for a robolearn key (the inverse of `default_import_key`)."""
    if key == "joint_pos":
        return "observation.state"
    if image:
        return "observation.images." + key.removesuffix("_image")
    if key == "action":
        return "action"
    if key in ("reward", "done", "success"):
        return "next." + key
    return "observation." + key


def read_json(path: Path) -> dict:
    """A JSON file's object. Raises FormatError naming the file when it is missing or not JSON."""
    if not path.is_file():
        raise FormatError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise FormatError(f"{path} is not valid JSON ({exc}); the file may be truncated") from None


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A parquet file as a table. Raises FormatError naming the file when it is missing, damaged or truncated."""
    if not path.is_file():
        raise FormatError(f"parquet file {path} is missing")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise FormatError(f"{path} is damaged or truncated, not a readable parquet file ({exc})") from None


def column_values(table: pa.Table, name: str, shape: tuple[int, ...], dtype: str, where: Path) -> np.ndarray:
    """A feature column as a numpy array (n_rows, *shape), list columns flattened.

    Raises:
        FormatError: the column is missing or holds another number of values than the shape says.
    """
    if name not in table.column_names:
        raise FormatError(f"{where}: column {name!r} (a feature in meta/info.json) is missing")
    column = table.column(name).combine_chunks()
    while pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or \
            pa.types.is_large_list(column.type):
        column = column.flatten()
    values = column.to_numpy(zero_copy_only=False)
    n = table.num_rows
    if values.size != n * int(np.prod(shape, dtype=int)):
        raise FormatError(f"{where}: column {name!r} holds {values.size} values for {n} rows, expected shape "
                          f"{list(shape)} per row")
    return values.reshape(n, *shape).astype(dtype, copy=False)


def decode_images(table: pa.Table, name: str, where: Path) -> np.ndarray:
    """An `image` feature (a struct column of PNG/JPEG bytes, LeRobot's `image` dtype) as uint8 (n, H, W, 3)."""
    import cv2

    frames = []
    for item in table.column(name).to_pylist():
        data = item.get("bytes") if isinstance(item, dict) else None
        image = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise FormatError(f"{where}: column {name!r} holds an image that does not decode (no embedded bytes)")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def _check_unique_episodes(indices: list[tuple[int, str]]) -> None:
    """Each episode_index once across every episode table file.

    Raises:
        FormatError: naming both rows that list the same episode.
    """
    seen: dict[int, str] = {}
    for index, where in indices:
        if index in seen:
            raise FormatError(f"{where}: `episode_index` {index} is also listed at {seen[index]}; each episode must "
                              "be listed once (the episode table is damaged)")
        seen[index] = where


@dataclass
class _Episode:
    index: int
    length: int
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float, float]]  # camera feature -> (file, from_timestamp, to_timestamp)


class LeRobotSource:
    """A LeRobot dataset folder, read episode by episode.

    Args:
        root: the folder holding meta/info.json.
        keys: {LeRobot feature: robolearn key or None (drop)} overriding the default names.
        image_size: (height, width) to resize camera frames to, or None to keep them.
        tolerance_s: how far (s) a video frame may be from its row's timestamp.

    Attributes:
        version: codebase_version, e.g. "v3.0"; fps: frames per second; key_map: {feature: robolearn key};
        tasks: the task strings; n_episodes, n_frames.

    Raises:
        FormatError: not a LeRobot dataset, an unsupported version (named), a key map naming a missing feature,
            a missing or damaged file, a video whose frames do not match the table (each naming the file).
    """

    def __init__(self, root: str | os.PathLike, keys: Mapping[str, str | None] | None = None,
                 image_size: tuple[int, int] | None = None, tolerance_s: float = DEFAULT_TOLERANCE_S):
        self.root = Path(root)
        if not (self.root / INFO_PATH).is_file():
            raise FormatError(f"{self.root} is not a LeRobot dataset: {self.root / INFO_PATH} is missing")
        raw = read_json(self.root / INFO_PATH)
        version = raw.get("codebase_version", "unknown") if isinstance(raw, dict) else "unknown"
        if not (isinstance(version, str) and (version.startswith("v3.") or version in ("v2.0", "v2.1"))):
            raise FormatError(f"{self.root / INFO_PATH}: LeRobot codebase_version {version!r} is not supported "
                              "(robolearn reads v2.0, v2.1 and v3.x; convert older datasets with LeRobot first)")
        self.info = validated(LeRobotInfo, raw, str(self.root / INFO_PATH))
        self.version = self.info.codebase_version
        self.fps = float(self.info.fps)
        self.features = {name: feature.model_dump() for name, feature in self.info.features.items()}
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.tolerance_s = float(tolerance_s)
        meta_path = self.root / ROBOLEARN_META
        self.robolearn_meta = read_json(meta_path) if meta_path.is_file() else {}
        exported = self.robolearn_meta.get("keys", {})
        default = (lambda k: exported.get(k)) if exported else self._default_key
        self.key_map = resolve_key_map(list(self.features), default, keys, str(self.root))
        self.tasks, self._episodes = self._read_meta()
        self.n_episodes = len(self._episodes)
        self.n_frames = sum(e.length for e in self._episodes)

    def _default_key(self, name: str) -> str | None:
        """`default_import_key`, for features robolearn can store (numbers, booleans, images, videos; not text)."""
        dtype = str(self.features[name].get("dtype"))
        storable = dtype in ("video", "image", "bool") or dtype.startswith(("float", "int", "uint"))
        return default_import_key(name) if storable else None

    # -- metadata --------------------------------------------------------------------------------------------
    def _read_meta(self) -> tuple[list[str], list[_Episode]]:
        if self.version.startswith("v3."):
            return self._read_meta_v3()
        return self._read_meta_v2()

    def _read_meta_v3(self) -> tuple[list[str], list[_Episode]]:
        tasks_path = self.root / "meta/tasks.parquet"
        tasks_table = read_table(tasks_path)
        names = [c for c in tasks_table.column_names if c != "task_index"]
        if "task_index" not in tasks_table.column_names or not names:
            raise FormatError(f"{tasks_path}: expected the task strings and a task_index column")
        task_rows = [{"task_index": index, "task": text} for index, text in
                     zip(tasks_table.column("task_index").to_pylist(), tasks_table.column(names[0]).to_pylist())]
        tasks = [t.task for t in sorted(validated_rows(LeRobotTask, task_rows, str(tasks_path), unique="task_index"),
                                        key=lambda t: t.task_index)]
        files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise FormatError(f"{self.root / 'meta/episodes'} holds no episode table (chunk-*/file-*.parquet)")
        rows = [(f, i, row) for f in files for i, row in enumerate(read_table(f).to_pylist())]
        checked = [(validated(LeRobotEpisodeV3, row, f"{f}: row {i}"), f"{f}: row {i}") for f, i, row in rows]
        _check_unique_episodes([(row.episode_index, where) for row, where in checked])
        data_template = self.info.data_path or DATA_PATH
        video_template = self.info.video_path or VIDEO_PATH
        episodes = []
        for row, where in sorted(checked, key=lambda item: item[0].episode_index):
            data_file = self.root / data_template.format(chunk_index=row.data_chunk_index,
                                                         file_index=row.data_file_index)
            videos = {}
            for name in self._video_features():
                ref = row.video(name, where)
                path = self.root / video_template.format(video_key=name, chunk_index=ref.chunk_index,
                                                         file_index=ref.file_index)
                videos[name] = (path, ref.from_timestamp, ref.to_timestamp)
            episodes.append(_Episode(row.episode_index, row.length, list(row.tasks or []), data_file, videos))
        self._check_total(episodes)
        return tasks, episodes

    def _read_meta_v2(self) -> tuple[list[str], list[_Episode]]:
        task_rows = validated_rows(LeRobotTask, self._jsonl("meta/tasks.jsonl"), str(self.root / "meta/tasks.jsonl"),
                                   unique="task_index")
        tasks = [t.task for t in sorted(task_rows, key=lambda t: t.task_index)]
        chunks_size = self.info.chunks_size or CHUNKS_SIZE
        where = str(self.root / "meta/episodes.jsonl")
        rows = validated_rows(LeRobotEpisodeV2, self._jsonl("meta/episodes.jsonl"), where, unique="episode_index")
        episodes = []
        for row in sorted(rows, key=lambda r: r.episode_index):
            fields = {"episode_chunk": row.episode_index // chunks_size, "episode_index": row.episode_index}
            videos = {name: (self.root / self.info.video_path.format(video_key=name, **fields), 0.0, np.inf)
                      for name in self._video_features()}
            episodes.append(_Episode(row.episode_index, row.length, list(row.tasks or []),
                                     self.root / self.info.data_path.format(**fields), videos))
        self._check_total(episodes)
        return tasks, episodes

    def _jsonl(self, relative: str) -> list[dict]:
        path = self.root / relative
        if not path.is_file():
            raise FormatError(f"{path} is missing (LeRobot {self.version} keeps its metadata there)")
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except ValueError as exc:
            raise FormatError(f"{path} is not JSON lines ({exc}); the file may be truncated") from None

    def _check_total(self, episodes: list[_Episode]) -> None:
        total = self.info.total_episodes
        if total is not None and total != len(episodes):
            raise FormatError(f"{self.root / INFO_PATH} says total_episodes={total}, but the episode metadata lists "
                              f"{len(episodes)}; the dataset is incomplete")

    def close(self) -> None:
        """Nothing stays open between episodes (each `episodes()` pass closes its video files)."""

    def _video_features(self) -> list[str]:
        return [k for k, v in self.features.items() if v.get("dtype") == "video" and k in self.key_map]

    # -- data ------------------------------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        shapes = self.robolearn_meta.get("shapes", {})
        key = self.key_map[name]
        if key in shapes:
            return tuple(shapes[key])
        return tuple(self.features[name]["shape"])

    def episodes(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yields (task index or -1, {robolearn key: (T, ...)}) for each episode in episode_index order.

        Camera frames are uint8 (T, H, W, 3), decoded at the rows' timestamps.
        """
        table, table_path, episode_column = None, None, None
        readers: dict[str, VideoReader] = {}
        try:
            for episode in self._episodes:
                if episode.data_file != table_path:
                    table, table_path = read_table(episode.data_file), episode.data_file
                    episode_column = column_values(table, "episode_index", (), "int64", table_path)
                rows = np.flatnonzero(episode_column == episode.index)
                if len(rows) != episode.length or (len(rows) and rows[-1] - rows[0] + 1 != len(rows)):
                    raise FormatError(f"{table_path}: episode {episode.index} has {len(rows)} rows, the episode "
                                      f"table says {episode.length}; the file may be truncated")
                part = table.slice(int(rows[0]), len(rows)) if len(rows) else table.slice(0, 0)
                timestamps = column_values(part, "timestamp", (), "float64", table_path)
                data = {}
                for name, key in self.key_map.items():
                    feature = self.features[name]
                    if feature.get("dtype") == "video":
                        path, start, stop = episode.videos[name]
                        reader = readers.get(name)
                        if reader is None or reader.path != path:
                            if reader is not None:
                                reader.close()
                            reader = readers[name] = VideoReader(path, self.image_size)
                        data[key] = reader.frames_at(start + timestamps, start, stop, self.tolerance_s)
                    elif feature.get("dtype") == "image":
                        data[key] = resize_frames(decode_images(part, name, table_path), self.image_size)
                    else:
                        data[key] = column_values(part, name, self._shape(name), feature["dtype"], table_path)
                task = episode.tasks[0] if episode.tasks else None
                task_index = self.tasks.index(task) if task in self.tasks else -1
                yield task_index, data
        finally:
            for reader in readers.values():
                reader.close()


# -- export ----------------------------------------------------------------------------------------------------
def _arrow_type(dtype: np.dtype, shape: tuple[int, ...]) -> pa.DataType:
    scalar = pa.from_numpy_dtype(dtype)
    return scalar if shape in ((), (1,)) else pa.list_(scalar, int(shape[0]))


def _stats(values: np.ndarray, image: bool) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics: per dimension, or per channel (3, 1, 1) in [0, 1] for images."""
    if image:  # from per-channel histograms of the uint8 values: exact, and no float copy of the frames
        channels = values.shape[-1]
        levels = np.arange(256) / 255.0
        hist = np.stack([np.bincount(values[..., c].reshape(-1), minlength=256) for c in range(channels)])
        n = hist.sum(1)
        mean = hist @ levels / n
        std = np.sqrt(np.maximum(hist @ levels**2 / n - mean**2, 0.0))
        present = hist > 0
        lo = np.array([levels[p.argmax()] for p in present])
        hi = np.array([levels[255 - p[::-1].argmax()] for p in present])
        shape = (channels, 1, 1)
        lo, hi, mean, std = (x.reshape(shape) for x in (lo, hi, mean, std))
    else:
        flat = values.reshape(len(values), -1).astype(np.float64)
        shape = (flat.shape[1],)
        lo, hi, mean, std = (x.reshape(shape) for x in (flat.min(0), flat.max(0), flat.mean(0), flat.std(0)))
    return {"min": lo, "max": hi, "mean": mean, "std": std, "count": np.array([len(values)])}


def _merge_stats(total: dict | None, part: dict) -> dict:
    """Count-weighted merge of two `_stats` results (means and variances pooled)."""
    if total is None:
        return part
    n1, n2 = total["count"][0], part["count"][0]
    n = n1 + n2
    mean = (total["mean"] * n1 + part["mean"] * n2) / n
    var = ((total["std"] ** 2 + (total["mean"] - mean) ** 2) * n1 + (part["std"] ** 2 + (part["mean"] - mean) ** 2) * n2) / n
    return {"min": np.minimum(total["min"], part["min"]), "max": np.maximum(total["max"], part["max"]),
            "mean": mean, "std": np.sqrt(var), "count": np.array([n])}


def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes a frame indexed by "task" (LeRobot reads it with pandas)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(buffer: ReplayBuffer, output: Path, fps: float, keys: Mapping[str, str | None] | None = None,
                   tasks: list[str] | None = None, episode_tasks: list[int] | None = None,
                   robot_type: str | None = None, video: VideoSettings = VideoSettings(), progress=None) -> dict:
    """Write `buffer` as a LeRobot v3.0 dataset in the folder `output` (which must not exist).

    Args:
        buffer: the robolearn dataset.
        output: the new dataset folder.
        fps: frames per second (Hz), the dataset's control rate.
        keys: {robolearn key: LeRobot feature or None (leave out)} overriding `default_export_key`.
        tasks: task strings; episode_tasks: each episode's index into them (default: task 0 for all).
        robot_type: recorded in info.json (e.g. "so101_follower").
        video: encoder settings for camera keys (uint8 (T, H, W, C) arrays), written as MP4.
        progress: a callable advanced by one per episode (e.g. a tqdm's update), or None.

    Returns:
        {"frames": int, "episodes": int, "bytes": {"data": int, "videos": int}}.

    Raises:
        FormatError: a key map naming a missing key, a non-image key with more than one dimension per step,
            fps that LeRobot cannot store (not a whole number).
    """
    if abs(fps - round(fps)) > 1e-9:
        raise FormatError(f"LeRobot stores a whole number of frames per second; this dataset runs at {fps} Hz")
    fps = int(round(fps))
    first = buffer.get_episode(0)
    images = {k for k, v in first.items() if is_image(v)}
    key_map = resolve_key_map(buffer.keys, lambda k: default_export_key(k, k in images), keys, str(buffer.path))
    for key in key_map:
        if key not in images and first[key].ndim > 2:
            raise FormatError(f"{buffer.path}: key {key!r} has per-step shape {list(first[key].shape[1:])}; LeRobot "
                              "low-dim features are vectors (drop it with keys={" + key + ": null})")
    tasks = list(tasks or ["robolearn"])
    episode_tasks = list(episode_tasks) if episode_tasks is not None else [0] * buffer.n_episodes
    features: dict[str, dict] = {}
    for key, name in key_map.items():
        values = first[key]
        if key in images:
            h, w, c = values.shape[1:]
            features[name] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                              "info": {}}  # filled in from the first video file once written
        else:
            shape = list(values.shape[1:]) or [1]
            features[name] = {"dtype": str(values.dtype), "shape": shape, "names": None}
    index_features = {"timestamp": ("float32", pa.float32()), "frame_index": ("int64", pa.int64()),
                      "episode_index": ("int64", pa.int64()), "index": ("int64", pa.int64()),
                      "task_index": ("int64", pa.int64())}
    for name, (dtype, _) in index_features.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    low_dim = [k for k in key_map if k not in images]
    schema = pa.schema([(key_map[k], _arrow_type(first[k].dtype, first[k].shape[1:])) for k in low_dim]
                       + [(n, t) for n, (_, t) in index_features.items()])

    output.mkdir(parents=True)
    data_writer: pq.ParquetWriter | None = None
    data_file = (0, -1)
    video_writers: dict[str, VideoWriter] = {}
    video_files: dict[str, tuple[int, int]] = {}
    episode_rows, stats, n_frames, sizes = [], {}, 0, {"data": 0, "videos": 0}
    try:
        for e, episode in enumerate(buffer.iter_episodes()):
            length = len(next(iter(episode.values())))
            task_index = int(episode_tasks[e])
            if data_writer is None or os.path.getsize(data_writer.where) > DATA_FILE_MB * 2**20:
                if data_writer is not None:
                    data_writer.close()
                data_file = _next_file(data_file)
                path = output / DATA_PATH.format(chunk_index=data_file[0], file_index=data_file[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, schema)
            columns = {key_map[k]: _column(episode[k], schema.field(key_map[k]).type) for k in low_dim}
            frame_index = np.arange(length, dtype=np.int64)
            columns.update({"timestamp": pa.array((frame_index / fps).astype(np.float32)),
                            "frame_index": pa.array(frame_index), "episode_index": pa.array(np.full(length, e)),
                            "index": pa.array(n_frames + frame_index),
                            "task_index": pa.array(np.full(length, task_index))})
            data_writer.write_table(pa.table(columns, schema=schema))
            row = {"episode_index": e, "tasks": [tasks[task_index]], "length": length,
                   "data/chunk_index": data_file[0], "data/file_index": data_file[1],
                   "dataset_from_index": n_frames, "dataset_to_index": n_frames + length}
            for key in sorted(images & set(key_map)):
                name = key_map[key]
                writer = video_writers.get(name)
                if writer is None or writer.bytes > VIDEO_FILE_MB * 2**20:
                    if writer is not None:
                        writer.close()
                    video_files[name] = _next_file(video_files.get(name, (0, -1)))
                    chunk, file = video_files[name]
                    writer = video_writers[name] = VideoWriter(
                        output / VIDEO_PATH.format(video_key=name, chunk_index=chunk, file_index=file), fps,
                        *episode[key].shape[1:3], video)
                start = writer.n_frames / fps
                writer.write(episode[key])
                row.update({f"videos/{name}/chunk_index": video_files[name][0],
                            f"videos/{name}/file_index": video_files[name][1],
                            f"videos/{name}/from_timestamp": start, f"videos/{name}/to_timestamp": writer.n_frames / fps})
            index_values = {"timestamp": frame_index / fps, "frame_index": frame_index,
                            "episode_index": np.full(length, e), "index": n_frames + frame_index,
                            "task_index": np.full(length, task_index)}
            for name, values in [*((key_map[k], episode[k]) for k in key_map), *index_values.items()]:
                part = _stats(values, features[name]["dtype"] == "video")
                for stat, value in part.items():
                    row[f"stats/{name}/{stat}"] = value.tolist()
                stats[name] = _merge_stats(stats.get(name), part)
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            episode_rows.append(row)
            n_frames += length
            if progress is not None:
                progress(1)
    finally:
        if data_writer is not None:
            data_writer.close()
        for writer in video_writers.values():
            writer.close()
    for key in images & set(key_map):
        name = key_map[key]
        features[name]["info"] = probe(output / VIDEO_PATH.format(video_key=name, chunk_index=0, file_index=0))
    episodes_path = output / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
    pq.write_table(_tasks_table(tasks), output / "meta/tasks.parquet")
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": buffer.n_episodes,
            "total_frames": n_frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB, "fps": fps,
            "splits": {"train": f"0:{buffer.n_episodes}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if images & set(key_map) else None, "features": features}
    (output / INFO_PATH).write_text(json.dumps(info, indent=4))
    (output / "meta/stats.json").write_text(json.dumps(
        {name: {stat: value.tolist() for stat, value in s.items()} for name, s in stats.items()}, indent=4))
    (output / ROBOLEARN_META).write_text(json.dumps(
        {"keys": {name: key for key, name in key_map.items()},
         "shapes": {key: list(first[key].shape[1:]) for key in key_map}, WRITER_KEY: writer_marker()}, indent=2))
    for part, pattern in (("data", "data"), ("videos", "videos")):
        sizes[part] = sum(p.stat().st_size for p in (output / pattern).rglob("*") if p.is_file()) \
            if (output / pattern).exists() else 0
    return {"frames": n_frames, "episodes": buffer.n_episodes, "bytes": sizes}


def check_export_replaceable(path: Path) -> None:
    """Refuse to replace `path` unless it is a LeRobot folder robolearn exported (`check_own_export`): its
    meta/robolearn.json parses and carries robolearn's writer marker, and it holds nothing an export does not write.

    Raises:
        FormatError: naming what is missing or extra (nothing is changed).
    """
    def read_marker(folder: Path) -> tuple[object, str, list[str]]:
        try:
            meta = json.loads((folder / ROBOLEARN_META).read_text())
        except (OSError, ValueError):
            meta = None
        extra = unexpected_entries(folder, {"meta", "data", "videos"})
        if (folder / "meta").is_dir():
            extra += [f"meta/{n}" for n in unexpected_entries(folder / "meta", {"info.json", "stats.json", "episodes",
                                                                                "tasks.parquet", "robolearn.json"})]
        return meta.get(WRITER_KEY) if isinstance(meta, dict) else None, ROBOLEARN_META, extra

    check_own_export(path, "a LeRobot export", read_marker)


def _next_file(current: tuple[int, int]) -> tuple[int, int]:
    chunk, file = current
    return (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)


def _column(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """Per-step values (T, ...) as an arrow column of `arrow_type` (a scalar or a fixed-size list)."""
    # arrays built from the numpy dtype (the schema's, by construction): 40x faster than converting to a given type
    if pa.types.is_fixed_size_list(arrow_type):
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), arrow_type.list_size)
    return pa.array(np.ascontiguousarray(values).reshape(len(values)))
