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

from robolearn.config_checks import Bool, Float, check_config
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
from robolearn.datasets.formats.lerobot import (
    ROBOLEARN_META,
    LeRobotSource,
    export_lerobot,
)
from robolearn.datasets.formats.robomimic import RobomimicSource
from robolearn.datasets.formats.rosbag import (
    CUSTOM_DATA_KEY,
    RosbagSource,
    export_rosbag,
)
from robolearn.datasets.formats.video import VideoSettings
from robolearn.datasets.replay_buffer import ReplayBuffer, check_replaceable
from robolearn.errors import UserError
from robolearn.sim.arm import JOINT_NAMES

IMPORT_FORMATS = ("lerobot", "robomimic", "rosbag")
EXPORT_FORMATS = ("lerobot", "rosbag")
IMPORT_RULES = {"overwrite": Bool(), "lerobot.tolerance_s": Float(min=0, min_open=True),
                "rosbag.rate_hz": Float(min=0, min_open=True), "rosbag.gap_s": Float(min=0, min_open=True),
                "rosbag.max_age_s": Float(min=0, min_open=True)}
BATCH_BYTES = 64 * 2**20  # episodes are written to zarr in batches of about this many bytes
EXPORT_RULES = {"overwrite": Bool(), "fps": Float(min=0, min_open=True, optional=True)}


def _container(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _format(cfg: DictConfig, allowed: tuple[str, ...], verb: str) -> str:
    fmt = cfg.format
    if fmt not in allowed:
        raise UserError(f"format={fmt!r}: robolearn dataset {verb} takes format={'|'.join(allowed)}")
    return str(fmt)


def _image_size(cfg: DictConfig) -> tuple[int, int] | None:
    size = _container(cfg, "image_size")
    if size is None:
        return None
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError(f"image_size={size!r}: expected [height, width] in pixels, or null")
    return int(size[0]), int(size[1])


def open_source(cfg: DictConfig):
    """The reader of `cfg.source` in `cfg.format` (LeRobotSource, RobomimicSource or RosbagSource)."""
    fmt = _format(cfg, IMPORT_FORMATS, "import")
    if cfg.source is None:
        raise UserError("give the dataset to import: source=PATH")
    source = Path(cfg.source)
    keys = _container(cfg, "keys") or {}
    if fmt == "lerobot":
        return LeRobotSource(source, keys, _image_size(cfg), float(cfg.lerobot.tolerance_s))
    if fmt == "robomimic":
        return RobomimicSource(source, keys, _image_size(cfg))
    r = cfg.rosbag
    return RosbagSource(source, float(r.rate_hz), keys, _container(cfg, "rosbag.joint_names"), str(r.trigger_topic),
                        float(r.gap_s), float(r.max_age_s), str(r.stamp), _image_size(cfg))


def dataset_import(cfg: DictConfig) -> Path:
    """Hydra task `robolearn dataset import` (configs/dataset_import.yaml): a foreign dataset into a new robolearn
    zarr dataset, with its provenance in the dataset's `source` attribute.

    Returns:
        The output path.

    Raises:
        UserError: a bad option (named). FormatError: as the format's reader (naming the file and what was
        expected). FileExistsError: the output exists without overwrite=true.
    """
    check_config(cfg, IMPORT_RULES)
    source = open_source(cfg)
    output = Path(cfg.output or Path(cfg.data_dir) / f"{Path(cfg.source).stem}.zarr")
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
        with atomic_output(output, bool(cfg.overwrite), check_replaceable) as staging:
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


def _check_export_replaceable(fmt: str):
    """Only a LeRobot folder or a bag that robolearn exported may be replaced by overwrite=true."""
    def check(path: Path) -> None:
        mark = path / ROBOLEARN_META if fmt == "lerobot" else path / "metadata.yaml"
        ours = mark.is_file() and (fmt == "lerobot" or CUSTOM_DATA_KEY in mark.read_text())
        if path.is_symlink() or not path.is_dir() or not ours:
            raise UserError(f"{path} is not a {fmt} export of robolearn, so overwrite=true will not replace it; "
                            "move or delete it yourself, or choose another output=")
    return check


def dataset_export(cfg: DictConfig) -> Path:
    """Hydra task `robolearn dataset export` (configs/dataset_export.yaml): a robolearn dataset as a LeRobot v3.0
    dataset folder or a ROS 2 bag.

    Returns:
        The output path.

    Raises:
        UserError: a bad option (named), a missing source or output. FormatError: as the exporter.
        FileExistsError: the output exists without overwrite=true.
    """
    check_config(cfg, EXPORT_RULES)
    fmt = _format(cfg, EXPORT_FORMATS, "export")
    if cfg.source is None or cfg.output is None:
        raise UserError("give the robolearn dataset and where to write: source=PATH output=PATH")
    output = Path(cfg.output)
    started = time.perf_counter()
    with ReplayBuffer.open(cfg.source) as buffer:
        if buffer.n_episodes == 0:
            raise UserError(f"{cfg.source} has no episodes to export")
        fps = dataset_fps(buffer.attrs, cfg.fps)
        with atomic_output(output, bool(cfg.overwrite), _check_export_replaceable(fmt), what=fmt,
                           nested=fmt == "rosbag") as staging, \
                tqdm(total=buffer.n_episodes, unit="episode", desc=f"export {fmt}") as bar:
            if fmt == "lerobot":
                lr = cfg.lerobot
                tasks = buffer.attrs.get(TASKS_ATTR) or [lr.task or Path(cfg.source).stem]
                episode_tasks = buffer.attrs.get(EPISODE_TASKS_ATTR)
                if episode_tasks is not None:
                    episode_tasks = [max(int(t), 0) for t in episode_tasks]
                video = VideoSettings(**_container(cfg, "lerobot.video"))
                result = export_lerobot(buffer, staging, fps, _container(cfg, "keys"), tasks, episode_tasks,
                                        lr.robot_type, video, bar.update)
            else:
                joint_names = _container(cfg, "rosbag.joint_names")
                if joint_names is None and "joint_pos" in buffer.keys:
                    n = buffer.array("joint_pos").shape[1]
                    joint_names = list(JOINT_NAMES) if n == len(JOINT_NAMES) else [f"joint_{i}" for i in range(n)]
                result = export_rosbag(buffer, staging, fps, joint_names or [], _container(cfg, "rosbag.episodes"),
                                       str(cfg.rosbag.storage), progress=bar.update)
    elapsed = time.perf_counter() - started
    frames = int(result.get("frames", 0)) or None
    print(f"exported {result['episodes']} episodes to {fmt} {output} in {elapsed:.1f} s"
          + (f" ({frames / max(elapsed, 1e-9):.0f} frames/s)" if frames else "") + f"; {json.dumps(result)}")
    return output
