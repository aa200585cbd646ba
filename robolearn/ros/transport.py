"""Publish/subscribe for robolearn's ROS 2 nodes: rclpy where installed, else cyclonedds with ROS 2's conventions.

Both transports give the nodes the same small interface (`Transport`): publishers, subscriptions
whose callbacks run in the node's own thread when it calls `spin_once()`, and node parameters.

The cyclonedds transport (`DdsTransport`) follows what rmw_cyclonedds does, so its topics
interoperate with ROS 2 nodes:
- ROS topic `/a/b` is DDS topic `rt/a/b`; type names are `<pkg>::msg::dds_::<Type>_` (see
  `robolearn.ros.msgs`), final XCDR1 structs without keys.
- QoS is set explicitly from ROS 2's profiles: default = reliable, volatile, keep-last 10;
  sensor data = best effort, volatile, keep-last 5; writers never auto-dispose.
- `ROS_DOMAIN_ID` selects the domain (default 0). Localhost-only discovery is honoured from
  `ROS_LOCALHOST_ONLY=1` (Humble) and `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` / `OFF` with
  `ROS_STATIC_PEERS` (Iron and later), emitting the Cyclone configuration rmw_cyclonedds emits.

`make_transport(node_name, argv)` picks rclpy when it can be imported (override with
`ROBOLEARN_TRANSPORT=dds` or `rclpy`).
"""

from __future__ import annotations

import abc
import array
import dataclasses
import importlib
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from robolearn.ros.msgs import MESSAGE_TYPES, ros_type_name


@dataclass(frozen=True)
class QoSProfile:
    """The ROS 2 QoS settings robolearn uses: reliability, durability, keep-last depth."""

    reliability: str = "reliable"  # reliable | best_effort
    durability: str = "volatile"  # volatile | transient_local
    depth: int = 10


#: rmw_qos_profile_default
DEFAULT_QOS = QoSProfile("reliable", "volatile", 10)
#: rmw_qos_profile_sensor_data: readers of streams use it, so they match reliable and best-effort writers
SENSOR_QOS = QoSProfile("best_effort", "volatile", 5)
#: announcements (episode starts and ends): reliable and transient-local, so a node that starts late
#: still gets the recent ones, in order
LATCHED_QOS = QoSProfile("reliable", "transient_local", 10)
#: e-stop and its reset: reliable, volatile (a late joiner must not inherit an old trip), depth 1
ESTOP_QOS = QoSProfile("reliable", "volatile", 1)
#: a state published on change (the driver's status): reliable, transient-local, depth 1, so a subscriber
#: that starts late (`ros2 topic echo`) gets the current state at once
STATE_QOS = QoSProfile("reliable", "transient_local", 1)


class TransportError(RuntimeError):
    """The transport could not be created (e.g. ROBOLEARN_TRANSPORT=rclpy without rclpy)."""


class Publisher(abc.ABC):
    @abc.abstractmethod
    def publish(self, msg) -> None: ...

    @abc.abstractmethod
    def subscription_count(self) -> int:
        """How many subscriptions (in any process) are matched to this publisher."""


class Transport(abc.ABC):
    """What a node needs from ROS 2: publishers, subscriptions, a spin, and its parameters."""

    name: str

    @abc.abstractmethod
    def create_publisher(self, topic: str, msg_type: type, qos: QoSProfile = DEFAULT_QOS) -> Publisher: ...

    @abc.abstractmethod
    def create_subscription(self, topic: str, msg_type: type, callback: Callable, qos: QoSProfile = SENSOR_QOS) -> None:
        """`callback(msg)` runs inside `spin_once()`, in the caller's thread."""

    @abc.abstractmethod
    def spin_once(self) -> int:
        """Deliver every message that has arrived to its callback; returns how many."""

    @abc.abstractmethod
    def parameters(self, defaults: dict) -> dict:
        """The node's parameters: `defaults` overridden by the parameter files and `-p name:=value`s."""

    def close(self) -> None:
        pass


