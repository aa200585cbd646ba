"""Simulated deployment of a state policy with the cube pose from markers: robot_driver (the MuJoCo arm and
its marker camera), marker_node (the pose from the frames) and policy_node.

    ros2 launch robolearn deploy_sim_marker.launch.py checkpoint:=/path/to/checkpoints/best [value:=...] [episodes:=10]

Parameters come from config/deploy_sim_marker.yaml (params_file:=... for another); the arguments below
override them: they are written into each node's own section of one generated parameter file, so they
win under ROS 2's rules (a launch `parameters=[file, {dict}]` dict is a `/**` entry and would lose to the
file's node sections). Without ROS 2: `robolearn deploy graph=sim_marker checkpoint=...` starts the same graph.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from robolearn.ros.params import launch_nodes

NODES = [("robot_driver_node", "robot_driver"), ("policy_node", "policy_node"), ("marker_node", "marker_node")]
#: node -> {parameter: the launch argument that sets it}
OVERRIDES = {"robot_driver": {"control_hz": "control_hz", "episodes": "episodes"},
             "policy_node": {"checkpoint": "checkpoint", "value": "value", "rerank_k": "rerank_k",
                             "control_hz": "control_hz"}}


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution(
            [FindPackageShare("robolearn"), "config", "deploy_sim_marker.yaml"]), description="node parameters (YAML)"),
        DeclareLaunchArgument("checkpoint", description="policy checkpoint folder"),
        DeclareLaunchArgument("value", default_value="", description="Q-function checkpoint for re-ranking (optional)"),
        DeclareLaunchArgument("rerank_k", default_value="16", description="candidate chunks per decision"),
        DeclareLaunchArgument("control_hz", default_value="20.0", description="control rate, Hz"),
        DeclareLaunchArgument("episodes", default_value="10", description="simulated episodes (0: run forever)"),
        OpaqueFunction(function=launch_nodes, kwargs={"params_file": "params_file", "nodes": NODES,
                                                      "overrides": OVERRIDES}),
    ])
