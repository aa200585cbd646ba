"""ROS 2 (colcon, ament_python) build of robolearn: `colcon build --packages-select robolearn` in a
workspace's src/, then `ros2 launch robolearn deploy_sim.launch.py checkpoint:=...`.

pip does not use this file (pyproject.toml builds the wheel); Python dependencies come from pip:
`pip install -e .` in the same environment as ROS 2.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

#: every folder of configs/ (task, policy, world, hardware, ros, ...), read from the tree, never listed by hand
CONFIG_FOLDERS = sorted(p.name for p in (Path(__file__).parent / "configs").iterdir() if p.is_dir())

setup(
    name="robolearn",
    version="0.1.0",
    packages=find_packages(include=["robolearn", "robolearn.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/robolearn"]),
        ("share/robolearn", ["package.xml"]),
        ("share/robolearn/launch", glob("launch/*.launch.py")),
        ("share/robolearn/config", glob("configs/ros/*.yaml") + glob("configs/ros/*.xml")),
        ("share/robolearn/configs", glob("configs/*.yaml")),
    ] + [(f"share/robolearn/configs/{sub}", glob(f"configs/{sub}/*.yaml") + glob(f"configs/{sub}/*.xml"))
         for sub in CONFIG_FOLDERS],
    zip_safe=True,
    entry_points={"console_scripts": [
        "robot_driver_node = robolearn.ros.driver_node:main",
        "policy_node = robolearn.ros.policy_node:main",
        "teleop_node = robolearn.ros.teleop_node:main",
        "recorder_node = robolearn.ros.recorder_node:main",
        "camera_node = robolearn.ros.camera_node:main",
        "marker_node = robolearn.ros.marker_node:main",
        "robolearn = robolearn.cli:main",
    ]},
)
