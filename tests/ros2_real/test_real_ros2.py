"""robolearn's ROS 2 nodes against real ROS 2 client libraries from PyPI (rclpy with Fast DDS), Kilted and Jazzy.

`bash setup.sh` installs each distribution into `.venv-ros/<distro>` (see setup.sh); a real rclpy program
(`peer.py`) runs there, and robolearn's nodes run either in `.venv` on the DDS transport (Cyclone DDS <->
Fast DDS: cross-vendor) or in the ROS venv on the rclpy transport. Discovery stays on loopback: a private
ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (and ROS_LOCALHOST_ONLY=1 for Jazzy), and Fast DDS
pinned to 127.0.0.1 by configs/ros/fastdds_loopback.xml through FASTDDS_DEFAULT_PROFILES_FILE, set before any
participant starts. Every process is bounded in time and stopped by PID. Under CI=true a missing ROS venv is a
failure, not a skip: this layer must run in CI.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import tiny_lift_checkpoint

from robolearn.datasets import ReplayBuffer
from robolearn.ros.transport import parse_ros_args

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("peer.py")
PROFILE = ROOT / "configs" / "ros" / "fastdds_loopback.xml"
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
COMBOS = [("kilted", "dds"), ("kilted", "rclpy"), ("jazzy", "dds"), ("jazzy", "rclpy")]
PARAMETER_DOUBLE, PARAMETER_STRING = 3, 4  # rcl_interfaces/msg/ParameterType


def ros_python(distro: str) -> Path:
    python = ROOT / ".venv-ros" / distro / "bin" / "python"
    if not python.exists():
        message = f"no ROS 2 {distro} venv at {python.parent.parent}: run `bash setup.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def ros_env(transport: str = "dds") -> dict:
    domain = 120 + (os.getpid() * 7 + time.monotonic_ns() // 1000) % 100
    return {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_LOCALHOST_ONLY": "1", "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE),
            "ROBOLEARN_TRANSPORT": transport, "PYTHONUNBUFFERED": "1"}


class Node:
    """A robolearn node process (stopped by PID: SIGINT, then SIGKILL), its output in a log file."""

    def __init__(self, distro, transport, executable, *params, env, log: Path):
        python = sys.executable if transport == "dds" else ros_python(distro)
        argv = [str(python), "-m", "robolearn.ros", executable, "--ros-args"]
        for p in params:
            argv += ["-p", p]
        self.log = log
        self.proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


def node_and_peer(tmp_path, distro, transport, executable, params, mode, arg) -> tuple[dict, str]:
    """Run a robolearn node, then the peer in `mode`; returns (the peer's report, the node's output)."""
    env = ros_env(transport)
    node = Node(distro, transport, executable, *params, env=env, log=tmp_path / f"{executable}.log")
    try:
        report = peer(distro, mode, arg, env)
    finally:
        log = node.stop()
    return report, log


def peer(distro, mode, arg, env, timeout=90) -> dict:
    proc = subprocess.run([str(ros_python(distro)), str(PEER), mode, str(arg)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("distro", "transport"), COMBOS)
def test_driver_interoperates_with_real_rclpy(tmp_path, distro, transport):
    env = ros_env(transport)
    # control_hz given as an integer: rclpy would refuse it for a double parameter without dynamic typing
    node = Node(distro, transport, "robot_driver_node", "control_hz:=20", env=env, log=tmp_path / "driver.log")
    try:
        report = peer(distro, "driver", 8.5, env)
        graph = peer(distro, "graph", "robot_driver", env)
        services = peer(distro, "param_client", "robot_driver", env) if transport == "rclpy" else None
    finally:
        log = node.stop()
    assert report["matched"] == {"commands": True, "joint_trajectory": True, "e_stop": True}, log
    assert 19.0 < report["joint_states_hz"] < 21.0
    assert report["joint_names"] == JOINTS
    assert 0.0 <= np.median(report["stamp_to_receipt_ms"]) < 20.0  # header stamps in ROS time
    assert report["cube_frame"] == "world" and report["gripper_values"] == 1
    assert report["after_commands_error"] < 0.02  # Float64MultiArray moved the arm
    assert report["after_trajectory_error"] < 0.02  # JointTrajectory with joints in another order
    assert report["moved_during_estop"] < 0.01
    assert report["late_status"] == ["estop"]  # latched: a late subscriber gets the current state
    assert report["status_after_reset"][-1] in ("running", "holding") and report["after_reset_error"] < 0.02
    assert "missed periods 0" in log and "Traceback" not in log
    # the ROS 2 graph (`ros2 node list`, `ros2 node info`) shows the node and its endpoints on both transports
    assert ["robot_driver", "/"] in graph["nodes"]
    assert graph["publishers"]["/joint_states"] == ["sensor_msgs/msg/JointState"]
    assert graph["publishers"]["/robolearn/driver_status"] == ["std_msgs/msg/String"]
    assert graph["subscribers"]["/position_controller/joint_trajectory"] == ["trajectory_msgs/msg/JointTrajectory"]
    if services is not None:  # what `ros2 param list/get` would show
        assert {"control_hz", "watchdog_timeout", "max_trajectory_offset"} <= set(services["list_parameters"])
        assert services["get_parameters"] == [[PARAMETER_DOUBLE, 20.0, ""], [PARAMETER_STRING, 0.0, "sim"]]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return tiny_lift_checkpoint(tmp_path_factory.mktemp("ros2_real") / "ckpt")


@pytest.mark.parametrize(("distro", "transport"), COMBOS)
def test_policy_node_drives_a_real_rclpy_robot(tmp_path, tiny_checkpoint, distro, transport):
    report, log = node_and_peer(tmp_path, distro, transport, "policy_node",
                                [f"checkpoint:={tiny_checkpoint}", "control_hz:=20"], "robot", 9.0)
    assert report["commands"] > 40, log  # joints matched by name from a message in another order
    assert report["all_six_finite"] and 17.0 < report["rate_hz"] < 21.0, report


BACKLOG_PROBE = """
import time
from robolearn.ros.msgs import String
from robolearn.ros.transport import DEFAULT_QOS, make_transport
t = make_transport("backlog_probe", [])
got = []
for topic in ("/backlog_a", "/backlog_b"):
    t.create_subscription(topic, String, lambda m: got.append(m.data), DEFAULT_QOS)
