"""`teleop_node`: a teleoperation device (keyboard, gamepad, SpaceMouse, leader arm, scripted expert)
publishing joint commands on `<controller>/commands` (std_msgs/Float64MultiArray, rad, `joint_names`
order) at the control rate, and its episode keys (start / stop / discard) as std_msgs/String on
`trigger_topic` for the recorder node. Cartesian devices go through the same IK mapper as
`robolearn record`, starting from the measured /joint_states. A scene reset announced on
/robolearn/episode ("start ...") restarts devices that plan from the scene (the expert).
"""

from __future__ import annotations

import sys
import time

from robolearn.hardware.robot import RobotObservation
from robolearn.ros.msgs import Float64MultiArray, String
from robolearn.ros.node import (
    TOPIC_DEFAULTS,
    ObservationInbox,
    RateLimitedLog,
    TimingStats,
    check_timing,
    episode_reset_stamp,
    run,
)
from robolearn.ros.transport import DEFAULT_QOS, LATCHED_QOS, Transport
from robolearn.sim.arm import JOINT_NAMES

PARAMETERS = {
    "device": "keyboard", "leader": "", "leader_port": "", "leader_calibration": "", "episodes": 1, "seed": 0,
    "control_hz": 20.0, "controller": "position_controller", "joint_names": list(JOINT_NAMES), **TOPIC_DEFAULTS,
    "trigger_topic": "/recorder/trigger", "episode_topic": "/robolearn/episode", "obs_timeout": 0.25,
}
SCENE_KEYS = ("gripper_opening", "cube_pos", "cube_quat")  # what the scripted expert needs beyond joints


class TeleopNode:
    """The teleop node (see the module docstring). `device` defaults to `make_device(params...)`."""

    def __init__(self, transport: Transport, params: dict, device=None):
        from robolearn.hardware.factory import make_device
        from robolearn.hardware.teleop import CartesianMapper

        check_timing(params, durations=("obs_timeout",))
        self.p = params
        self.rate_hz = float(params["control_hz"])
        self.device = (device or make_device(params["device"], rate_hz=self.rate_hz, leader=params["leader"] or None,
                                             leader_port=params["leader_port"] or None, episodes=int(params["episodes"]),
                                             seed=int(params["seed"]),
                                             leader_calibration=params["leader_calibration"] or None)).connect()
        keys = ["joint_pos", "joint_vel"] + (list(SCENE_KEYS) if params["device"] == "expert" else [])
        self.inbox = ObservationInbox(transport, keys, params, params["joint_names"], log=RateLimitedLog("teleop_node"))
        self.mapper = CartesianMapper()
        self.mapper_ready = False
        controller = params["controller"].strip("/")
        self.pub = transport.create_publisher(f"/{controller}/commands", Float64MultiArray, DEFAULT_QOS)
        self.pub_trigger = transport.create_publisher(params["trigger_topic"], String, DEFAULT_QOS)
        transport.create_subscription(params["episode_topic"], String, self._on_episode, LATCHED_QOS)
        self.stats = TimingStats(1.0 / self.rate_hz)

    def _on_episode(self, msg: String) -> None:
        reset_stamp = episode_reset_stamp(msg.data)
        if reset_stamp is not None:
            self.device.scene_reset()
            self.mapper_ready = False
            self.inbox.reset(reset_stamp)  # observations taken before the scene reset are stale

    def step(self, now: float) -> bool:
        obs = self.inbox.fresh(time.monotonic(), float(self.p["obs_timeout"]))
        if obs is None:
            self.stats.count("ticks_without_fresh_observations")
            return True
        observation = RobotObservation(timestamp=now, joint_pos=obs["joint_pos"], joint_vel=obs["joint_vel"],
                                       extras={k: obs[k] for k in SCENE_KEYS if k in obs})
        if not self.mapper_ready:
            self.mapper.reset(observation.joint_pos)
            self.mapper_ready = True
        command = self.device.read(observation)
        for event in ("start", "stop", "discard"):
            if event in command.events:
                self.pub_trigger.publish(String(event))
        if "quit" in command.events:
            return False
        if "start" in command.events:
            self.mapper.reset(observation.joint_pos)
        target = command.joint_target if command.joint_target is not None else self.mapper(command)
        self.pub.publish(Float64MultiArray(data=[float(v) for v in target]))
        self.stats.publish(now, time.monotonic())
        return True

    def report(self) -> str:
        return self.stats.report("teleop_node")

    def close(self) -> None:
        self.device.disconnect()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(lambda transport: TeleopNode(transport, transport.parameters(PARAMETERS)), "teleop_node", argv)
