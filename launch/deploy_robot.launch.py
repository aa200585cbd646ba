"""A real arm on a servo bus (robot_driver) driven by a trained policy (policy_node).

    ros2 launch robolearn deploy_robot.launch.py checkpoint:=... robot:=so101 port:=/dev/ttyACM0

Parameters come from config/deploy_robot.yaml (params_file:=... for another); the arguments below
override them. The task's other observations (e.g. /cube_pose) come from the rest of your ROS 2
system. Publish std_msgs/Bool true on /e_stop to stop (hold) and on /e_stop/reset to resume.
Without ROS 2: `robolearn deploy graph=robot checkpoint=...`.
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
            [FindPackageShare("robolearn"), "config", "deploy_robot.yaml"]), description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", description="policy checkpoint folder"),
        DeclareLaunchArgument("value", default_value="", description="Q-function checkpoint for re-ranking (optional)"),
        DeclareLaunchArgument("robot", default_value="so101", description="hardware config: so101 | koch"),
        DeclareLaunchArgument("port", default_value="", description="serial port (empty: the hardware config's)"),
        DeclareLaunchArgument("control_hz", default_value="20.0", description="control rate, Hz"),
        Node(package="robolearn", executable="robot_driver_node", name="robot_driver", output="screen",
             parameters=[params, {"robot": LaunchConfiguration("robot"), "port": LaunchConfiguration("port"),
                                  "control_hz": LaunchConfiguration("control_hz")}]),
        Node(package="robolearn", executable="policy_node", name="policy_node", output="screen",
             parameters=[params, {"checkpoint": LaunchConfiguration("checkpoint"),
                                  "value": LaunchConfiguration("value"),
                                  "control_hz": LaunchConfiguration("control_hz")}]),
    ])
