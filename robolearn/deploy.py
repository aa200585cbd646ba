"""`robolearn deploy`: start a ROS 2 node graph as processes, from the same parameter YAML the ROS 2
launch files use (for machines without ROS 2; with ROS 2, `ros2 launch robolearn <graph>.launch.py`).

Graphs (configs/ros/<file>.yaml, launch/<file>.launch.py):
    sim            robot_driver (simulated arm) + policy_node        deploy_sim
    sim_marker     the same, the cube pose estimated by marker_node  deploy_sim_marker
                   from the simulated marker camera (a state policy as on a real arm)
    robot          robot_driver (servo-bus arm) + policy_node        deploy_robot
    teleop_record  robot_driver + teleop_node + recorder_node        teleop_record
The nodes talk over ROS 2 DDS (cyclonedds here). When the driver exits (e.g. after its simulated
episodes) or on Ctrl-C, the other nodes are stopped with SIGINT, and each prints its latency report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robolearn.errors import UserError
from robolearn.outputs import check_apart, check_writable
from robolearn.paths import config_dir
from robolearn.ros.params import write_parameters_file
from robolearn.sim.world import World
from robolearn.tasks import load_task

#: graph -> (parameter file stem, [(node name, executable)]); the first node leads: when it exits, the graph stops
GRAPHS = {
    "sim": ("deploy_sim", [("robot_driver", "robot_driver_node"), ("policy_node", "policy_node")]),
    "sim_marker": ("deploy_sim_marker", [("robot_driver", "robot_driver_node"), ("policy_node", "policy_node"),
                                         ("marker_node", "marker_node")]),
    "robot": ("deploy_robot", [("robot_driver", "robot_driver_node"), ("policy_node", "policy_node"),
                               ("camera_node", "camera_node")]),
    "teleop_record": ("teleop_record", [("robot_driver", "robot_driver_node"), ("teleop_node", "teleop_node"),
                                        ("recorder_node", "recorder_node")]),
}


def ros_params_dir() -> Path:
    """The folder of the ROS 2 parameter YAMLs (configs/ros, shipped in the wheel)."""
    return config_dir() / "ros"


def node_commands(graph: str, params_file: Path) -> list[tuple[str, list[str]]]:
    """[(node name, argv)] to start `graph`'s nodes with `python -m robolearn.ros` on `params_file`.

    Raises:
        UserError: an unknown graph.
    """
    if graph not in GRAPHS:
        raise UserError(f"graph must be one of {sorted(GRAPHS)}, got {graph!r}")
    return [(name, [sys.executable, "-m", "robolearn.ros", executable, "--ros-args", "-r", f"__node:={name}",
                    "--params-file", str(params_file)]) for name, executable in GRAPHS[graph][1]]


def check_overrides(graph: str, overrides: dict[str, dict]) -> None:
    """Refuse overrides for a node `graph` does not have.

    Raises:
        UserError: the unknown node names and the graph's nodes.
    """
    nodes = [name for name, _ in GRAPHS[graph][1]]
    unknown = set(overrides) - set(nodes)
    if unknown:
        raise UserError(f"params for {sorted(unknown)}: graph {graph} has nodes {nodes}")


def deploy(cfg: DictConfig) -> int:
    """Hydra task `robolearn deploy` (configs/deploy.yaml). Returns the leading node's exit code."""
    graph = str(cfg.graph)
    if graph not in GRAPHS:
        raise UserError(f"graph must be one of {sorted(GRAPHS)}, got {graph!r}")
    params_file = Path(cfg.params_file) if cfg.params_file else ros_params_dir() / f"{GRAPHS[graph][0]}.yaml"
    if not params_file.is_file():
        raise UserError(f"parameter file not found: {params_file}")
    nodes = {n for n, _ in GRAPHS[graph][1]}
    # the task's topic map first (configs/task/<name>.yaml `ros:`), then what the command line gives
    overrides = {node: dict(values) for node, values in load_task(cfg.task, cfg.world).ros.items() if node in nodes}
    for node, values in OmegaConf.to_container(cfg.params, resolve=True).items():
        if values:
            overrides.setdefault(node, {}).update(values)
    for key, node in (("robot", "robot_driver"), ("episodes", "robot_driver"), ("device", "teleop_node"),
                      ("output", "recorder_node"), ("episodes", "teleop_node")):
        if node not in nodes:
            continue
        if cfg[key] is not None:
            overrides.setdefault(node, {})[key] = cfg[key]
    world = OmegaConf.to_container(cfg.world, resolve=True)
    if World(world).is_nominal:
        pass
    elif "robot_driver" in nodes and (cfg.robot or "sim") == "sim" and graph != "robot":
        overrides.setdefault("robot_driver", {})["sim_world"] = json.dumps(world)
    else:
        raise UserError(f"world={world.get('name')} applies to the simulated arm (graph sim or teleop_record with "
                        "robot=sim); a real arm is in the real world")
    if "recorder_node" in nodes and cfg.output is not None:
        check_apart({"output": cfg.output}, {"checkpoint": cfg.checkpoint, "value": cfg.value})
        check_writable(cfg.output, "output")
    if graph in ("sim", "sim_marker", "robot"):
        if not cfg.checkpoint:
            raise UserError("give the policy: robolearn deploy checkpoint=runs/.../checkpoints/best")
        if not Path(cfg.checkpoint).is_dir():
            raise UserError(f"checkpoint folder not found: {cfg.checkpoint}")
        overrides.setdefault("policy_node", {})["checkpoint"] = str(cfg.checkpoint)
        if cfg.value:
            overrides["policy_node"]["value"] = str(cfg.value)
    env = dict(os.environ)
    if cfg.ros_domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(cfg.ros_domain_id)
    if cfg.localhost_only:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    check_overrides(graph, overrides)
    # the overrides go into each node's own section of one generated file: they win under ROS 2's rules
    merged = write_parameters_file(params_file, overrides)
    try:
        return _run_graph(cfg, graph, node_commands(graph, merged), params_file, env)
    finally:
        merged.unlink(missing_ok=True)


def _run_graph(cfg: DictConfig, graph: str, commands: list[tuple[str, list[str]]], params_file: Path,
               env: dict) -> int:
    print(f"robolearn deploy {graph}: {', '.join(n for n, _ in commands)} with {params_file} "
          f"(ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID', '0')})", flush=True)
    procs = [(name, subprocess.Popen(argv, env=env)) for name, argv in commands]
    leader = procs[0][1]
    deadline = None if cfg.timeout is None else time.monotonic() + float(cfg.timeout)
    interrupted = False
    try:
        while leader.poll() is None and all(p.poll() is None for _, p in procs[1:]):
            if deadline is not None and time.monotonic() > deadline:
                print(f"robolearn deploy: timeout after {cfg.timeout} s", flush=True)
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
    if not interrupted and leader.poll() is not None:
        time.sleep(1.0)  # let the others take the leader's last messages (e.g. the end of the last episode)
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for name, proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            print(f"robolearn deploy: {name} did not stop within 15 s; killed", flush=True)
    failed = [(n, p.returncode) for n, p in procs if p.returncode not in (0, -signal.SIGINT)]
    if failed and not interrupted:
        raise UserError(f"nodes failed: {', '.join(f'{n} (exit {c})' for n, c in failed)}")
    return 0
