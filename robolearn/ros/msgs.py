"""ROS 2 message types as cyclonedds IDL structs, byte-compatible with ROS 2's CDR encoding.

Each struct copies its ROS 2 message field for field, in order, with final extensibility, no keys
and no optional members, under the DDS type name ROS 2 uses (`<pkg>::msg::dds_::<Type>_`), so
cyclonedds writes exactly the XCDR1 bytes rmw_cyclonedds and rmw_fastrtps exchange (checked
against the `rosbags` serializer in tests/test_ros_msgs.py). Field names and defaults follow the
.msg definitions; sequences of float64 take Python lists.

`MESSAGE_TYPES` maps the ROS type name ("sensor_msgs/msg/JointState") to the struct.

(No `from __future__ import annotations` here: cyclonedds resolves the field annotations itself.)
"""

import math
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32


def _dds_name(ros_type: str) -> str:
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


@dataclass
@final
class Time(IdlStruct, typename=_dds_name("builtin_interfaces/msg/Time")):
    """builtin_interfaces/msg/Time: seconds and nanoseconds since the Unix epoch (ROS time).
    `Time.from_seconds(t)` and `.to_seconds()` convert from and to float seconds."""

    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
@final
class Duration(IdlStruct, typename=_dds_name("builtin_interfaces/msg/Duration")):
    """builtin_interfaces/msg/Duration; `from_seconds` / `to_seconds` as for Time."""

    sec: int32 = 0
    nanosec: uint32 = 0


def _from_seconds(cls, t: float):
    sec = math.floor(t)
    return cls(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def _to_seconds(self) -> float:
    return self.sec + self.nanosec * 1e-9


# Attached after the class bodies: cyclonedds' type builder walks every base class of an IDL struct,
# so the two cannot share a mixin.
for _cls in (Time, Duration):
    _cls.from_seconds = classmethod(_from_seconds)
    _cls.to_seconds = _to_seconds


@dataclass
@final
class Header(IdlStruct, typename=_dds_name("std_msgs/msg/Header")):
    """std_msgs/msg/Header (ROS 2 has no seq)."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
@final
class Bool(IdlStruct, typename=_dds_name("std_msgs/msg/Bool")):
    """std_msgs/msg/Bool."""

    data: bool = False


@dataclass
@final
class String(IdlStruct, typename=_dds_name("std_msgs/msg/String")):
    """std_msgs/msg/String."""

    data: str = ""


@dataclass
@final
class MultiArrayDimension(IdlStruct, typename=_dds_name("std_msgs/msg/MultiArrayDimension")):
    """std_msgs/msg/MultiArrayDimension."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
@final
class MultiArrayLayout(IdlStruct, typename=_dds_name("std_msgs/msg/MultiArrayLayout")):
    """std_msgs/msg/MultiArrayLayout."""

    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
@final
class Float64MultiArray(IdlStruct, typename=_dds_name("std_msgs/msg/Float64MultiArray")):
    """std_msgs/msg/Float64MultiArray (ros2_control's forward command controllers: `<controller>/commands`)."""

    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float64] = field(default_factory=list)


@dataclass
@final
class JointState(IdlStruct, typename=_dds_name("sensor_msgs/msg/JointState")):
    """sensor_msgs/msg/JointState: position rad, velocity rad/s, effort N m, matched by `name`."""

    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
@final
class Point(IdlStruct, typename=_dds_name("geometry_msgs/msg/Point")):
    """geometry_msgs/msg/Point, m."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
@final
class Quaternion(IdlStruct, typename=_dds_name("geometry_msgs/msg/Quaternion")):
    """geometry_msgs/msg/Quaternion (x, y, z, w order on the wire; identity by default)."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@dataclass
@final
class Pose(IdlStruct, typename=_dds_name("geometry_msgs/msg/Pose")):
    """geometry_msgs/msg/Pose."""

    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
@final
class PoseStamped(IdlStruct, typename=_dds_name("geometry_msgs/msg/PoseStamped")):
    """geometry_msgs/msg/PoseStamped."""

    header: Header = field(default_factory=Header)
    pose: Pose = field(default_factory=Pose)


@dataclass
@final
class JointTrajectoryPoint(IdlStruct, typename=_dds_name("trajectory_msgs/msg/JointTrajectoryPoint")):
    """trajectory_msgs/msg/JointTrajectoryPoint; `time_from_start` is relative to the header stamp."""

    positions: sequence[float64] = field(default_factory=list)
    velocities: sequence[float64] = field(default_factory=list)
    accelerations: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
@final
class JointTrajectory(IdlStruct, typename=_dds_name("trajectory_msgs/msg/JointTrajectory")):
    """trajectory_msgs/msg/JointTrajectory (`<controller>/joint_trajectory`); a zero stamp means "start now"."""

    header: Header = field(default_factory=Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[JointTrajectoryPoint] = field(default_factory=list)


@dataclass
@final
class Image(IdlStruct, typename=_dds_name("sensor_msgs/msg/Image")):
    """sensor_msgs/msg/Image: `height` x `width` px, `encoding` (robolearn sends "rgb8"), `step` bytes per
    row, `data` the row-major pixel bytes (a list of ints or a bytes object when sending; a list when received).
    `robolearn.ros.images` converts from and to numpy frames."""

    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = ""
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = field(default_factory=list)


@dataclass
@final
class CompressedImage(IdlStruct, typename=_dds_name("sensor_msgs/msg/CompressedImage")):
    """sensor_msgs/msg/CompressedImage: `format` ("jpeg" or "png", as image_transport's compressed plugin
    writes it, e.g. "rgb8; jpeg compressed bgr8") and the encoded bytes in `data`."""

    header: Header = field(default_factory=Header)
    format: str = ""
    data: sequence[uint8] = field(default_factory=list)


#: ROS type name -> struct, for every message robolearn's nodes use.
MESSAGE_TYPES = {
    "builtin_interfaces/msg/Time": Time, "builtin_interfaces/msg/Duration": Duration,
    "std_msgs/msg/Header": Header, "std_msgs/msg/Bool": Bool, "std_msgs/msg/String": String,
    "std_msgs/msg/MultiArrayDimension": MultiArrayDimension, "std_msgs/msg/MultiArrayLayout": MultiArrayLayout,
    "std_msgs/msg/Float64MultiArray": Float64MultiArray, "sensor_msgs/msg/JointState": JointState,
    "geometry_msgs/msg/Point": Point, "geometry_msgs/msg/Quaternion": Quaternion, "geometry_msgs/msg/Pose": Pose,
    "geometry_msgs/msg/PoseStamped": PoseStamped, "trajectory_msgs/msg/JointTrajectoryPoint": JointTrajectoryPoint,
    "trajectory_msgs/msg/JointTrajectory": JointTrajectory, "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CompressedImage": CompressedImage,
}


def ros_type_name(msg_type: type) -> str:
    """The ROS type name of a struct: JointState -> "sensor_msgs/msg/JointState"."""
    for name, cls in MESSAGE_TYPES.items():
        if cls is msg_type:
            return name
    raise KeyError(f"{msg_type.__name__} is not a robolearn ROS message type")
