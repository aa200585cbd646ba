"""ROS 2 bags (rosbag2: MCAP or SQLite3 storage) to and from robolearn replay buffers, with the `rosbags` library.

Import (`RosbagSource`) maps topics to dataset keys by message type, as `recorder_node` records them live:

    sensor_msgs/msg/JointState          -> joint_pos (position) and joint_vel (velocity, when the bag has it)
    */commands (Float64MultiArray),
    */joint_trajectory (JointTrajectory) -> action (the first point's positions)
    geometry_msgs/msg/PoseStamped /<x>_pose (or /<x>) -> <x>_pos (m), <x>_quat (w, x, y, z)
    sensor_msgs/msg/Image, CompressedImage /camera/<cam>/image_raw[/compressed] -> <cam>_image (uint8 RGB)
    std_msgs/msg/Float64MultiArray /<x> -> x (the last name in the topic);  /robolearn/<x> -> x

Time alignment: each episode is sampled at `rate_hz` on ticks t_k = t_0 + k / rate_hz (integer nanoseconds), and
each key takes the newest message received at or before the tick (zero-order hold; receive time = the bag's log
time, or the header stamp with `stamp="header"`). A tick whose newest message of some key is older than
`max_age_s` is left out; the episode starts at the first tick at which every key has a message. Episode
boundaries come from std_msgs/String messages on `trigger_topic` ("start", then "stop"/"end"; "discard" drops
the episode: `recorder_node`'s convention), or, without a trigger topic in the bag, from gaps longer than `gap_s`
in the joint states. Each episode also gets `timestamp` (s since its first tick, float64) and `done`.

Export (`export_rosbag`) writes the inverse: every key of every episode at its tick times, one "start"/"stop" pair on
the trigger topic around each episode (episodes 2 s apart), and the dataset's key names, dtypes and shapes in the
bag's `custom_data` (metadata.yaml), so that an export imports back to the same arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from robolearn.datasets.formats.common import (
    FormatError,
    check_own_export,
    resize_frames,
)
from robolearn.datasets.formats.schema import BagExportMeta, validated
from robolearn.datasets.replay_buffer import ReplayBuffer, is_image
from robolearn.outputs import (
    WRITER_KEY,
    unexpected_entries,
    writer_marker,
)

TRIGGER_TOPIC = "/recorder/trigger"
CUSTOM_DATA_KEY = "robolearn"
EPISODE_GAP_NS = 2_000_000_000  # between exported episodes
COMMANDS_TOPIC = "/position_controller/commands"
JOINT_STATES = "sensor_msgs/msg/JointState"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def default_topic_key(topic: str, msgtype: str) -> str | None:
    """The dataset key (for poses: the key prefix) of a topic by default (see the module docstring)."""
    name = topic.rstrip("/").rsplit("/", 1)[-1]
    parts = topic.strip("/").split("/")
    if msgtype == JOINT_STATES:
        return "joint_pos"
    if msgtype == TRAJECTORY or (msgtype == FLOAT_ARRAY and name == "commands"):
        return "action"
    if msgtype in (IMAGE, COMPRESSED_IMAGE):
        camera = parts[1] if len(parts) >= 2 and parts[0] == "camera" else name
        return f"{camera}_image"
    if msgtype == POSE_STAMPED:
        return name.removesuffix("_pose")
    if msgtype == FLOAT_ARRAY:
        return name
    return None


@dataclass
class _Stream:
    key: str
    topic: str
    msgtype: str
    times: list[int]
    values: list


class RosbagSource:
    """A rosbag2 folder (or .mcap/.db3 file), read into episodes at a fixed rate (see the module docstring).

    Args:
        path: the bag.
        rate_hz: the control rate of the dataset (Hz); ignored for a robolearn export, which records its own.
        topics: {topic: dataset key (pose topics: the key prefix) or None (drop)} overriding the defaults.
        joint_names: the joint order for JointState and JointTrajectory (default: the first message's order).
        trigger_topic: the topic of episode triggers; episodes split at gaps of `gap_s` when the bag lacks it.
        gap_s: the gap (s) in joint states that splits episodes without triggers.
        max_age_s: a tick whose newest message of a key is older than this (s) is left out.
        stamp: "log" (the bag's receive time) or "header" (the messages' header stamps, where they have one).
        image_size: (height, width) to resize camera frames to, or None.

    Raises:
        FormatError: not a bag, a damaged bag, a topic map naming a topic the bag lacks, a message that cannot be
            converted (naming the topic), an episode in which a key never arrives.
    """

    def __init__(self, path: str | os.PathLike, rate_hz: float = 20.0, topics: Mapping[str, str | None] | None = None,
                 joint_names: list[str] | None = None, trigger_topic: str = TRIGGER_TOPIC, gap_s: float = 1.0,
                 max_age_s: float = 0.25, stamp: str = "log", image_size: tuple[int, int] | None = None):
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        if not self.path.exists():
            raise FormatError(f"bag {self.path} is missing")
        if stamp not in ("log", "header"):
            raise FormatError(f"stamp must be 'log' or 'header', got {stamp!r}")
        self.custom = self._custom_data()
        self.rate_hz = float(self.custom.get("rate_hz", rate_hz))
        if not self.rate_hz > 0:
            raise FormatError(f"rate_hz must be positive, got {rate_hz}")
        self.joint_names = list(joint_names) if joint_names else self.custom.get("joint_names")
        self.trigger_topic, self.gap_s, self.max_age_s, self.stamp = trigger_topic, gap_s, max_age_s, stamp
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        try:
            self._reader = AnyReader([self.path])
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged bags
            raise FormatError(f"{self.path} is not a readable ROS 2 bag ({type(exc).__name__}: {exc})") from None
        self.topic_types = {c.topic: c.msgtype for c in self._reader.connections}
        if self.topic_types.get(trigger_topic, STRING) != STRING:
            raise FormatError(f"{self.path}: the trigger topic {trigger_topic} carries {self.topic_types[trigger_topic]}"
                              f", not {STRING} (start/stop/discard); name the right one with rosbag.trigger_topic=")
        self.version = f"rosbag2 ({', '.join(sorted({_storage(self.path)}))})"
        overrides = dict(topics or {})
        missing = [t for t in overrides if t not in self.topic_types]
        if missing:
            raise FormatError(f"{self.path}: the topic map names {missing}, which the bag does not have; it has "
                              f"{sorted(self.topic_types)}")
        exported = self.custom.get("topics", {})
        self.topic_map = {}
        for topic, msgtype in sorted(self.topic_types.items()):
            if topic == trigger_topic:
                continue
            key = overrides[topic] if topic in overrides else (exported.get(topic) if exported
                                                              else default_topic_key(topic, msgtype))
            if key is not None:
                self.topic_map[topic] = key
        if not self.topic_map:
            raise FormatError(f"{self.path}: no topic maps to a dataset key (topics: {self.topic_types})")

    def _custom_data(self) -> dict:
        meta = self.path / "metadata.yaml" if self.path.is_dir() else self.path.parent / "metadata.yaml"
        if not meta.is_file():
            return {}
        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            custom = json.loads((info.get("custom_data") or {}).get(CUSTOM_DATA_KEY, "{}"))
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{meta} is not a rosbag2 metadata file ({exc})") from None
        if custom:  # written by export_rosbag: the shapes, dtypes and topic map it records are trusted only once valid
            validated(BagExportMeta, custom, f"{meta}: custom data {CUSTOM_DATA_KEY}")
        return custom

    # -- reading ---------------------------------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, _Stream], list[tuple[int, str]]]:
        """All mapped messages as converted values, per output key; and the trigger messages (time, word)."""
        from robolearn.ros.images import frame_from_message

        streams: dict[str, _Stream] = {}
        triggers = []
        wanted = [c for c in self._reader.connections if c.topic in self.topic_map or c.topic == self.trigger_topic]
        try:
            for conn, log_time, raw in self._reader.messages(connections=wanted):
                msg = self._reader.deserialize(raw, conn.msgtype)
                t = log_time
                if self.stamp == "header" and hasattr(msg, "header"):
                    t = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                if conn.topic == self.trigger_topic:
                    triggers.append((t, (msg.data.split() or [""])[0]))
                    continue
                key = self.topic_map[conn.topic]
                try:
                    values = self._convert(conn.msgtype, key, msg, frame_from_message)
                except (ValueError, AttributeError, IndexError) as exc:
                    raise FormatError(f"{self.path}: a {conn.msgtype} message on {conn.topic} at {t} ns cannot be "
                                      f"converted ({exc})") from None
                for out_key, value in values.items():
                    stream = streams.setdefault(out_key, _Stream(out_key, conn.topic, conn.msgtype, [], []))
                    stream.times.append(t)
                    stream.values.append(value)
        except FormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated storage file
            raise FormatError(f"{self.path}: the bag is damaged or truncated ({type(exc).__name__}: {exc})") from None
        for stream in streams.values():  # header stamps need not arrive in order
            order = np.argsort(np.asarray(stream.times), kind="stable")
            stream.times = list(np.asarray(stream.times)[order])
            stream.values = [stream.values[i] for i in order]
            self._check_widths(stream)
        return streams, sorted(triggers)

    def _check_widths(self, stream: _Stream) -> None:
        """Every message of a key must carry values of one shape, and at least one value.

        Raises:
            FormatError: naming the topic's key, the message time and both shapes.
        """
        topic = stream.topic
        shape = np.shape(stream.values[0])
        if 0 in shape:
            raise FormatError(f"{self.path}: {topic} ({stream.msgtype}) carries no values for `{stream.key}` "
                              f"(shape {shape} at {stream.times[0]} ns); drop the topic with keys='{{{topic}: null}}'"
                              " or record its values")
        for t, value in zip(stream.times, stream.values):
            if np.shape(value) != shape:
                raise FormatError(f"{self.path}: {topic} ({stream.msgtype}) carries `{stream.key}` of shape "
                                  f"{np.shape(value)} at {t} ns after {shape} before; every message of a topic must "
                                  "carry as many values (for joint states: name the joints with rosbag.joint_names=)")

    def _check_rate(self, streams: dict[str, _Stream]) -> None:
        """rate_hz may not exceed the fastest mapped topic's own rate (median message interval): sampling faster
        only repeats messages, and a huge rate would allocate ticks by the billion.

        Raises:
            FormatError: naming the fastest topic's rate.
        """
        rates = {}
        for key, stream in streams.items():
            gaps = np.diff(np.asarray(stream.times, dtype=np.int64))
            gaps = gaps[gaps > 0]
            if len(gaps):
                rates[key] = 1e9 / float(np.median(gaps))
        if rates and self.rate_hz > 1.01 * max(rates.values()):
            fastest = max(rates, key=rates.get)
            raise FormatError(f"{self.path}: rosbag.rate_hz={self.rate_hz:g} is above the rate of the fastest mapped "
                              f"topic (`{fastest}`, {rates[fastest]:.4g} Hz); sampling faster would only repeat "
                              f"messages: choose rosbag.rate_hz <= {rates[fastest]:.4g}")

    def _convert(self, msgtype: str, key: str, msg, frame_from_message) -> dict[str, np.ndarray]:
        dtypes = self.custom.get("dtypes", {})
        shapes = self.custom.get("shapes", {})

        def typed(k: str, values) -> np.ndarray:
            values = np.asarray(values, dtype=np.float64)
            dtype = dtypes.get(k, "float32")
            if k in shapes:
                values = values.reshape(shapes[k])
            return values.astype(dtype)

        if msgtype == JOINT_STATES:
            names = list(msg.name)
            if names and len(names) != len(msg.position):
                raise ValueError(f"it names {len(names)} joints but carries {len(msg.position)} positions")
            if self.joint_names is None and names:
                self.joint_names = names
            missing = [n for n in self.joint_names or [] if names and n not in names]
            if missing:
                raise ValueError(f"it has no joint(s) {missing} (it names {names}); set rosbag.joint_names= to the "
                                 "joints it carries")
            order = [names.index(n) for n in self.joint_names] if names and self.joint_names else None
            pick = (lambda a: np.asarray(a)[order]) if order is not None else np.asarray
            out = {key: typed(key, pick(msg.position))}
            if key == "joint_pos" and len(msg.velocity):
                out["joint_vel"] = typed("joint_vel", pick(msg.velocity))
            return out
        if msgtype == TRAJECTORY:
            names = list(msg.joint_names)
            if not len(msg.points):
                raise ValueError("the trajectory has no points")
            positions = np.asarray(msg.points[0].positions)
            if self.joint_names and names:
                missing = [n for n in self.joint_names if n not in names]
                if missing:
                    raise ValueError(f"it has no joint(s) {missing} (it names {names}); set rosbag.joint_names=")
                positions = positions[[names.index(n) for n in self.joint_names]]
            return {key: typed(key, positions)}
        if msgtype == POSE_STAMPED:
            p, q = msg.pose.position, msg.pose.orientation
            return {f"{key}_pos": typed(f"{key}_pos", [p.x, p.y, p.z]),
                    f"{key}_quat": typed(f"{key}_quat", [q.w, q.x, q.y, q.z])}
        if msgtype in (IMAGE, COMPRESSED_IMAGE):
            frame = frame_from_message(msg)
            return {key: resize_frames(frame[None], self.image_size)[0]}
        if msgtype == FLOAT_ARRAY:
            return {key: typed(key, msg.data)}
        raise ValueError(f"message type {msgtype} is not supported (JointState, Float64MultiArray, "
                         "JointTrajectory, PoseStamped, Image, CompressedImage)")

    def _segments(self, streams: dict[str, _Stream], triggers: list[tuple[int, str]]) -> list[tuple[int, int]]:
        """[(start ns, stop ns)] of the episodes."""
        if triggers:
            segments, start = [], None
            for t, word in triggers:
                if word == "start":
                    start = t
                elif word in ("stop", "end") and start is not None:
                    segments.append((start, t))
                    start = None
                elif word == "discard":
                    start = None
            return segments
        anchor = streams.get("joint_pos") or next(iter(streams.values()))
        times = np.asarray(anchor.times)
        breaks = np.flatnonzero(np.diff(times) > self.gap_s * 1e9)
        starts = np.concatenate([[0], breaks + 1])
        stops = np.concatenate([breaks, [len(times) - 1]])
        return [(int(times[a]), int(times[b]) + 1) for a, b in zip(starts, stops)]

    def episodes(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yields (-1, {key: (T, ...)}) for each episode, sampled at rate_hz (see the module docstring)."""
        streams, triggers = self._read()
        if not streams:
            raise FormatError(f"{self.path}: no messages on the mapped topics {sorted(self.topic_map)}")
        if not self.custom:  # an export records the rate it was written at
            self._check_rate(streams)
        period_ns = 1e9 / self.rate_hz
        keys = sorted(streams)
        order = self.custom.get("keys")
        if order:
            keys = [k for k in order if k in streams] + [k for k in keys if k not in order]
        times = {k: np.asarray(streams[k].times, dtype=np.int64) for k in keys}
        for n, (start, stop) in enumerate(self._segments(streams, triggers)):
            first = [times[k][times[k] >= start][:1] for k in keys]
            if any(len(f) == 0 or f[0] > stop for f in first):
                absent = [k for k, f in zip(keys, first) if len(f) == 0 or f[0] > stop]
                raise FormatError(f"{self.path}: episode {n} ({start / 1e9:.3f}-{stop / 1e9:.3f} s) has no message "
                                  f"for {absent}")
            t0 = max(int(f[0]) for f in first)
            ticks = t0 + np.round(np.arange(int((stop - t0) / period_ns) + 1) * period_ns).astype(np.int64)
            ticks = ticks[ticks < stop] if len(ticks) > 1 else ticks
            index = {k: np.searchsorted(times[k], ticks, side="right") - 1 for k in keys}
            fresh = np.ones(len(ticks), bool)
            for k in keys:
                fresh &= (ticks - times[k][index[k]]) <= self.max_age_s * 1e9
            ticks = ticks[fresh]
            if len(ticks) == 0:
                continue
            data = {k: np.stack([streams[k].values[i] for i in index[k][fresh]]) for k in keys}
            if not self.custom:  # a bag robolearn did not write: add what recorder_node records
                data["timestamp"] = (ticks - ticks[0]) / 1e9
                data["done"] = np.arange(len(ticks)) == len(ticks) - 1
            yield -1, data

    def close(self) -> None:
        self._reader.close()


def _storage(path: Path) -> str:
    files = [path] if path.is_file() else list(path.iterdir())
    return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"


# -- export ----------------------------------------------------------------------------------------------------
def export_rosbag(buffer: ReplayBuffer, output: Path, rate_hz: float, joint_names: list[str],
                  episodes: list[int] | None = None, storage: str = "mcap", start_ns: int = 1_700_000_000 * 10**9,
                  progress=None) -> dict:
    """Write episodes of `buffer` as a rosbag2 bag at the folder `output` (which must not exist).

    Messages (see the module docstring for the inverse): joint_pos (+ joint_vel) -> JointState on /joint_states
    with `joint_names`; action -> Float64MultiArray on /position_controller/commands; gripper_opening -> Float64MultiArray on
    /gripper_opening; <x>_pos + <x>_quat ->
    PoseStamped on /<x>_pose (frame "world"); <cam>_image -> sensor_msgs/Image rgb8 on /camera/<cam>/image_raw;
    every other key -> Float64MultiArray on /robolearn/<key>. Step i of an episode is stamped (header and log
    time) start + i / rate_hz; a "start"/"stop" pair on /recorder/trigger brackets each episode.

    Args:
        buffer: the dataset; episodes: the episode indices to write (default all).
        rate_hz: the dataset's control rate (Hz); joint_names: names for the JointState messages.
        storage: "mcap" (ROS 2's default since Iron) or "sqlite3".
        start_ns: the first message's time (ns since the epoch).
        progress: a callable advanced by one per episode, or None.

    Returns:
        {"episodes": int, "messages": int, "bytes": int}.

    Raises:
        FormatError: an unknown storage, an episode index out of range, joint_pos of another length than
            joint_names.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise FormatError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
    episodes = list(range(buffer.n_episodes)) if episodes is None else [int(e) for e in episodes]
    bad = [e for e in episodes if not 0 <= e < buffer.n_episodes]
    if bad:
        raise FormatError(f"{buffer.path} has episodes 0..{buffer.n_episodes - 1}; asked for {bad}")
    store = _typestore()
    types = store.types
    first = buffer.get_episode(episodes[0]) if episodes else {}
    keys = list(buffer.keys)
    if "joint_pos" in first and first["joint_pos"].shape[1] != len(joint_names):
        raise FormatError(f"joint_pos has {first['joint_pos'].shape[1]} joints, joint_names {len(joint_names)}: "
                          f"{joint_names}")
    poses = sorted(k.removesuffix("_pos") for k in keys if k.endswith("_pos") and k != "joint_pos"
                   and f"{k.removesuffix('_pos')}_quat" in keys)
    pose_keys = {f"{p}_pos" for p in poses} | {f"{p}_quat" for p in poses}
    topics: dict[str, str] = {}  # topic -> key (the import's topic map)
    plans = []  # (topic, msgtype, builder(episode, i, header))
    header_of = lambda t: types["std_msgs/msg/Header"](  # noqa: E731
        stamp=types["builtin_interfaces/msg/Time"](sec=int(t // 10**9), nanosec=int(t % 10**9)), frame_id="world")
    if "joint_pos" in keys:
        topics["/joint_states"] = "joint_pos"
        has_vel = "joint_vel" in keys
        plans.append(("/joint_states", JOINT_STATES, lambda ep, i, h: types[JOINT_STATES](
            header=h, name=list(joint_names), position=ep["joint_pos"][i].astype(np.float64),
            velocity=ep["joint_vel"][i].astype(np.float64) if has_vel else np.zeros(0),
            effort=np.zeros(0))))
    for p in poses:
        topics[f"/{p}_pose"] = p
        plans.append((f"/{p}_pose", POSE_STAMPED, lambda ep, i, h, p=p: types[POSE_STAMPED](
            header=h, pose=types["geometry_msgs/msg/Pose"](
                position=types["geometry_msgs/msg/Point"](*map(float, ep[f"{p}_pos"][i])),
                orientation=types["geometry_msgs/msg/Quaternion"](*(float(v) for v in ep[f"{p}_quat"][i][[1, 2, 3, 0]]))))))
    layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    for key in keys:
        if key in ("joint_pos", "joint_vel") and "joint_pos" in keys or key in pose_keys:
            continue
        if is_image(first[key]):
            topic = f"/camera/{key.removesuffix('_image')}/image_raw"
            plans.append((topic, IMAGE, lambda ep, i, h, key=key: _image_message(types, h, ep[key][i])))
        else:
            topic = {"action": COMMANDS_TOPIC, "gripper_opening": "/gripper_opening"}.get(key, f"/robolearn/{key}")
            plans.append((topic, FLOAT_ARRAY, lambda ep, i, h, key=key: types[FLOAT_ARRAY](
                layout=layout, data=np.asarray(ep[key][i], dtype=np.float64).reshape(-1))))
        topics[topic] = key
    custom = {"rate_hz": rate_hz, "joint_names": list(joint_names), "topics": topics, "keys": keys,
              "dtypes": {k: str(v.dtype) for k, v in first.items()},
              "shapes": {k: list(v.shape[1:]) for k, v in first.items()}, "source": str(buffer.path),
              WRITER_KEY: writer_marker()}
    writer = Writer(output, version=9, storage_plugin=plugins[storage])
    writer.open()
    n_messages = 0
    try:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype, _ in plans}
        trigger = writer.add_connection(TRIGGER_TOPIC, STRING, typestore=store)
        period = 1e9 / rate_hz
        t_start = int(start_ns)
        chosen = zip(episodes, buffer.iter_episodes()) if episodes == list(range(buffer.n_episodes)) \
            else ((e, buffer.get_episode(e)) for e in episodes)
        for e, episode in chosen:
            length = len(next(iter(episode.values())))
            stamps = t_start + np.round(np.arange(length) * period).astype(np.int64)
            writer.write(trigger, int(stamps[0]) - 1, store.serialize_cdr(types[STRING](data=f"start {e}"), STRING))
            for i, t in enumerate(stamps):
                header = header_of(int(t))
                for topic, msgtype, build in plans:
                    writer.write(connections[topic], int(t), store.serialize_cdr(build(episode, i, header), msgtype))
                    n_messages += 1
            writer.write(trigger, int(stamps[-1]) + 1, store.serialize_cdr(types[STRING](data=f"stop {e}"), STRING))
            n_messages += 2
            t_start = int(stamps[-1]) + EPISODE_GAP_NS
            if progress is not None:
                progress(1)
        writer.set_custom_data(CUSTOM_DATA_KEY, json.dumps(custom))
    finally:
        writer.close()
    size = sum(p.stat().st_size for p in Path(output).rglob("*") if p.is_file())
    return {"episodes": len(episodes), "messages": n_messages, "bytes": size}


def check_export_replaceable(path: Path) -> None:
    """Refuse to replace `path` unless it is a bag robolearn exported (`check_own_export`): its metadata.yaml parses
    as rosbag2 metadata whose custom data `robolearn` is JSON carrying robolearn's writer marker (parsed: a bag that
    only mentions robolearn, e.g. one recorded with `ros2 bag record -a` beside robolearn's nodes, is not one), and
    it holds only that file and the storage files it lists.

    Raises:
        FormatError: naming what is missing or extra (nothing is changed).
    """
    def read_marker(folder: Path) -> tuple[object, str, list[str]]:
        try:
            info = yaml.safe_load((folder / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            custom = json.loads(info["custom_data"][CUSTOM_DATA_KEY])
            files = {Path(f).name for f in info.get("relative_file_paths") or []}
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            custom, files = None, set()
        marker = custom.get(WRITER_KEY) if isinstance(custom, dict) else None
        return marker, f"metadata.yaml custom data `{CUSTOM_DATA_KEY}`", unexpected_entries(folder, {"metadata.yaml",
                                                                                                   *files})

    check_own_export(path, "a bag export", read_marker)


def _image_message(types, header, frame: np.ndarray):
    h, w, c = frame.shape
    encoding = {1: "mono8", 3: "rgb8", 4: "rgba8"}[c]
    return types[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c,
                        data=np.ascontiguousarray(frame).reshape(-1))
