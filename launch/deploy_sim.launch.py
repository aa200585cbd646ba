"""Simulated deployment: the MuJoCo arm (robot_driver) driven by a trained policy (policy_node).

    ros2 launch robolearn deploy_sim.launch.py checkpoint:=/path/to/checkpoints/best [value:=...] [episodes:=10]

Parameters come from config/deploy_sim.yaml (params_file:=... for another); the arguments below
override them. Without ROS 2: `robolearn deploy graph=sim checkpoint=...` starts the same graph.
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
            [FindPackageShare("robolearn"), "config", "deploy_sim.yaml"]), description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", description="policy checkpoint folder"),
        DeclareLaunchArgument("value", default_value="", description="Q-function checkpoint for re-ranking (optional)"),
        DeclareLaunchArgument("rerank_k", default_value="16", description="candidate chunks per decision"),
        DeclareLaunchArgument("control_hz", default_value="20.0", description="control rate, Hz"),
        DeclareLaunchArgument("episodes", default_value="10", description="simulated episodes (0: run forever)"),
        Node(package="robolearn", executable="robot_driver_node", name="robot_driver", output="screen",
             parameters=[params, {"control_hz": LaunchConfiguration("control_hz"),
                                  "episodes": LaunchConfiguration("episodes")}]),
        Node(package="robolearn", executable="policy_node", name="policy_node", output="screen",
             parameters=[params, {"checkpoint": LaunchConfiguration("checkpoint"),
                                  "value": LaunchConfiguration("value"),
                                  "rerank_k": LaunchConfiguration("rerank_k"),
                                  "control_hz": LaunchConfiguration("control_hz")}]),
    ])
