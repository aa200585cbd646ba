"""Teleoperate a robot and record demonstrations from ROS topics into a zarr dataset.

    ros2 launch robolearn teleop_record.launch.py robot:=so101 device:=keyboard \
        trigger_topic:=/recorder/trigger output:=data/demos.zarr

The defaults (config/teleop_record.yaml) record the scripted expert on the simulated arm, episodes
started and ended by the simulated driver. Without ROS 2: `robolearn deploy graph=teleop_record`.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    params = LaunchConfiguration("params_file")
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
        Node(package="robolearn", executable="robot_driver_node", name="robot_driver", output="screen",
             parameters=[params, {"robot": LaunchConfiguration("robot"),
                                  "control_hz": LaunchConfiguration("control_hz")}]),
        Node(package="robolearn", executable="teleop_node", name="teleop_node", output="screen",
             parameters=[params, {"device": LaunchConfiguration("device"),
                                  "control_hz": LaunchConfiguration("control_hz")}]),
        Node(package="robolearn", executable="recorder_node", name="recorder_node", output="screen",
             parameters=[params, {"output": LaunchConfiguration("output"),
                                  "trigger_topic": LaunchConfiguration("trigger_topic"),
                                  "control_hz": LaunchConfiguration("control_hz")}]),
    ])
