"""ROS 2 wire compatibility: every message robolearn's nodes use serializes byte for byte as rosbags'
ROS 2 CDR serializer does (Humble and Jazzy definitions), and decodes rosbags' bytes."""

import dataclasses

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from robolearn.ros.msgs import (
    MESSAGE_TYPES,
    Bool,
    CompressedImage,
    Duration,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    JointTrajectory,
    JointTrajectoryPoint,
    MultiArrayDimension,
    MultiArrayLayout,
    Point,
    Pose,
    PoseStamped,
    Quaternion,
    String,
    Time,
)
from robolearn.ros.transport import dds_topic_name, discovery_config, parse_ros_args

HEADER = Header(stamp=Time(sec=1_700_000_123, nanosec=456_789), frame_id="base_link")
EXAMPLES = [
    Time(sec=-3, nanosec=999_999_999), Duration(sec=0, nanosec=50_000_000), HEADER, Header(),
    Bool(True), Bool(False), String(""), String("start 3 100003"), String("héllo"),
    MultiArrayDimension("rows", 2, 12), MultiArrayLayout(dim=[MultiArrayDimension("a", 1, 1)] * 2, data_offset=1),
    Float64MultiArray(data=[0.1, -2.5, 3.0, 1e-9, 0.0, 7.25]), Float64MultiArray(),
    Float64MultiArray(layout=MultiArrayLayout(dim=[MultiArrayDimension("joints", 6, 6)], data_offset=2), data=[1.0]),
    JointState(header=HEADER, name=["shoulder_pan", "gripper"], position=[0.5, -0.25], velocity=[0.0, 1.5], effort=[]),
    JointState(),
    Point(1.0, -2.0, 0.5), Quaternion(0.0, 0.0, 0.38268343, 0.92387953), Pose(),
    PoseStamped(header=HEADER, pose=Pose(Point(0.2, -0.05, 0.015), Quaternion(0.0, 0.0, 0.1, 0.995))),
    JointTrajectoryPoint(positions=[0.1, 0.2], time_from_start=Duration(0, 50_000_000)),
    JointTrajectory(header=Header(), joint_names=["a", "bb", "ccc"],
                    points=[JointTrajectoryPoint(positions=[1.0, 2.0, 3.0], velocities=[0.0, 0.0, 0.0],
                                                 time_from_start=Duration(1, 5)),
                            JointTrajectoryPoint(positions=[1.5, 2.5, 3.5], effort=[0.5],
                                                 time_from_start=Duration(2, 0))]),
    Image(header=HEADER, height=2, width=3, encoding="rgb8", step=9, data=list(range(18))), Image(),
    Image(height=1, width=1, encoding="mono8", step=1, data=[255]),  # an odd length: alignment of what follows
    CompressedImage(header=HEADER, format="jpeg", data=[0xFF, 0xD8, 0xFF, 0xD9, 7]), CompressedImage(),
]


def ros_type(msg):
    return next(name for name, cls in MESSAGE_TYPES.items() if cls is type(msg))


def to_rosbags(store, msg):
    """The same message built with rosbags' own classes (independently of our structs)."""
    cls = store.types[ros_type(msg)]
    values = {}
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_rosbags(store, v)
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            v = [to_rosbags(store, e) for e in v]
        elif isinstance(v, list) and f.name == "data" and ros_type(msg).startswith("sensor_msgs"):
            v = np.array(v, dtype=np.uint8)
        elif isinstance(v, list) and f.name not in ("name", "joint_names"):
            v = np.array(v, dtype=np.float64)
        values[f.name] = v
    return cls(**values)


@pytest.mark.parametrize("store_name", [Stores.ROS2_HUMBLE, Stores.ROS2_JAZZY])
@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_bytes_match_ros2_cdr(store_name, msg):
    store = get_typestore(store_name)
    ours = msg.serialize()
    theirs = bytes(store.serialize_cdr(to_rosbags(store, msg), ros_type(msg)))
    assert ours[:4] == b"\x00\x01\x00\x00"  # CDR little endian, as rmw_cyclonedds writes
    assert ours == theirs
    assert type(msg).deserialize(theirs) == msg


def test_every_message_type_is_covered_and_named_as_ros2_does():
    assert {type(m) for m in EXAMPLES} == set(MESSAGE_TYPES.values())
    assert JointState.__idl_typename__ == "sensor_msgs::msg::dds_::JointState_"
    assert JointTrajectory.__idl_typename__ == "trajectory_msgs::msg::dds_::JointTrajectory_"
    assert JointState.__idl_annotations__["extensibility"] == "final"
    assert dds_topic_name("/joint_states") == "rt/joint_states"
    assert dds_topic_name("position_controller/commands") == "rt/position_controller/commands"
    with pytest.raises(ValueError, match="invalid ROS topic name"):
        dds_topic_name("bad topic")