def fully_qualified(topic: str) -> str:
    """ROS topic name with a leading slash ("joint_states" -> "/joint_states").

    Raises:
        ValueError: an empty name or one with characters ROS does not allow.
    """
    name = topic if topic.startswith("/") else "/" + topic
    if name == "/" or not all(c.isalnum() or c in "/_" for c in name) or "//" in name:
        raise ValueError(f"invalid ROS topic name {topic!r}")
    return name


def dds_topic_name(topic: str) -> str:
    """The DDS topic of a ROS topic: "/joint_states" -> "rt/joint_states"."""
    return "rt" + fully_qualified(topic)


# -- parameters without rclpy ------------------------------------------------------------
def parse_ros_args(argv: list[str], node_name: str, defaults: dict) -> dict:
    """Node parameters from a ROS 2 command line, resolved by ROS 2's rules (rcl + rclpy).

    Understands `--ros-args`, `--params-file FILE` (YAML with `/**:`, `<node>:` or `/<node>:` sections
    holding `ros__parameters`), `-p name:=value` and `-p <node>:name:=value` (YAML-typed values), and
    `-r __node:=name`. As in rcl, files and `-p`s are read in command-line order into per-node tables: a
    plain `-p` is a `/**` (wildcard) entry, `-p <node>:name:=value` an entry of that node. The node then
    gets the wildcard table's values, then its own table's: **a node's own section wins over any wildcard
    entry, wherever each appears** (so a plain `-p` does not beat the node's section of a parameter file,
    as with real rclpy); within one table the later source wins.

    An integer given for a float parameter is taken as that float (rclpy with dynamic typing does the
    same, see `RclpyTransport.parameters`); any other type change is refused. A name not in `defaults`
    is an error in the node's own table and in a `-p` (a misspelling), and ignored in a file's wildcard
    section (shared by several nodes).

    Raises:
        ValueError: an unknown parameter, a value whose type differs from its default's, or a
            malformed argument.
        FileNotFoundError: a parameter file that does not exist.
    """
    node_name = remapped_node_name(argv, node_name)  # a remap anywhere names the node for every section
    wildcard: list[tuple[str, object, str, bool]] = []  # (name, value, source, strict)
    own: list[tuple[str, object, str, bool]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg not in ("--params-file", "-p", "--param", "-r", "--remap"):
            i += 1
            continue
        if i + 1 >= len(argv):
            raise ValueError(f"{arg} needs a value")
        value = argv[i + 1]
        i += 2
        if arg == "--params-file":
            path = Path(value)
            for section, body in read_parameters_file(path).items():
                values = (body or {}).get("ros__parameters", {}) if isinstance(body, dict) else {}
                if section == "/**":
                    wildcard += [(k, v, f"{path} [/**]", False) for k, v in values.items()]
                elif str(section).lstrip("/") == node_name:
                    own += [(k, v, f"{path} [{section}]", True) for k, v in values.items()]
        elif arg in ("-p", "--param"):
            if ":=" not in value:
                raise ValueError(f"-p expects name:=value or node:name:=value, got {value!r}")
            key, raw = value.split(":=", 1)
            parsed = yaml.safe_load(raw) if raw != "" else ""
            if ":" in key:
                node, key = key.split(":", 1)
                if node == node_name:
                    own.append((key, parsed, f"-p {node}:", True))
            else:
                wildcard.append((key, parsed, "-p", True))
    params = dict(defaults)
    for key, value, source, strict in wildcard + own:
        if key in params or strict:
            params[key] = coerce_parameter(params, key, value, source)
    return params


def read_parameters_file(path: str | os.PathLike) -> dict:
    """A ROS 2 parameter file's content: {node name or "/**": {"ros__parameters": {...}}}.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: its YAML is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict):
        raise ValueError(f"parameter file {path} must map node names to ros__parameters")
    return content


def remapped_node_name(argv: list[str], node_name: str) -> str:
    """The node's name after a `-r __node:=name` remap on its ROS command line (the last one wins)."""
    for i, arg in enumerate(argv):
        if arg in ("-r", "--remap") and i + 1 < len(argv) and argv[i + 1].startswith("__node:="):
            node_name = argv[i + 1].split(":=", 1)[1]
    return node_name


def coerce_parameter(params: dict, key: str, value, source: str):
    """`value` for the declared parameter `key` (its default in `params` fixes the type): an int for a
    float becomes that float; lists stay lists.

    Raises:
        ValueError: `key` is not declared, or `value` has another type than its default.
    """
    if key not in params:
        raise ValueError(f"unknown parameter {key!r} (from {source}); known: {sorted(params)}")
    default = params[key]
    if isinstance(value, (tuple, array.array)):  # rclpy gives arrays of numbers as array.array
        value = list(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(default, list) and isinstance(value, list):
        pass
    elif default is not None and type(value) is not type(default):
        raise ValueError(f"parameter {key!r} (from {source}) must be {type(default).__name__}, got {value!r}")
    return value


# -- cyclonedds --------------------------------------------------------------------------
#: eProsima's DDS vendor id: Cyclone ignores the XTypes type information of Fast DDS peers. Fast DDS 3 (ROS 2
#: Kilted and later) sends type objects for sequence types that Cyclone >= 11 rejects as invalid, so without
#: this their JointState/Float64MultiArray/JointTrajectory endpoints never match (type names still must).
IGNORE_TYPE_INFORMATION_FROM = "1.15"


def discovery_config(env: typing.Mapping[str, str]) -> str:
    """The Cyclone DDS XML for these environment variables: what rmw_cyclonedds would use for discovery
    (localhost only from `ROS_LOCALHOST_ONLY=1` or `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`/`OFF`, static
    peers from `ROS_STATIC_PEERS`; else Cyclone's defaults), plus compatibility with Fast DDS peers'
    type information (`IGNORE_TYPE_INFORMATION_FROM`)."""
    discovery_range = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper()
    localhost = env.get("ROS_LOCALHOST_ONLY", "") == "1" or discovery_range in ("LOCALHOST", "OFF")
    peers = [p for p in env.get("ROS_STATIC_PEERS", "").replace(",", ";").split(";") if p.strip()]
    compatibility = ("<Compatibility><IgnoreTypeInformation>" + IGNORE_TYPE_INFORMATION_FROM +
                     "</IgnoreTypeInformation></Compatibility>")
    if not localhost and not peers:
        return "<CycloneDDS><Domain Id=\"any\">" + compatibility + "</Domain></CycloneDDS>"
    peer_xml = "".join(f'<Peer address="{p.strip()}"/>' for p in (["localhost"] if localhost else []) + peers)
    tag = f"<Tag>robolearn_{os.getpid()}</Tag>" if discovery_range == "OFF" else ""
    interface = '<Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>' if localhost else ""
    return ("<CycloneDDS><Domain Id=\"any\"><General>" + interface + "<AllowMulticast>false</AllowMulticast>"
            "</General>" + compatibility + "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
            "<MaxAutoParticipantIndex>32</MaxAutoParticipantIndex><Peers>" + peer_xml + "</Peers>" + tag +
            "</Discovery></Domain></CycloneDDS>")


def _dds_qos(profile: QoSProfile, writer: bool):
    from cyclonedds.qos import Policy, Qos
    from cyclonedds.util import duration

    reliability = (Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
                   if profile.reliability == "reliable" else Policy.Reliability.BestEffort)
    durability = Policy.Durability.TransientLocal if profile.durability == "transient_local" else Policy.Durability.Volatile
    policies = [reliability, durability, Policy.History.KeepLast(profile.depth)]
    if writer:
        policies.append(Policy.WriterDataLifecycle(autodispose=False))
    return Qos(*policies)


class _DdsPublisher(Publisher):
    def __init__(self, writer, msg_type: type):
        self.writer, self.msg_type = writer, msg_type

    def publish(self, msg) -> None:
        if not isinstance(msg, self.msg_type):
            raise TypeError(f"this publisher sends {self.msg_type.__name__}, got {type(msg).__name__}")
        self.writer.write(msg)

    def subscription_count(self) -> int:
        return len(self.writer.get_matched_subscriptions())


class DdsTransport(Transport):
    """ROS 2-compatible pub/sub on cyclonedds (no ROS installation needed); see the module docstring.

    Args:
        name: the node name (used in messages and for its parameter section).
        argv: the node's ROS command line (parameters; see `parse_ros_args`).
        env: environment variables to read (default os.environ).
    """

    def __init__(self, name: str, argv: list[str] | None = None, env: typing.Mapping[str, str] | None = None):
        from cyclonedds.domain import Domain, DomainParticipant
        from cyclonedds.qos import Policy, Qos

        from robolearn.ros.graph import USER_DATA, GraphAnnouncer

        env = os.environ if env is None else env
        self.argv = list(argv or [])
        self.name = remapped_node_name(self.argv, name)
        self.domain_id = int(env.get("ROS_DOMAIN_ID", "0") or 0)
        if not 0 <= self.domain_id <= 232:
            raise TransportError(f"ROS_DOMAIN_ID must be in 0..232, got {self.domain_id}")
        self._domain = Domain(self.domain_id, discovery_config(env))
        self.participant = DomainParticipant(self.domain_id, qos=Qos(Policy.Userdata(USER_DATA)))
        self._topics: dict[str, object] = {}
        self._readers: list[tuple[object, type, Callable]] = []
        self.graph = GraphAnnouncer(self.participant, self.name.lstrip("/"))  # ROS 2 tools see the node

    def _topic(self, topic: str, msg_type: type):
        from cyclonedds.topic import Topic

        name = dds_topic_name(topic)
        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, msg_type)
        return self._topics[name]

    def create_publisher(self, topic: str, msg_type: type, qos: QoSProfile = DEFAULT_QOS) -> Publisher:
        from cyclonedds.pub import DataWriter

        writer = DataWriter(self.participant, self._topic(topic, msg_type), qos=_dds_qos(qos, True))
        self.graph.add(writer, is_writer=True)
        return _DdsPublisher(writer, msg_type)

    def create_subscription(self, topic: str, msg_type: type, callback: Callable, qos: QoSProfile = SENSOR_QOS) -> None:
        from cyclonedds.sub import DataReader

        reader = DataReader(self.participant, self._topic(topic, msg_type), qos=_dds_qos(qos, False))
        self.graph.add(reader, is_writer=False)
        self._readers.append((reader, msg_type, callback))

    def spin_once(self) -> int:
        n = 0
        for reader, msg_type, callback in self._readers:
            for sample in reader.take(N=256):
                if isinstance(sample, msg_type):  # skip instance-state notices (no data)
                    callback(sample)
                    n += 1
        return n

    def parameters(self, defaults: dict) -> dict:
        return parse_ros_args(self.argv, self.name, defaults)  # (parse_ros_args applies the same remap)

    def close(self) -> None:
        self._readers.clear()
        self._topics.clear()
        self.participant = None
        self._domain = None


# -- rclpy -------------------------------------------------------------------------------
def _ros_class(msg_type: type):
    pkg, kind, name = ros_type_name(msg_type).split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def to_rclpy(msg):
    """A robolearn message struct -> the rclpy message of the same ROS type (recursively)."""
    out = _ros_class(type(msg))()
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_rclpy(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [to_rclpy(v) for v in value]
        setattr(out, f.name, value)
    return out


def from_rclpy(ros_msg, msg_type: type):
    """An rclpy message -> the robolearn struct `msg_type` (recursively)."""
    hints = typing.get_type_hints(msg_type)
    values = {}
    for f in dataclasses.fields(msg_type):
        value, hint = getattr(ros_msg, f.name), hints[f.name]
        if hint in MESSAGE_TYPES.values():
            value = from_rclpy(value, hint)
        else:
            element = _sequence_element(hint)
            if element in MESSAGE_TYPES.values():
                value = [from_rclpy(v, element) for v in value]
            elif element is not None:
                value = list(value)
        values[f.name] = value
    return msg_type(**values)


def _sequence_element(hint):
    """The element type of a `Sequence[...]` annotation, else None."""
    if typing.get_origin(hint) in (list, typing.get_origin(typing.Sequence[int])):
        return typing.get_args(hint)[0]
    return None


class RclpyTransport(Transport):
    """The same interface over rclpy (used where ROS 2 is installed and sourced)."""

    def __init__(self, name: str, argv: list[str] | None = None):
        import rclpy

        self._rclpy = rclpy
        if not rclpy.ok():
            rclpy.init(args=argv)
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name)
        self.name = self.node.get_name()
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._delivered = 0

    @staticmethod
    def _qos(profile: QoSProfile):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
        from rclpy.qos import QoSProfile as RosQoS

        return RosQoS(history=HistoryPolicy.KEEP_LAST, depth=profile.depth,
                      reliability=ReliabilityPolicy.RELIABLE if profile.reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if profile.durability == "transient_local"
                      else DurabilityPolicy.VOLATILE)

    def create_publisher(self, topic: str, msg_type: type, qos: QoSProfile = DEFAULT_QOS) -> Publisher:
        pub = self.node.create_publisher(_ros_class(msg_type), fully_qualified(topic), self._qos(qos))

        class _Pub(Publisher):
            def publish(self, msg) -> None:
                pub.publish(to_rclpy(msg))

            def subscription_count(self) -> int:
                return pub.get_subscription_count()

        return _Pub()

    def create_subscription(self, topic: str, msg_type: type, callback: Callable, qos: QoSProfile = SENSOR_QOS) -> None:
        def deliver(ros_msg):
            self._delivered += 1
            callback(from_rclpy(ros_msg, msg_type))

        self.node.create_subscription(_ros_class(msg_type), fully_qualified(topic), deliver, self._qos(qos))

    def spin_once(self) -> int:
        """Deliver what has arrived (at most 1000 messages per call; returns how many).

        rclpy's executor runs one callback per `spin_once`, taking one message per ready subscription
        from each wait; the call after the last of a wait's callbacks only ends that wait and delivers
        nothing. So an empty call does not mean the queues are empty: two empty calls in a row do (the
        second one a fresh wait), unless a wait's remaining callbacks were services or guard conditions,
        which deliver nothing: then what is left waits for the next tick. Stopping at the first empty call
        took one message per subscription per tick, and a backlog stayed queued, ageing every observation
        by periods.
        """
        start, empty = self._delivered, 0
        while empty < 2 and self._delivered - start < 1000:
            before = self._delivered
            self._executor.spin_once(timeout_sec=0.0)
            empty = empty + 1 if self._delivered == before else 0
        return self._delivered - start

    def parameters(self, defaults: dict) -> dict:
        """Declare every parameter (so `ros2 param` and the parameter services show them) and resolve it
        by rcl's rules. Declared with dynamic typing so that an integer for a float parameter
        (`-p control_hz:=30`) is taken as that float, as on the DDS transport; other type changes are
        refused with the same error (`coerce_parameter`).

        Raises:
            ValueError: a value whose type differs from its default's.
        """
        from rcl_interfaces.msg import ParameterDescriptor
        from rclpy.parameter import Parameter

        params = dict(defaults)
        for key, default in defaults.items():
            value = self.node.declare_parameter(key, default, ParameterDescriptor(dynamic_typing=True)).value
            params[key] = coerce_parameter(defaults, key, value, "the node's parameter overrides")
            if params[key] is not value and not isinstance(params[key], list):
                self.node.set_parameters([Parameter(key, value=params[key])])
        return params

    def close(self) -> None:
        self.node.destroy_node()
        if self._rclpy.ok():
            self._rclpy.shutdown()


def make_transport(name: str, argv: list[str] | None = None) -> Transport:
    """rclpy if it can be imported (or ROBOLEARN_TRANSPORT=rclpy), else cyclonedds (ROBOLEARN_TRANSPORT=dds).

    Raises:
        TransportError: ROBOLEARN_TRANSPORT has an unknown value, or asks for rclpy where it is missing.
    """
    choice = os.environ.get("ROBOLEARN_TRANSPORT", "auto")
    if choice not in ("auto", "dds", "rclpy"):
        raise TransportError(f"ROBOLEARN_TRANSPORT must be auto, dds or rclpy, got {choice!r}")
    if choice != "dds":
        try:
            importlib.import_module("rclpy")
        except ImportError:
            if choice == "rclpy":
                raise TransportError("ROBOLEARN_TRANSPORT=rclpy but rclpy is not importable "
                                     "(source your ROS 2 setup.bash)") from None
        else:
            return RclpyTransport(name, argv)
    return DdsTransport(name, argv)
