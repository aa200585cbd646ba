"""What robolearn's ROS 2 nodes share: the fixed-rate spin loop, timing statistics, and the
mapping between ROS topics and the observation keys of a task.

Observation keys and their topics (parameters `<key>_topic`, or `joint_states_topic`):
    joint_pos        sensor_msgs/JointState `position`, matched by joint name (never by index), rad
    joint_vel        sensor_msgs/JointState `velocity`, by joint name, rad/s
    gripper_opening  std_msgs/Float64MultiArray `data` (1,), m
    cube_pos         geometry_msgs/PoseStamped position (3,), m
    cube_quat        geometry_msgs/PoseStamped orientation as (w, x, y, z) (ROS sends x, y, z, w)
    <camera>_image   sensor_msgs/Image (or CompressedImage with `image_transport: compressed`) on
                     `<camera_topic_prefix>/<camera>/image_raw[/compressed]`, RGB (H, W, 3) uint8
                     (`robolearn.ros.images`)

Camera frames are aligned in time: each observation takes, from every camera, the newest frame stamped at or
before the observation time (the newest stamp of the other, low-dim, streams), so joints and images describe
one moment even when a camera runs at another rate or lags.

Malformed messages (a wrong number of values, unknown joints, NaN/inf) are dropped with a
rate-limited log line and never reach a policy or a robot; no message can stop a node.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from robolearn.config_checks import finite_number
from robolearn.errors import CheckpointError, UserError
from robolearn.hardware.safety import positive_seconds
from robolearn.ros.images import (
    camera_topic,
    frame_from_message,
    is_image_key,
    message_type,
)
from robolearn.ros.msgs import (
    Float64MultiArray,
    Header,
    JointState,
    Point,
    Pose,
    PoseStamped,
    Quaternion,
    Time,
)
from robolearn.ros.transport import SENSOR_QOS, Transport

#: observation key -> (topic parameter, message type); see the module docstring
OBSERVATION_TOPICS = {
    "joint_pos": ("joint_states_topic", JointState),
    "joint_vel": ("joint_states_topic", JointState),
    "gripper_opening": ("gripper_opening_topic", Float64MultiArray),
    "cube_pos": ("cube_pose_topic", PoseStamped),
    "cube_quat": ("cube_pose_topic", PoseStamped),
}
TOPIC_DEFAULTS = {"joint_states_topic": "/joint_states", "gripper_opening_topic": "/gripper_opening",
                  "cube_pose_topic": "/cube_pose", "camera_topic_prefix": "/camera", "image_transport": "raw"}
#: camera frames kept per camera for the alignment to the observation time
FRAMES_KEPT = 8


def observation_topic(key: str, params: dict) -> tuple[str, type]:
    """(topic, message type) that provides observation `key` under the node's topic parameters.

    Raises:
        ValueError: a key no topic provides.
    """
    if key in OBSERVATION_TOPICS:
        param, msg_type = OBSERVATION_TOPICS[key]
        return params[param], msg_type
    if is_image_key(key):
        transport = params.get("image_transport", "raw")
        return camera_topic(key, params.get("camera_topic_prefix", "/camera"), transport), message_type(transport)
    raise ValueError(f"no ROS topic provides observation `{key}`; supported: {sorted(OBSERVATION_TOPICS)} and "
                     "camera keys `<camera>_image`")
#: the fastest control rate a node accepts, Hz (a Python loop cannot keep a faster one)
MAX_CONTROL_HZ = 1000.0


def check_timing(params: dict, durations: Iterable[str] = (), non_negative: Iterable[str] = ()) -> None:
    """Validate a node's timing parameters: `control_hz` finite in (0, MAX_CONTROL_HZ], each of `durations`
    a finite number of seconds > 0, each of `non_negative` finite and >= 0 s.

    Raises:
        ValueError: the first invalid parameter, named with the value found and what was expected.
    """
    hz = finite_number(params["control_hz"])
    if hz is None or not 0 < hz <= MAX_CONTROL_HZ:
        raise ValueError(f"control_hz must be a finite rate in (0, {MAX_CONTROL_HZ:g}] Hz, got {params['control_hz']!r}")
    for name in durations:
        positive_seconds(params[name], name)
    for name in non_negative:
        value = finite_number(params[name])
        if value is None or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {params[name]!r}")


class RateLimitedLog:
    """Log lines to stderr, at most one per `key` every `interval` s, saying how many were held back.

    Args:
        node: the node's name, prefixed to each line.
        interval: seconds between two lines of one key.
    """

    def __init__(self, node: str, interval: float = 5.0):
        self.node, self.interval = node, interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str, text: str) -> bool:
        """Log `text` unless a line of `key` was logged within `interval` s; True if it was logged."""
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        suffix = f" ({held} more like it in the last {self.interval:g} s)" if held else ""
        print(f"[{self.node}] {text}{suffix}", file=sys.stderr, flush=True)
        self._last[key] = now
        return True


def finite_values(values, name: str, length: int | None = None) -> np.ndarray:
    """`values` as a finite float array (n,), of `length` values if given.

    Raises:
        ValueError: another number of values, or NaN/inf (the message names `name`).
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if length is not None and len(arr) != length:
        raise ValueError(f"{name} needs {length} value(s), got {len(arr)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or inf")
    return arr


