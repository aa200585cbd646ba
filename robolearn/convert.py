"""`robolearn dataset import` and `robolearn dataset export`: datasets from and to the tools people already use.

    robolearn dataset import format=lerobot source=PATH [output=data/NAME.zarr] [keys=...] [image_size=[96,96]]
    robolearn dataset import format=robomimic source=FILE.hdf5
    robolearn dataset import format=rosbag source=BAG rosbag.rate_hz=20
    robolearn dataset export format=lerobot source=DATASET.zarr output=FOLDER
    robolearn dataset export format=rosbag source=DATASET.zarr output=BAG

Formats: `robolearn.datasets.formats` (LeRobot v3.0 and v2.x, robomimic HDF5, ROS 2 bags). Every output is written
beside its destination and renamed into place when complete (`atomic_output`), so an interrupted run leaves no
half dataset; running it again starts over.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from robolearn.datasets.formats.common import (
    EPISODE_TASKS_ATTR,
    SOURCE_ATTR,
    SPLITS_ATTR,
    TASKS_ATTR,
    FormatError,
    atomic_output,
    dataset_fps,
    provenance,
)
from robolearn.datasets.formats.lerobot import LeRobotSource, export_lerobot
from robolearn.datasets.formats.lerobot import (
    check_export_replaceable as lerobot_replaceable,
)
from robolearn.datasets.formats.robomimic import RobomimicSource
from robolearn.datasets.formats.rosbag import RosbagSource, export_rosbag
from robolearn.datasets.formats.rosbag import (
    check_export_replaceable as rosbag_replaceable,
)
from robolearn.datasets.formats.schema import ExportOptions, ImportOptions, options
from robolearn.datasets.formats.video import VideoSettings
from robolearn.datasets.replay_buffer import ReplayBuffer, check_replaceable
from robolearn.errors import UserError
from robolearn.outputs import check_apart, check_writable
from robolearn.sim.arm import JOINT_NAMES

IMPORT_FORMATS = ("lerobot", "robomimic", "rosbag")
EXPORT_FORMATS = ("lerobot", "rosbag")
BATCH_BYTES = 64 * 2**20  # episodes are written to zarr in batches of about this many bytes
#: the options every import or export takes outside the format's schema (`ImportOptions`, `ExportOptions`)
PATH_OPTIONS = ("format", "source", "output", "data_dir")


def _format(cfg: DictConfig, allowed: tuple[str, ...], verb: str) -> str:
    fmt = cfg.format
    if fmt not in allowed:
        raise UserError(f"format={fmt!r}: robolearn dataset {verb} takes format={'|'.join(allowed)}")
    return str(fmt)


def _options(cfg: DictConfig, model):
    """The command's options but the paths and the format, validated by `model` (UserError naming the option)."""
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in PATH_OPTIONS}
    return options(model, values)


def open_source(cfg: DictConfig, opts: ImportOptions | None = None):
    """The reader of `cfg.source` in `cfg.format` (LeRobotSource, RobomimicSource or RosbagSource).

    Raises:
        UserError: an unknown format, no source, or a bad option (named). FormatError: as the reader.
    """
    fmt = _format(cfg, IMPORT_FORMATS, "import")
    if cfg.source is None:
        raise UserError("give the dataset to import: source=PATH")
    opts = opts or _options(cfg, ImportOptions)
    source, keys, size = Path(cfg.source), opts.keys or {}, opts.image_size
    if fmt == "lerobot":
        return LeRobotSource(source, keys, size, opts.lerobot.tolerance_s)
    if fmt == "robomimic":
        return RobomimicSource(source, keys, size)
    r = opts.rosbag
    return RosbagSource(source, r.rate_hz, keys, r.joint_names, r.trigger_topic, r.gap_s, r.max_age_s, r.stamp, size)


