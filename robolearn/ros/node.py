"""What robolearn's ROS 2 nodes share: the fixed-rate spin loop, timing statistics, and the
mapping between ROS topics and the observation keys of a task.

Observation keys and their topics (parameters `<key>_topic`, or `joint_states_topic`):
    joint_pos        sensor_msgs/JointState `position`, matched by joint name (never by index), rad
    joint_vel        sensor_msgs/JointState `velocity`, by joint name, rad/s
    gripper_opening  std_msgs/Float64MultiArray `data` (1,), m
    cube_pos         geometry_msgs/PoseStamped position (3,), m
    cube_quat        geometry_msgs/PoseStamped orientation as (w, x, y, z) (ROS sends x, y, z, w)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import numpy as np

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
                  "cube_pose_topic": "/cube_pose"}


def stamp(wall_time: float | None = None) -> Header:
    """A header stamped with ROS time (the Unix epoch clock), s."""
    return Header(stamp=Time.from_seconds(time.time() if wall_time is None else wall_time))


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
    return np.array([values[index[n]] for n in joint_names], dtype=np.float64)


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

    Raises:
        ValueError: a key no topic provides.
    """

    def __init__(self, transport: Transport, keys, params: dict, joint_names):
        unknown = [k for k in keys if k not in OBSERVATION_TOPICS]
        if unknown:
            raise ValueError(f"no ROS topic provides observation {unknown}; supported: {sorted(OBSERVATION_TOPICS)}")
        self.keys, self.joint_names = list(keys), list(joint_names)
        self.latest: dict[str, tuple[np.ndarray, float, float | None]] = {}
        self.errors: dict[str, str] = {}
        self.min_stamp = -np.inf
        topics = {}
        for key in self.keys:
            param, msg_type = OBSERVATION_TOPICS[key]
            topics.setdefault((params[param], msg_type), []).append(key)
        for (topic, msg_type), keys_here in topics.items():
            transport.create_subscription(topic, msg_type, self._handler(msg_type, keys_here), SENSOR_QOS)

    def _handler(self, msg_type: type, keys: list[str]) -> Callable:
        def handle(msg) -> None:
            received = time.monotonic()
            sent = msg.header.stamp.to_seconds() if hasattr(msg, "header") else None  # None: no header
            if sent is not None and sent < self.min_stamp:
                return  # taken before the scene was reset
            for key in keys:
                try:
                    value = self._extract(key, msg)
                except (KeyError, ValueError) as exc:
                    self.errors[key] = str(exc)
                    continue
                self.latest[key] = (value, received, sent)
        return handle

    def _extract(self, key: str, msg) -> np.ndarray:
        if key == "joint_pos":
            return reorder_by_name(msg.name, msg.position, self.joint_names)
        if key == "joint_vel":
            return reorder_by_name(msg.name, msg.velocity, self.joint_names)
        if key == "gripper_opening":
            return np.asarray(msg.data[:1], dtype=np.float64)
        p, q = msg.pose.position, msg.pose.orientation
        return np.array([p.x, p.y, p.z]) if key == "cube_pos" else np.array([q.w, q.x, q.y, q.z])

    def reset(self, min_stamp: float) -> None:
        """Forget every value; from now on ignore messages stamped before `min_stamp` (ROS time, s),
        e.g. observations of the previous episode still in flight after a scene reset."""
        self.latest.clear()
        self.min_stamp = min_stamp

    def fresh(self, now: float, timeout: float) -> dict[str, np.ndarray] | None:
        """{key: value} if every key arrived within `timeout` s of `now` (monotonic), else None."""
        if any(k not in self.latest or now - self.latest[k][1] > timeout for k in self.keys):
            return None
        return {k: self.latest[k][0] for k in self.keys}

    def observation_time(self) -> float | None:
        """When the newest observation was taken, on this process's monotonic clock (s): its header
        stamp (ROS time) carried over by the difference of the two clocks now."""
        newest = self.newest_stamp()
        return None if newest is None else time.monotonic() - (time.time() - newest)

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
    """
    from robolearn.ros.transport import make_transport

    transport = make_transport(name, argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = node_factory(transport)
    try:
        spin(node.step, transport, node.rate_hz, stop)
    finally:
        print(node.report(), flush=True)
        node.close()
        transport.close()
    return 0