def stamp(wall_time: float | None = None, frame_id: str = "") -> Header:
    """A header stamped with ROS time (the Unix epoch clock), s."""
    return Header(stamp=Time.from_seconds(time.time() if wall_time is None else wall_time), frame_id=frame_id)


def reorder_by_name(msg_names, values, joint_names) -> np.ndarray:
    """Values of a JointState field in `joint_names` order, matched by name.

    Raises:
        KeyError: a joint in `joint_names` is missing from the message.
        ValueError: the field has fewer values than names.
    """
    if len(values) < len(msg_names):
        raise ValueError(f"JointState has {len(msg_names)} names but {len(values)} values")
    index = {name: i for i, name in enumerate(msg_names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise KeyError(f"JointState lacks joints {missing} (it has {list(msg_names)})")
    return finite_values([values[index[n]] for n in joint_names], "joint values")


def pose_message(position, quat_wxyz, frame_id: str = "world", wall_time: float | None = None) -> PoseStamped:
    """A PoseStamped from a position (3,) m and a (w, x, y, z) quaternion."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    return PoseStamped(header=Header(stamp=Time.from_seconds(time.time() if wall_time is None else wall_time),
                                     frame_id=frame_id),
                       pose=Pose(position=Point(*(float(v) for v in position)), orientation=Quaternion(x, y, z, w)))


def episode_reset_stamp(announcement: str) -> float | None:
    """The scene-reset time (ROS time, s) of a driver's "start <i> <seed> <stamp>" announcement on
    /robolearn/episode; -inf for a start without a stamp (nothing is stale); None for anything else."""
    words = announcement.split()
    if not words or words[0] != "start":
        return None
    return float(words[3]) if len(words) >= 4 else float("-inf")


class ObservationInbox:
    """The latest value of each observation key, filled by topic subscriptions.

    Each entry keeps the value, the local monotonic time it arrived (for staleness: clocks of
    other machines are not trusted) and the sender's header stamp (ROS time, for latency and
    action timing; None for messages without a header, e.g. Float64MultiArray).

    Args:
        transport: subscriptions are made on it.
        keys: observation keys to subscribe for (see `OBSERVATION_TOPICS`).
        params: topic parameters (`joint_states_topic`, ...).
        joint_names: joint order for joint_pos / joint_vel.
        log: where dropped messages are reported (rate-limited); default prints as "inbox".

    Attributes:
        errors: key -> why its last message was dropped.
        dropped: how many messages were dropped as malformed.

    Raises:
        ValueError: a key no topic provides.
    """

    def __init__(self, transport: Transport, keys, params: dict, joint_names, log: RateLimitedLog | None = None):
        self.keys, self.joint_names = list(keys), list(joint_names)
        self.image_keys = [k for k in self.keys if is_image_key(k)]
        self.latest: dict[str, tuple[np.ndarray, float, float | None]] = {}
        #: camera key -> its last `FRAMES_KEPT` frames (value, arrival, stamp), oldest first
        self.frames: dict[str, deque] = {k: deque(maxlen=FRAMES_KEPT) for k in self.image_keys}
        self.age_at_arrival: dict[str, float] = {}  # key -> ROS time at arrival minus the header stamp, s
        self.errors: dict[str, str] = {}
        self.dropped = 0
        self.log = log or RateLimitedLog("inbox")
        self.min_stamp = -np.inf
        self.topics: dict[str, str] = {}
        topics = {}
        for key in self.keys:
            topic, msg_type = observation_topic(key, params)
            topics.setdefault((topic, msg_type), []).append(key)
            self.topics[key] = topic
        for (topic, msg_type), keys_here in topics.items():
            transport.create_subscription(topic, msg_type, self._handler(topic, keys_here), SENSOR_QOS)

    def _handler(self, topic: str, keys: list[str]) -> Callable:
        def handle(msg) -> None:
            received, wall = time.monotonic(), time.time()
            try:
                sent = msg.header.stamp.to_seconds() if hasattr(msg, "header") else None  # None: no header
                if sent is not None and not math.isfinite(sent):
                    raise ValueError(f"header stamp {sent} is not a finite time")
            except Exception as exc:  # noqa: BLE001 - no message may stop the node
                self._drop(topic, keys, exc)
                return
            if sent is not None and sent < self.min_stamp:
                return  # taken before the scene was reset
            for key in keys:
                try:
                    value = self._extract(key, msg)
                except Exception as exc:  # noqa: BLE001 - no message may stop the node
                    self._drop(topic, [key], exc)
                    continue
                self.errors.pop(key, None)
                self.latest[key] = (value, received, sent)
                if key in self.frames:
                    self.frames[key].append(self.latest[key])
                if sent is not None:
                    self.age_at_arrival[key] = wall - sent
        return handle

    def _drop(self, topic: str, keys: list[str], exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (KeyError, ValueError)) else str(exc).strip("'\"")
        for key in keys:
            self.errors[key] = text
        self.dropped += 1
        self.log(f"drop:{topic}", f"dropped a malformed message on {topic} ({', '.join(keys)}): {text}")

    def _extract(self, key: str, msg) -> np.ndarray:
        if key in self.frames:
            return frame_from_message(msg)
        if key == "joint_pos":
            return reorder_by_name(msg.name, msg.position, self.joint_names)
        if key == "joint_vel":
            return reorder_by_name(msg.name, msg.velocity, self.joint_names)
        if key == "gripper_opening":
            return finite_values(msg.data, "gripper_opening", 1)
        p, q = msg.pose.position, msg.pose.orientation
        if key == "cube_pos":
            return finite_values([p.x, p.y, p.z], "cube position")
        quat = finite_values([q.w, q.x, q.y, q.z], "cube orientation")
        with np.errstate(over="ignore"):
            norm = float(np.linalg.norm(quat))
        if not 0.5 < norm < 1.5:
            raise ValueError(f"cube orientation is not a unit quaternion (norm {norm:.3g})")
        return quat

    def reset(self, min_stamp: float) -> None:
        """Forget every value; from now on ignore messages stamped before `min_stamp` (ROS time, s),
        e.g. observations of the previous episode still in flight after a scene reset."""
        self.latest.clear()
        self.age_at_arrival.clear()
        for frames in self.frames.values():
            frames.clear()
        self.min_stamp = min_stamp

    def aligned(self) -> dict[str, tuple[np.ndarray, float, float | None]]:
        """{key: (value, arrival, stamp)}: the latest value of each low-dim key, and of each camera the newest
        frame stamped at or before the observation time (the newest low-dim stamp; without one, the latest
        frame). A camera whose every kept frame is newer than that time gives its oldest kept frame."""
        chosen = {k: v for k, v in self.latest.items() if k not in self.frames}
        at = max((v[2] for v in chosen.values() if v[2] is not None), default=None)
        for key, frames in self.frames.items():
            if not frames:
                continue
            if at is None or frames[-1][2] is None:
                chosen[key] = frames[-1]
                continue
            before = [f for f in frames if f[2] is not None and f[2] <= at]
            chosen[key] = before[-1] if before else frames[0]
        return chosen

    def fresh(self, now: float, timeout: float) -> dict[str, np.ndarray] | None:
        """{key: value} (cameras aligned, see `aligned`) if the value of every key arrived within `timeout` s of
        `now` (monotonic), else None: a stale camera frame means no observation."""
        chosen = self.aligned()
        if any(k not in chosen or now - chosen[k][1] > timeout for k in self.keys):
            return None
        return {k: chosen[k][0] for k in self.keys}

    def why_not_fresh(self, now: float, timeout: float) -> str:
        """Why `fresh(now, timeout)` is None: the keys never received, stale or dropped, with topics."""
        reasons = []
        chosen = self.aligned()
        for key in self.keys:
            topic = self.topics[key]
            if key in self.errors:
                reasons.append(f"{key} on {topic}: messages dropped ({self.errors[key]})")
            elif key not in chosen:
                reasons.append(f"{key} on {topic}: nothing received yet")
            elif now - chosen[key][1] > timeout:
                reasons.append(f"{key} on {topic}: stale, the one used arrived {now - chosen[key][1]:.2f} s ago "
                               f"(obs_timeout {timeout:g} s)")
        return "; ".join(reasons) or "all observations are fresh"

    def observation_time(self, max_age: float | None = None) -> tuple[float | None, float | None]:
        """When the newest observation was taken, on this process's monotonic clock (s), and the clock
        offset found (s) if its stamp could not be trusted, else None.

        The header stamp (ROS time) is carried over to the monotonic clock by the difference of the two
        clocks at its arrival. If the stamp says the message was older than `max_age` s when it arrived
        (or from the future by more than that) although it arrived fresh, the sender's clock is off:
        the arrival time is used instead and the offset returned, so actions are never timed by a
        wrong clock.
        """
        stamped = [(v[2], k) for k, v in self.latest.items() if v[2] is not None]
        if not stamped:
            return None, None
        _, key = max(stamped)
        received, age = self.latest[key][1], self.age_at_arrival[key]
        if max_age is not None and abs(age) > max_age:
            return received, age
        return received - age, None

    def newest_stamp(self) -> float | None:
        """The newest header stamp among the keys (ROS time, s); None if no stamped message arrived."""
        return max((v[2] for v in self.latest.values() if v[2] is not None), default=None)


class TimingStats:
    """Per-tick timing of a node: control-period jitter, missed periods, observation-to-command latency.

    `publish(tick, sent, latency)` is called when a command goes out on the tick scheduled at
    `tick` (monotonic s), actually sent at `sent`. `summary()` gives, in ms: the jitter
    |interval - period| between commands of consecutive ticks, the number of missed periods (ticks
    without a command between the first and the last, not counting the gap after a `restart()`,
    e.g. an episode reset), and the latency = send time minus the header stamp of the newest
    observation.
    """

    def __init__(self, period: float):
        self.period = period
        self.ticks: list[int] = []
        self.sent: list[float] = []
        self.latencies: list[float] = []
        self.counters: dict[str, int] = {}
        self._origin: float | None = None
        self.segment: list[int] = []  # restarts before each command
        self.restarts = 0

    def restart(self) -> None:
        """The command stream restarts on purpose (e.g. a new episode): the gap is not a missed period."""
        self.restarts += 1

    def publish(self, tick: float, sent: float, latency: float | None = None) -> None:
        if self._origin is None:
            self._origin = tick
        self.ticks.append(int(round((tick - self._origin) / self.period)))
        self.segment.append(self.restarts)
        self.sent.append(sent)
        if latency is not None:
            self.latencies.append(latency)

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[name] = self.counters.get(name, 0) + n

    def summary(self) -> dict:
        out: dict = {"commands": len(self.sent), **self.counters}
        if len(self.sent) > 1:
            steps = np.diff(self.ticks)
            same = np.diff(self.segment) == 0
            consecutive = (steps == 1) & same
            out["missed_periods"] = int((steps[(steps > 1) & same] - 1).sum())
            if consecutive.any():
                jitter = np.abs(np.diff(self.sent)[consecutive] - self.period)
                out.update(jitter_median_ms=1e3 * float(np.median(jitter)),
                           jitter_p99_ms=1e3 * float(np.percentile(jitter, 99)), jitter_max_ms=1e3 * float(jitter.max()))
        if self.latencies:
            lat = np.array(self.latencies)
            out.update(latency_median_ms=1e3 * float(np.median(lat)), latency_p99_ms=1e3 * float(np.percentile(lat, 99)))
        return out

    def report(self, name: str) -> str:
        s = self.summary()
        lines = [f"[{name}] latency report: {s['commands']} commands at {1 / self.period:.1f} Hz"]
        if "jitter_p99_ms" in s:
            lines.append(f"  control-rate jitter |interval - period|: median {s['jitter_median_ms']:.2f} ms, "
                         f"p99 {s['jitter_p99_ms']:.2f} ms, max {s['jitter_max_ms']:.2f} ms; "
                         f"missed periods {s['missed_periods']}")
        if "latency_p99_ms" in s:
            lines.append(f"  observation-to-command latency: median {s['latency_median_ms']:.2f} ms, "
                         f"p99 {s['latency_p99_ms']:.2f} ms")
        if self.counters:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(self.counters.items())))
        return "\n".join(lines)


def spin(step: Callable[[float], bool], transport: Transport, rate_hz: float, stop: threading.Event | None = None) -> None:
    """Call `transport.spin_once()` then `step(now)` every 1 / rate_hz s on a fixed schedule until
    `step` returns False or `stop` is set. `now` is the scheduled tick time (monotonic, s); a late
    tick runs at once and the schedule skips the periods it missed."""
    stop = stop or threading.Event()
    period = 1.0 / rate_hz
    deadline = time.monotonic()
    while not stop.is_set():
        transport.spin_once()
        if step(deadline) is False:
            break
        deadline += period
        delay = deadline - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            deadline += period * np.floor(-delay / period)


def run(node_factory: Callable[[Transport], object], name: str, argv: list[str]) -> int:
    """Run a node until it finishes or gets SIGINT/SIGTERM, then print its report and close it.

    `node_factory(transport)` builds the node, which has `rate_hz`, `step(now) -> bool`,
    `report() -> str` and `close()`.
    A node whose parameters or files are invalid (a `ValueError`, `UserError`, `CheckpointError` or
    `FileNotFoundError` while it is built) prints one line naming the problem and returns 2.
    """
    from robolearn.ros.transport import make_transport

    transport = make_transport(name, argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = node_factory(transport)
    except (ValueError, UserError, CheckpointError, FileNotFoundError) as exc:
        print(f"[{name}] error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        transport.close()
        return 2
    try:
        spin(node.step, transport, node.rate_hz, stop)
    finally:
        print(node.report(), flush=True)
        node.close()
        transport.close()
    return 0