pubs = [t.create_publisher(topic, String, DEFAULT_QOS) for topic in ("/backlog_a", "/backlog_b")]
end = time.monotonic() + 20
while any(p.subscription_count() == 0 for p in pubs) and time.monotonic() < end:
    time.sleep(0.05)
for i in range(6):
    for p in pubs:
        p.publish(String(data=str(i)))
time.sleep(1.0)  # every message has arrived and waits in its subscription's queue (depth 10)
first = t.spin_once()
print(first, t.spin_once(), sorted(got))
t.close()
"""


@pytest.mark.parametrize(("distro", "transport"), COMBOS)
def test_spin_once_delivers_the_whole_backlog(distro, transport):
    """One `spin_once` (one control tick) delivers every queued message, not one per subscription: a node
    that fell behind by a few messages would otherwise keep acting on observations that many periods old."""
    python = sys.executable if transport == "dds" else ros_python(distro)
    proc = subprocess.run([str(python), "-c", BACKLOG_PROBE], env=ros_env(transport), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second, got = proc.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (int(first), int(second)) == (12, 0), proc.stdout
    assert got == str(sorted([str(i) for i in range(6)] * 2)), proc.stdout


@pytest.mark.parametrize(("distro", "transport"), COMBOS)
def test_recorder_node_records_real_rclpy_publishers(tmp_path, distro, transport):
    output = tmp_path / "demo.zarr"
    report, log = node_and_peer(tmp_path, distro, transport, "recorder_node",
                                [f"output:={output}", "trigger_topic:=/recorder/trigger"], "feed_recorder", 2.0)
    assert report["trigger_matched"], log
    rb = ReplayBuffer.open(output)
    assert rb.n_episodes == 1 and 25 <= rb.n_steps <= 60, log
    episode = rb.get_episode(0)
    assert np.all(episode["action"] == 0.5) and episode["joint_pos"].shape[1] == 6
    assert np.all(np.diff(episode["joint_pos"][:, 0]) >= 0)  # the peer's positions grow step by step
    assert {"cube_pos", "cube_quat", "gripper_opening"} <= set(rb.keys)


PARAMS_FILE = """/**:
  ros__parameters:
    a: 1
    b: 1
policy_node:
  ros__parameters:
    a: 2
    c: 2
other_node:
  ros__parameters:
    a: 7
"""
PARAMS_FILE_2 = """/policy_node:
  ros__parameters:
    a: 3
    d: 3
"""


@pytest.mark.parametrize("distro", ["kilted", "jazzy"])
def test_parameter_precedence_matches_rclpy(tmp_path, distro):
    """ROS 2's documented rules: wildcard entries first, then the node's own section, which wins wherever it
    appears; a plain -p is a wildcard entry; `-p node:name:=v` belongs to that node; later sources win."""
    f1, f2 = tmp_path / "p1.yaml", tmp_path / "p2.yaml"
    f1.write_text(PARAMS_FILE)
    f2.write_text(PARAMS_FILE_2)
    cases = [
        ["--ros-args", "--params-file", str(f1)],
        ["--ros-args", "--params-file", str(f1), "-p", "a:=9", "-p", "b:=9"],
        ["--ros-args", "-p", "a:=9", "-p", "b:=9", "--params-file", str(f1)],
        ["--ros-args", "--params-file", str(f1), "-p", "policy_node:a:=9", "-p", "other_node:b:=8"],
        ["--ros-args", "--params-file", str(f1), "--params-file", str(f2)],
        ["--ros-args", "--params-file", str(f2), "--params-file", str(f1)],
        ["--ros-args", "-p", "e:=5", "--params-file", str(f2), "-p", "policy_node:e:=6"],
        ["--ros-args", "-r", "__node:=other_node", "--params-file", str(f1), "-p", "b:=4"],
    ]
    resolved = peer(distro, "params", json.dumps(cases), ros_env())
    defaults = dict.fromkeys("abcde", 0)
    for argv, real in zip(cases, resolved):
        ours = parse_ros_args(argv, "policy_node", defaults)
        assert {k: ours[k] for k in real} == real, (argv, real, ours)
        assert all(ours[k] == 0 for k in set(defaults) - set(real)), (argv, real, ours)


@pytest.mark.parametrize("transport", ["dds", "rclpy"])
def test_a_wrong_parameter_type_is_one_line_on_both_transports(tmp_path, transport):
    env = ros_env(transport)
    python = sys.executable if transport == "dds" else ros_python("kilted")
    proc = subprocess.run([str(python), "-m", "robolearn.ros", "robot_driver_node", "--ros-args", "-p",
                           "control_hz:=fast"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "[robot_driver] error: parameter 'control_hz'" in proc.stderr and "must be float" in proc.stderr


def test_deploy_under_rclpy_passes_every_override(tmp_path, tiny_checkpoint):
    """`robolearn deploy` with rclpy importable: the nodes run on rclpy, and checkpoint=, episodes= and a
    node parameter reach them although the parameter file's node sections set them too."""
    python = ros_python("kilted")
    env = ros_env("auto")
    proc = subprocess.run([str(python), "-m", "robolearn", "deploy", "graph=sim", f"checkpoint={tiny_checkpoint}",
                           "episodes=1", "+params.robot_driver.episode_seconds=2.0", "timeout=90"],
                          env=env, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "[robot_driver] episode 0: failure (0/1)" in out  # the untrained policy ran one 2 s episode
    assert "[robot_driver] success rate 0/1" in out and "[policy_node] latency report" in out


def test_config_dir_with_and_without_an_ament_index(tmp_path):
    """With ament_index_python importable: the wheel's or checkout's configs first; the ament index only when
    neither exists; an index without AMENT_PREFIX_PATH is skipped, never an OSError."""
    python = ros_python("kilted")
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    probe = "from robolearn.paths import config_dir; print(config_dir())"
    proc = subprocess.run([str(python), "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == str(ROOT / "configs"), proc.stderr[-2000:]
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "robolearn").write_text("")
    (prefix / "share" / "robolearn" / "configs").mkdir(parents=True)
    (prefix / "share" / "robolearn" / "configs" / "collect.yaml").write_text("{}")
    elsewhere = ("import robolearn, pathlib; robolearn.__file__ = str(pathlib.Path(r'{}') / 'robolearn' / "
                 "'__init__.py'); {}").format(tmp_path / "site", probe)
    proc = subprocess.run([str(python), "-c", elsewhere], env={**env, "AMENT_PREFIX_PATH": str(prefix)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == str(prefix / "share" / "robolearn" / "configs")
    proc = subprocess.run([str(python), "-c", elsewhere], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FileNotFoundError: robolearn's hydra configs were not found" in proc.stderr
