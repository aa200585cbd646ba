"""A real arm on a servo bus (robot_driver) driven by a trained policy (policy_node).

    ros2 launch robolearn deploy_robot.launch.py checkpoint:=... robot:=so101 port:=/dev/ttyACM0

Parameters come from config/deploy_robot.yaml (params_file:=... for another); the arguments below
override them. The task's other observations (e.g. /cube_pose) come from the rest of your ROS 2
system. Publish std_msgs/Bool true on /e_stop to stop (hold) and on /e_stop/reset to resume.
Without ROS 2: `robolearn deploy graph=robot checkpoint=...`.

Launch arguments override the parameter file in each node's own section of one generated file, so
they win under ROS 2's rules.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from robolearn.ros.params import launch_nodes

NODES = [("robot_driver_node", "robot_driver"), ("policy_node", "policy_node"), ("camera_node", "camera_node")]
#: node -> {parameter: the launch argument that sets it}
OVERRIDES = {"robot_driver": {"robot": "robot", "port": "port", "control_hz": "control_hz"},
             "policy_node": {"checkpoint": "checkpoint", "value": "value", "control_hz": "control_hz"}}


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution(
            [FindPackageShare("robolearn"), "config", "deploy_robot.yaml"]), description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", description="policy checkpoint folder"),
        DeclareLaunchArgument("value", default_value="", description="Q-function checkpoint for re-ranking (optional)"),
        DeclareLaunchArgument("robot", default_value="so101", description="hardware config: so101 | koch"),
        DeclareLaunchArgument("port", default_value="", description="serial port (empty: the hardware config's)"),
        DeclareLaunchArgument("control_hz", default_value="20.0", description="control rate, Hz"),
        OpaqueFunction(function=launch_nodes, kwargs={"params_file": "params_file", "nodes": NODES,
                                                      "overrides": OVERRIDES}),
    ])