def dataset_import(cfg: DictConfig) -> Path:
    """Hydra task `robolearn dataset import` (configs/dataset_import.yaml): a foreign dataset into a new robolearn
    zarr dataset, with its provenance in the dataset's `source` attribute.

    Returns:
        The output path.

    Raises:
        UserError: a bad option (named, `ImportOptions`), an output that is, holds or lies inside the source, or
            one that cannot be written (all before anything is read). FormatError: as the format's reader (naming
            the file, the key and what was expected). FileExistsError: the output exists without overwrite=true.
        DatasetError: overwrite=true over anything but a dataset robolearn wrote (`check_replaceable`).
    """
    _format(cfg, IMPORT_FORMATS, "import")
    if cfg.source is None:
        raise UserError("give the dataset to import: source=PATH")
    opts = _options(cfg, ImportOptions)
    output = Path(cfg.output or Path(cfg.data_dir) / f"{Path(cfg.source).stem}.zarr")
    check_apart({"output": output}, {"source": cfg.source})
    check_writable(output, "output")
    source = open_source(cfg, opts)
    key_map = getattr(source, "key_map", None) or getattr(source, "topic_map", {})
    version = str(getattr(source, "version", "hdf5"))
    fps = getattr(source, "fps", None) or getattr(source, "rate_hz", None)
    attrs = {SOURCE_ATTR: provenance(cfg.format, version, Path(cfg.source), key_map, fps=fps)}
    if getattr(source, "env_args", None):
        attrs[SOURCE_ATTR]["env_args"] = source.env_args
    started = time.perf_counter()
    n_frames = 0
    episode_tasks = []
    try:
        with atomic_output(output, opts.overwrite, check_replaceable) as staging:
            buffer = ReplayBuffer.create(staging, attrs=attrs, lock=False)  # the output's lock covers it
            try:
                total = getattr(source, "n_episodes", None)
                with tqdm(total=total, unit="episode", desc=f"import {cfg.format}") as bar:
                    batch, batch_bytes = [], 0
                    for task_index, episode in source.episodes():
                        batch.append(episode)
                        batch_bytes += sum(v.nbytes for v in episode.values())
                        episode_tasks.append(task_index)
                        n_frames += len(next(iter(episode.values())))
                        if batch_bytes >= BATCH_BYTES:  # one zarr write per key for many short episodes
                            buffer.add_episodes(batch)
                            batch, batch_bytes = [], 0
                        bar.update(1)
                    buffer.add_episodes(batch)
                if buffer.n_episodes == 0:
                    raise FormatError(f"{cfg.source}: no episodes found")
                extra = {}
                if getattr(source, "tasks", None):
                    extra = {TASKS_ATTR: list(source.tasks), EPISODE_TASKS_ATTR: episode_tasks}
                if getattr(source, "splits", None):
                    extra[SPLITS_ATTR] = source.splits
                if extra:
                    buffer.update_attrs(extra)
                n_episodes = buffer.n_episodes
            finally:
                buffer.close()
    finally:
        source.close()
    elapsed = time.perf_counter() - started
    print(f"imported {n_episodes} episodes, {n_frames} frames from {cfg.format} {version} {cfg.source} -> {output} "
          f"in {elapsed:.1f} s ({n_frames / max(elapsed, 1e-9):.0f} frames/s)")
    print("keys: " + ", ".join(f"{src} -> {dst}" for src, dst in key_map.items()))
    return output


def dataset_export(cfg: DictConfig) -> Path:
    """Hydra task `robolearn dataset export` (configs/dataset_export.yaml): a robolearn dataset as a LeRobot v3.0
    dataset folder or a ROS 2 bag.

    Returns:
        The output path.

    Raises:
        UserError: a bad option (named, `ExportOptions`), a missing source or output, an output that is, holds or
            lies inside the source, or one that cannot be written (all before any work). FormatError: encoder
            settings FFmpeg refuses (before any work), as the exporter, or overwrite=true over anything but an
            export robolearn wrote. FileExistsError: the output exists without overwrite=true.
    """
    fmt = _format(cfg, EXPORT_FORMATS, "export")
    if cfg.source is None or cfg.output is None:
        raise UserError("give the robolearn dataset and where to write: source=PATH output=PATH")
    opts = _options(cfg, ExportOptions)
    output = Path(cfg.output)
    check_apart({"output": output}, {"source": cfg.source})
    check_writable(output, "output")
    video = VideoSettings(**opts.lerobot.video.model_dump())
    started = time.perf_counter()
    with ReplayBuffer.open(cfg.source) as buffer:
        if buffer.n_episodes == 0:
            raise UserError(f"{cfg.source} has no episodes to export")
        fps = dataset_fps(buffer.attrs, opts.fps)
        if fmt == "lerobot" and any(buffer.array(k).dtype == "uint8" and buffer.array(k).ndim == 4 for k in buffer.keys):
            video.check(fps, "lerobot.video")  # a codec, pixel format or quality FFmpeg refuses: before any work
        with atomic_output(output, opts.overwrite, lerobot_replaceable if fmt == "lerobot" else rosbag_replaceable,
                           what=fmt, nested=fmt == "rosbag") as staging, \
                tqdm(total=buffer.n_episodes, unit="episode", desc=f"export {fmt}") as bar:
            if fmt == "lerobot":
                lr = opts.lerobot
                tasks = buffer.attrs.get(TASKS_ATTR) or [lr.task or Path(cfg.source).stem]
                episode_tasks = buffer.attrs.get(EPISODE_TASKS_ATTR)
                if episode_tasks is not None:
                    episode_tasks = [max(int(t), 0) for t in episode_tasks]
                result = export_lerobot(buffer, staging, fps, opts.keys, tasks, episode_tasks, lr.robot_type, video,
                                        bar.update)
            else:
                joint_names = opts.rosbag.joint_names
                if joint_names is None and "joint_pos" in buffer.keys:
                    n = buffer.array("joint_pos").shape[1]
                    joint_names = list(JOINT_NAMES) if n == len(JOINT_NAMES) else [f"joint_{i}" for i in range(n)]
                result = export_rosbag(buffer, staging, fps, joint_names or [], opts.rosbag.episodes,
                                       opts.rosbag.storage, progress=bar.update)
    elapsed = time.perf_counter() - started
    frames = int(result.get("frames", 0)) or None
    print(f"exported {result['episodes']} episodes to {fmt} {output} in {elapsed:.1f} s"
          + (f" ({frames / max(elapsed, 1e-9):.0f} frames/s)" if frames else "") + f"; {json.dumps(result)}")
    return output
