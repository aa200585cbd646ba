"""Teleoperate a robot and record demonstrations from ROS topics into a zarr dataset.

    ros2 launch robolearn teleop_record.launch.py robot:=so101 device:=keyboard \
        trigger_topic:=/recorder/trigger output:=data/demos.zarr

The defaults (config/teleop_record.yaml) record the scripted expert on the simulated arm, episodes
started and ended by the simulated driver. Without ROS 2: `robolearn deploy graph=teleop_record`.

Launch arguments override the parameter file in each node's own section of one generated file, so
they win under ROS 2's rules.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from robolearn.ros.params import launch_nodes

NODES = [("robot_driver_node", "robot_driver"), ("teleop_node", "teleop_node"), ("recorder_node", "recorder_node")]
#: node -> {parameter: the launch argument that sets it}
OVERRIDES = {"robot_driver": {"robot": "robot", "control_hz": "control_hz"},
             "teleop_node": {"device": "device", "control_hz": "control_hz"},
             "recorder_node": {"output": "output", "trigger_topic": "trigger_topic", "control_hz": "control_hz"}}


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution(
            [FindPackageShare("robolearn"), "config", "teleop_record.yaml"]), description="node parameters (YAML)"),
        DeclareLaunchArgument("robot", default_value="sim", description="sim | so101 | koch"),
        DeclareLaunchArgument("device", default_value="expert",
                              description="keyboard | gamepad | spacemouse | leader | expert"),
        DeclareLaunchArgument("output", default_value="data/ros_demos.zarr", description="zarr dataset to append to"),
        DeclareLaunchArgument("trigger_topic", default_value="/robolearn/episode",
                              description="episode start/stop topic the recorder follows"),
        DeclareLaunchArgument("control_hz", default_value="20.0", description="control rate, Hz"),
        OpaqueFunction(function=launch_nodes, kwargs={"params_file": "params_file", "nodes": NODES,
                                                      "overrides": OVERRIDES}),
    ])
