"""Parameter files for robolearn's node graphs, written so that overrides win under ROS 2's rules.

ROS 2 (rcl + rclpy) gives a node its parameter file's `/**` entries, then its own section's, and a
plain `-p name:=value` or a launch file's `parameters=[..., {dict}]` counts as a `/**` entry: it loses
to the node's own section of the file. So `robolearn deploy` and the launch files never pass overrides
that way: they write one parameter file in which each override is in its node's own section, and pass
only that file. The result is the same under real rclpy and the DDS transport (`parse_ros_args`).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import yaml

from robolearn.ros.transport import coerce_parameter, read_parameters_file


def merged_parameters(params_file: str | os.PathLike, overrides: dict[str, dict]) -> dict:
    """The content of `params_file` with `overrides` ({node name: {parameter: value}}) written into each
    node's own `ros__parameters` section.

    Raises:
        FileNotFoundError: `params_file` does not exist.
        ValueError: `params_file` is not a mapping of node names to sections.
    """
    content = read_parameters_file(params_file)
    for node, values in overrides.items():
        if not values:
            continue
        key = next((k for k in content if str(k).lstrip("/") == node), node)
        section = content.setdefault(key, {}) or {}
        content[key] = section
        section.setdefault("ros__parameters", {}).update(values)
    return content


def write_parameters_file(params_file: str | os.PathLike, overrides: dict[str, dict],
                          folder: str | os.PathLike | None = None) -> Path:
    """Write `merged_parameters(params_file, overrides)` to a new file in `folder` (default: the temp
    folder) and return its path; the caller deletes it when the graph has stopped."""
    fd, name = tempfile.mkstemp(prefix="robolearn-params-", suffix=".yaml", dir=folder)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(merged_parameters(params_file, overrides), f, sort_keys=False)
    return Path(name)


def typed_launch_arguments(executable: str, values: dict[str, str]) -> dict:
    """Launch-argument strings as the typed values node `executable` declares: text for a text parameter
    (a path such as "123" stays text), YAML for the others ("20.0" -> 20.0, "10" -> 10, "[a, b]" -> list).

    Raises:
        ValueError: a parameter the node does not declare, or a value of another type.
    """
    from robolearn.ros.__main__ import NODES

    defaults = importlib.import_module(NODES[executable]).PARAMETERS
    out = {}
    for key, text in values.items():
        value = text if isinstance(defaults.get(key), str) or text == "" else yaml.safe_load(text)
        out[key] = coerce_parameter(defaults, key, value, f"launch argument for {key}")
    return out


def launch_nodes(context, params_file: str, nodes: list[tuple[str, str]], overrides: dict[str, dict[str, str]]):
    """For a launch file's `OpaqueFunction`: the `launch_ros` Node actions of `nodes` ([(executable, node
    name)]) with one generated parameter file: `params_file` (a launch argument name) with each node's
    `overrides` ({node name: {parameter: launch argument name}}) in the node's own section."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    executables = {name: executable for executable, name in nodes}
    values = {node: typed_launch_arguments(executables[node], {key: LaunchConfiguration(arg).perform(context)
                                                                for key, arg in keys.items()})
              for node, keys in overrides.items()}
    path = write_parameters_file(LaunchConfiguration(params_file).perform(context), values)
    return [Node(package="robolearn", executable=executable, name=name, output="screen", parameters=[str(path)])
            for executable, name in nodes]
