"""`python -m robolearn.ros <node> [--ros-args --params-file FILE -p name:=value ...]`."""

from __future__ import annotations

import importlib
import sys

#: executable name (as in the ROS 2 package's console_scripts) -> module with `main(argv)`
NODES = {"robot_driver_node": "robolearn.ros.driver_node", "policy_node": "robolearn.ros.policy_node",
         "teleop_node": "robolearn.ros.teleop_node", "recorder_node": "robolearn.ros.recorder_node",
         "camera_node": "robolearn.ros.camera_node", "marker_node": "robolearn.ros.marker_node"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in NODES:
        print(f"usage: python -m robolearn.ros {{{','.join(NODES)}}} [--ros-args ...]", file=sys.stderr)
        return 2
    return importlib.import_module(NODES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