def test_discovery_configuration_follows_ros_environment():
    default = discovery_config({})  # Cyclone's own discovery, with Fast DDS type information ignored
    assert "<Peers>" not in default and "<NetworkInterface" not in default
    assert "<IgnoreTypeInformation>1.15</IgnoreTypeInformation>" in default
    for env in ({"ROS_LOCALHOST_ONLY": "1"}, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}):
        xml = discovery_config(env)
        assert "<IgnoreTypeInformation>1.15</IgnoreTypeInformation>" in xml
        assert '<NetworkInterface address="127.0.0.1"/>' in xml and "<AllowMulticast>false</AllowMulticast>" in xml
        assert '<Peer address="localhost"/>' in xml
    xml = discovery_config({"ROS_STATIC_PEERS": "192.168.1.5;robot.local"})
    assert '<Peer address="192.168.1.5"/>' in xml and '<Peer address="robot.local"/>' in xml
    assert "<Tag>" in discovery_config({"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"})


def test_parameters_from_ros_arguments(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    control_hz: 30\n"
                      "policy_node:\n  ros__parameters:\n    checkpoint: a/b\n    joint_names: [x, y]\n"
                      "other_node:\n  ros__parameters:\n    checkpoint: wrong\n")
    defaults = {"control_hz": 20.0, "checkpoint": "", "joint_names": ["a"], "rerank_k": 16}
    got = parse_ros_args(["--ros-args", "--params-file", str(params), "-p", "rerank_k:=4"], "policy_node", defaults)
    assert got == {"control_hz": 30.0, "checkpoint": "a/b", "joint_names": ["x", "y"], "rerank_k": 4}
    renamed = parse_ros_args(["--ros-args", "-r", "__node:=other_node", "--params-file", str(params)],
                             "policy_node", defaults)
    assert renamed["checkpoint"] == "wrong"
    with pytest.raises(ValueError, match="unknown parameter 'k'"):
        parse_ros_args(["-p", "k:=1"], "policy_node", defaults)
    with pytest.raises(ValueError, match="parameter 'rerank_k' .* must be int"):
        parse_ros_args(["-p", "rerank_k:=fast"], "policy_node", defaults)


def test_ros2_parameter_rules_without_rclpy(tmp_path):
    """ROS 2's rules (checked against real rclpy in tests/ros2_real): a node's own section beats every wildcard
    entry wherever it appears, a plain -p is a wildcard entry, `-p node:name:=v` is the node's own, and within
    one section the later source wins."""
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    a: 1\n    b: 1\n    shared_by_other_nodes: 3\n"
                      "policy_node:\n  ros__parameters:\n    a: 2\n")
    defaults = {"a": 0, "b": 0, "control_hz": 20.0}
    assert parse_ros_args(["--params-file", str(params), "-p", "a:=9", "-p", "b:=9"], "policy_node", defaults) \
        == {"a": 2, "b": 9, "control_hz": 20.0}
    assert parse_ros_args(["-p", "b:=9", "--params-file", str(params)], "policy_node", defaults)["b"] == 1
    assert parse_ros_args(["--params-file", str(params), "-p", "policy_node:a:=9", "-p", "other:a:=5"],
                          "policy_node", defaults)["a"] == 9
    assert parse_ros_args(["-p", "control_hz:=30"], "policy_node", defaults)["control_hz"] == 30.0  # int for float
    with pytest.raises(ValueError, match="unknown parameter 'z'"):
        parse_ros_args(["-p", "policy_node:z:=1"], "policy_node", defaults)


def test_deploy_parameter_file_puts_overrides_in_node_sections(tmp_path):
    from robolearn.ros.params import (
        merged_parameters,
        typed_launch_arguments,
        write_parameters_file,
    )

    base = tmp_path / "graph.yaml"
    base.write_text("/**:\n  ros__parameters:\n    control_hz: 20.0\n"
                    "policy_node:\n  ros__parameters:\n    checkpoint: ''\n"
                    "/robot_driver:\n  ros__parameters:\n    episodes: 10\n")
    overrides = {"policy_node": {"checkpoint": "/ckpt"}, "robot_driver": {"episodes": 1}, "teleop_node": {}}
    merged = merged_parameters(base, overrides)
    assert merged["policy_node"]["ros__parameters"] == {"checkpoint": "/ckpt"}
    assert merged["/robot_driver"]["ros__parameters"] == {"episodes": 1} and "teleop_node" not in merged
    path = write_parameters_file(base, overrides, folder=tmp_path)
    for node, key, expected in (("policy_node", "checkpoint", "/ckpt"), ("robot_driver", "episodes", 1)):
        got = parse_ros_args(["--params-file", str(path)], node, {"checkpoint": "", "episodes": 0, "control_hz": 0.0})
        assert got[key] == expected and got["control_hz"] == 20.0
    typed = typed_launch_arguments("policy_node", {"checkpoint": "123", "control_hz": "30", "rerank_k": "8"})
    assert typed == {"checkpoint": "123", "control_hz": 30.0, "rerank_k": 8}  # a text parameter stays text
    with pytest.raises(ValueError, match="must be int"):
        typed_launch_arguments("policy_node", {"rerank_k": "many"})
