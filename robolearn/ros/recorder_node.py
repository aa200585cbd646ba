"""`recorder_node`: record ROS topics into zarr episodes (the layout `robolearn train` reads).

At the control rate, while an episode is recording, it keeps the latest observations (joint_pos,
joint_vel and, when their topics carry data, gripper_opening, cube_pos, cube_quat; and for each of `cameras`
("front,wrist") the frame `<camera>_image` (uint8, aligned to the observation time) with its capture time
`<camera>_image_stamp` (ROS time, s)) and the latest
joint command on `<controller>/commands` or `<controller>/joint_trajectory` as `action`.
Episodes are started and ended by std_msgs/String messages on `trigger_topic`: "start", "stop"
(commit) and "discard"; the simulated driver's /robolearn/episode messages ("start ...",
"end ...") work too. Each episode is committed atomically when it stops, so a crash keeps every
finished episode; an episode still recording at shutdown is dropped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from robolearn.ros.images import IMAGE_SUFFIX, camera_names
from robolearn.ros.msgs import Float64MultiArray, JointTrajectory, String
from robolearn.ros.node import (
    OBSERVATION_TOPICS,
    TOPIC_DEFAULTS,
    ObservationInbox,
    RateLimitedLog,
    TimingStats,
    check_timing,
    finite_values,
    reorder_by_name,
    run,
)
from robolearn.ros.transport import LATCHED_QOS, SENSOR_QOS, Transport
from robolearn.sim.arm import JOINT_NAMES

PARAMETERS = {
    "output": "data/ros_demos.zarr", "control_hz": 20.0, "controller": "position_controller",
    "joint_names": list(JOINT_NAMES), **TOPIC_DEFAULTS, "trigger_topic": "/recorder/trigger",
    "obs_timeout": 0.25, "max_episode_seconds": 60.0, "cameras": "",
}


class RecorderNode:
    """The recorder node (see the module docstring)."""

    def __init__(self, transport: Transport, params: dict):
        from robolearn.datasets import ReplayBuffer

        check_timing(params, durations=("obs_timeout", "max_episode_seconds"))
        self.p = params
        self.rate_hz = float(params["control_hz"])
        self.joint_names = list(params["joint_names"])
        self.log = RateLimitedLog("recorder_node")
        cameras = [f"{name}{IMAGE_SUFFIX}" for name in camera_names(params["cameras"])]
        self.inbox = ObservationInbox(transport, [*OBSERVATION_TOPICS, *cameras], params, self.joint_names,
                                      log=self.log)
        controller = params["controller"].strip("/")
        transport.create_subscription(f"/{controller}/commands", Float64MultiArray, self._on_commands, SENSOR_QOS)
        transport.create_subscription(f"/{controller}/joint_trajectory", JointTrajectory, self._on_trajectory,
                                      SENSOR_QOS)
        # latched: a late start still gets the driver's current episode announcement
        transport.create_subscription(params["trigger_topic"], String, self._on_trigger, LATCHED_QOS)
        output = Path(params["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        self.buffer = ReplayBuffer.open_or_create(output, attrs={"robolearn": {"recorded_with": "ros recorder_node",
                                                                               "rate_hz": self.rate_hz}})
        self.action: np.ndarray | None = None
        self.episode: list[dict] | None = None
        self.t0 = 0.0
        self.saved = 0
        self.stats = TimingStats(1.0 / self.rate_hz)

    def _on_commands(self, msg: Float64MultiArray) -> None:
        try:
            self.action = finite_values(msg.data, "commands", len(self.joint_names)).astype(np.float32)
        except (TypeError, ValueError) as exc:
            self.log("commands", f"ignored a commands message: {exc}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if msg.points:
            try:
                self.action = reorder_by_name(msg.joint_names, msg.points[0].positions, self.joint_names).astype(np.float32)
            except Exception as exc:  # noqa: BLE001 - no message may stop the node
                self.log("joint_trajectory", f"ignored a joint_trajectory: {str(exc).strip(chr(39))}")

    def _on_trigger(self, msg: String) -> None:
        word = msg.data.split()[0] if msg.data.split() else ""
        if word == "start":
            if self.episode:
                print("[recorder_node] a new start dropped the unfinished episode", flush=True)
            self.episode, self.t0 = [], time.monotonic()
            print(f"[recorder_node] recording ({msg.data})", flush=True)
        elif word in ("stop", "end"):
            self._commit()
        elif word == "discard":
            self.episode = None
            print("[recorder_node] episode discarded", flush=True)

    def _commit(self) -> None:
        if not self.episode:
            self.episode = None
            return
        keys = set.intersection(*(set(row) for row in self.episode))
        data = {k: np.stack([row[k] for row in self.episode]) for k in sorted(keys)}
        data["done"] = np.arange(len(self.episode)) == len(self.episode) - 1
        self.buffer.add_episode(data)
        self.saved += 1
        print(f"[recorder_node] saved episode {self.buffer.n_episodes - 1} ({len(self.episode)} steps) "
              f"-> {self.p['output']}", flush=True)
        self.episode = None

    def step(self, now: float) -> bool:
        if self.episode is None:
            return True
        received = time.monotonic()
        latest = {k: v for k, v in self.inbox.aligned().items() if received - v[1] <= float(self.p["obs_timeout"])}
        if "joint_pos" not in latest or self.action is None:
            self.stats.count("ticks_without_data")
            return True
        row = {}
        for key, (value, _, sent) in latest.items():
            if key in self.inbox.frames:  # camera frames stay uint8, with the capture time of the frame used
                row[key] = value
                row[f"{key}_stamp"] = np.float64(np.nan if sent is None else sent)
            else:
                row[key] = np.asarray(value, dtype=np.float32)
        row.update(action=self.action.copy(), timestamp=np.float64(received - self.t0))
        self.episode.append(row)
        self.stats.publish(now, received)
        if len(self.episode) >= float(self.p["max_episode_seconds"]) * self.rate_hz:
            self._commit()
        return True

    def report(self) -> str:
        return (self.stats.report("recorder_node")
                + f"\n[recorder_node] {self.saved} episodes saved this session, {self.buffer.n_episodes} in "
                  f"{self.p['output']}")

    def close(self) -> None:
        self.buffer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(lambda transport: RecorderNode(transport, transport.parameters(PARAMETERS)), "recorder_node", argv)
