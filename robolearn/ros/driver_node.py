"""`robot_driver_node`: a `robolearn.hardware` robot on ROS 2 topics.

Publishes, every control period:
    /joint_states (sensor_msgs/JointState; names, position rad, velocity rad/s)
    /gripper_opening (std_msgs/Float64MultiArray, m) and /cube_pose (geometry_msgs/PoseStamped)
        when the robot reports them (the simulator does)
    <camera_topic_prefix>/<camera>/image_raw (sensor_msgs/Image rgb8; `.../compressed` JPEG with
        `image_transport: compressed`) for each of `cameras` (comma-separated, e.g. "front,wrist": the simulator
        renders them at `image_height` x `image_width` px, as robolearn/Lift-v0 does)
    /robolearn/driver_status (std_msgs/String: running | holding | estop), on change, latched (transient-local,
        depth 1: a late subscriber gets the current state)
Subscribes, in the two ros2_control conventions (joints matched by name, or in `joint_names` order):
    <controller>/joint_trajectory (trajectory_msgs/JointTrajectory): each tick the first point not yet
        due (stamp + time_from_start >= now; a zero stamp means "when received") is the target
    <controller>/commands (std_msgs/Float64MultiArray): one target per message
    /e_stop (std_msgs/Bool, reliable): true latches a stop (hold); /e_stop/reset true clears it
Every target passes the robot's safety filter (limits, rate limit, NaN rejection); without a new
target for `watchdog_timeout` s the robot holds its measured position (the filter's watchdog).
Malformed commands (wrong length, unknown joints, NaN/inf) and trajectories stamped more than
`max_trajectory_offset` s from now, or with a point more than `max_trajectory_seconds` after its
start, are refused with a rate-limited log line; no message can stop the node.

Simulation episodes (robot=sim, episodes > 0): the scene is reset with seed `seed + i`, the episode
ends on the scene's success (`RobotObservation.success`; Lift: the cube 5 cm up) or after `episode_seconds`; starts and ends are announced on
/robolearn/episode (std_msgs/String "start <i> <seed> <stamp>" / "end <i> success|failure", latched;
<stamp> is the ROS time of the reset, s, so listeners can drop observations taken before it), and
the node exits after the last episode with the success rate printed. The first episode starts
when a command has arrived and `episode_subscribers` nodes listen to /robolearn/episode, so the
episode clock does not run while the other nodes load. `sim_world` (a JSON world config, `robolearn.sim.world`;
`robolearn deploy world=...` writes it) puts the simulated arm in another world: physics, latency, sensor
noise and the look of its cameras, sampled per episode. `sim_cube_markers: true` puts ArUco markers on the
simulated cube, for `marker_node` on the "marker" camera (graph sim_marker).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from robolearn.ros.images import (
    camera_names,
    camera_topic,
    frame_message,
    message_type,
)
from robolearn.ros.msgs import (
    Bool,
    Float64MultiArray,
    JointState,
    JointTrajectory,
    PoseStamped,
    String,
)
from robolearn.ros.node import (
    TOPIC_DEFAULTS,
    RateLimitedLog,
    TimingStats,
    check_timing,
    finite_values,
    pose_message,
    reorder_by_name,
    run,
    stamp,
)
from robolearn.ros.transport import (
    DEFAULT_QOS,
    ESTOP_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STATE_QOS,
    Transport,
)

PARAMETERS = {
    "robot": "sim", "port": "", "calibration": "", "control_hz": 20.0, "controller": "position_controller",
    "watchdog_timeout": 0.25, **TOPIC_DEFAULTS, "estop_topic": "/e_stop", "episode_topic": "/robolearn/episode",
    "status_topic": "/robolearn/driver_status", "episodes": 0, "episode_seconds": 10.0, "seed": 100000,
    "reset_grace": 0.15, "episode_subscribers": 0, "sim_world": "", "sim_cube_markers": False,
    "max_trajectory_offset": 5.0, "max_trajectory_seconds": 60.0,
    "cameras": "", "image_height": 96, "image_width": 96, "jpeg_quality": 90,
}


class RobotDriverNode:
    """The driver node over any `robolearn.hardware.Robot` (see the module docstring).

    Args:
        transport: the ROS transport.
        params: `PARAMETERS` with overrides.
        robot: an unconnected robot; default built from params (`make_robot`).
    """

    def __init__(self, transport: Transport, params: dict, robot=None):
        from robolearn.hardware.factory import make_robot

        check_timing(params, durations=("watchdog_timeout", "episode_seconds", "max_trajectory_offset",
                                        "max_trajectory_seconds"),
                     non_negative=("reset_grace",))
        self.p = params
        self.log = RateLimitedLog("robot_driver")
        self.rate_hz = float(params["control_hz"])
        self.period = 1.0 / self.rate_hz
        if robot is None:
            sim = {"world": json.loads(params["sim_world"]) if params["sim_world"] else None,
                   "cube_markers": bool(params["sim_cube_markers"]),
                   "watchdog_timeout": params["watchdog_timeout"],
                   "cameras": dict.fromkeys(camera_names(params["cameras"]),
                                            (int(params["image_height"]), int(params["image_width"])))}
            robot = make_robot(params["robot"], port=params["port"] or None, realtime=True, control_hz=self.rate_hz,
                               sim=sim, calibration=params["calibration"] or None)
        self.robot = robot.connect()
        world = getattr(self.robot, "world", None)
        if world is not None:
            print(f"[robot_driver] simulated arm in world {world.world.name} (parameters sampled per episode)",
                  flush=True)
        self.robot.safety.watchdog_timeout = float(params["watchdog_timeout"])
        self.joint_names = list(self.robot.joint_names)
        controller = params["controller"].strip("/")
        self.pub_joints = transport.create_publisher(params["joint_states_topic"], JointState, DEFAULT_QOS)
        self.pub_gripper = transport.create_publisher(params["gripper_opening_topic"], Float64MultiArray, DEFAULT_QOS)
        self.pub_cube = transport.create_publisher(params["cube_pose_topic"], PoseStamped, DEFAULT_QOS)
        self.pub_status = transport.create_publisher(params["status_topic"], String, STATE_QOS)
        # every camera the robot renders or reads: sensor_msgs/Image (or CompressedImage), best effort as
        # camera drivers publish
        image_transport = params["image_transport"]
        self.pub_images = {name: transport.create_publisher(
            camera_topic(name, params["camera_topic_prefix"], image_transport), message_type(image_transport),
            SENSOR_QOS) for name in getattr(self.robot, "camera_sizes", {})}
        self.pub_episode = transport.create_publisher(params["episode_topic"], String, LATCHED_QOS)
        transport.create_subscription(f"/{controller}/commands", Float64MultiArray, self._on_commands, SENSOR_QOS)
        transport.create_subscription(f"/{controller}/joint_trajectory", JointTrajectory, self._on_trajectory,
                                      SENSOR_QOS)
        transport.create_subscription(params["estop_topic"], Bool, self._on_estop, ESTOP_QOS)
        transport.create_subscription(params["estop_topic"] + "/reset", Bool, self._on_reset, ESTOP_QOS)
        self.target: np.ndarray | None = None  # a new target from <controller>/commands
        self.trajectory: list[tuple[float, np.ndarray]] = []  # (due, monotonic s; positions)
        self.status = ""
        self.stats = TimingStats(self.period)
        self.ignore_until = 0.0  # commands are ignored until this tick time (just after a scene reset)
        self.last_tick = 0.0
        self.episodes = int(params["episodes"]) if params["robot"] == "sim" else 0
        self.episode, self.episode_start, self.successes = -1, 0.0, 0
        self.commanded = False  # a command has arrived (the first episode starts then)

    # -- inputs --------------------------------------------------------------------------
    def _reject(self, kind: str, reason: str) -> None:
        self.stats.count("rejected_commands")
        self.log(kind, f"rejected a {kind} message: {reason}")

    def _on_commands(self, msg: Float64MultiArray) -> None:
        if self.last_tick < self.ignore_until:
            return
        try:
            target = finite_values(msg.data, f"commands (one per joint, in the order {self.joint_names})",
                                   len(self.joint_names))
        except (TypeError, ValueError) as exc:
            self._reject("commands", str(exc))
            return
        self.target, self.trajectory = target, []
        self.commanded = True
        self.stats.count("commands_received")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now, wall = time.monotonic(), time.time()
        if self.last_tick < self.ignore_until or not msg.points:
            return
        try:
            start = msg.header.stamp.to_seconds()
            offset = 0.0 if start == 0 else start - wall  # zero means "start when received"
            limit = float(self.p["max_trajectory_offset"])
            if not abs(offset) <= limit:
                raise ValueError(f"stamped {offset:+.3f} s from now (more than max_trajectory_offset {limit:g} s; "
                                 "a wrong stamp or unsynchronized clocks)")
            points = []
            for i, p in enumerate(msg.points):
                due = p.time_from_start.to_seconds()
                if not 0 <= due <= float(self.p["max_trajectory_seconds"]):
                    raise ValueError(f"point {i} has time_from_start {due} s, outside [0, "
                                     f"max_trajectory_seconds {self.p['max_trajectory_seconds']:g}]")
                points.append((now + offset + due, reorder_by_name(msg.joint_names, p.positions, self.joint_names)))
        except Exception as exc:  # noqa: BLE001 - no message may stop the node
            self._reject("joint_trajectory", str(exc).strip("'\""))
            return
        self.trajectory, self.target = points, None
        self.commanded = True
        self.stats.count("commands_received")

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.robot.stop()
            self.target, self.trajectory = None, []
            print("[robot_driver] e-stop: holding until a reset on " + self.p["estop_topic"] + "/reset", flush=True)

    def _on_reset(self, msg: Bool) -> None:
        if msg.data and self.robot.safety.stopped:
            self.robot.reset_stop()
            print("[robot_driver] e-stop reset", flush=True)

    # -- the control tick ----------------------------------------------------------------
    def _next_episode(self, now: float) -> None:
        self.episode += 1
        seed = int(self.p["seed"]) + self.episode
        self.robot.reset_scene(seed=seed)
        self.target, self.trajectory = None, []
        self.episode_start, self.ignore_until = now, now + float(self.p["reset_grace"])
        self.pub_episode.publish(String(f"start {self.episode} {seed} {time.time():.6f}"))

    def _end_episode(self, success: bool, now: float) -> bool:
        self.successes += success
        self.pub_episode.publish(String(f"end {self.episode} {'success' if success else 'failure'}"))
        print(f"[robot_driver] episode {self.episode}: {'success' if success else 'failure'} "
              f"({self.successes}/{self.episode + 1})", flush=True)
        if self.episode + 1 >= self.episodes:
            return False
        self._next_episode(now)
        return True

    def _due_point(self, now: float) -> np.ndarray | None:
        while len(self.trajectory) > 1 and self.trajectory[0][0] < now:
            self.trajectory.pop(0)
        return self.trajectory[0][1] if self.trajectory and self.trajectory[0][0] >= now - self.period else None

    def step(self, now: float) -> bool:
        self.last_tick = now
        target = self.target if self.target is not None else self._due_point(now)
        if target is not None:
            self.robot.send(target)  # the safety filter holds instead of sending a NaN or mis-shaped target
            self.target = None
        else:
            self.robot.tick()
        obs = self.robot.read()
        wall = time.time()
        self.pub_joints.publish(JointState(header=stamp(wall), name=self.joint_names,
                                           position=obs.joint_pos.tolist(), velocity=obs.joint_vel.tolist()))
        if "gripper_opening" in obs.extras:
            self.pub_gripper.publish(Float64MultiArray(data=[float(v) for v in obs.extras["gripper_opening"]]))
        if "cube_pos" in obs.extras and "cube_quat" in obs.extras:
            self.pub_cube.publish(pose_message(obs.extras["cube_pos"], obs.extras["cube_quat"], wall_time=wall))
        for name, frame in obs.images.items():
            if name in self.pub_images:
                header = stamp(wall, frame_id=f"{name}_camera")
                self.pub_images[name].publish(frame_message(frame, header, self.p["image_transport"],
                                                            int(self.p["jpeg_quality"])))
        self.stats.publish(now, time.monotonic())
        status = "estop" if self.robot.safety.stopped else "holding" if self.robot.safety.watchdog_tripped else "running"
        if status != self.status:
            self.status = status
            self.pub_status.publish(String(status))
            print(f"[robot_driver] {status}", flush=True)
        if self.episodes and self.episode < 0:
            if self.commanded and self.pub_episode.subscription_count() >= int(self.p["episode_subscribers"]):
                self._next_episode(now)
        elif self.episodes:  # the scene's own success test (`RobotObservation.success`)
            if obs.success or now - self.episode_start >= float(self.p["episode_seconds"]):
                return self._end_episode(bool(obs.success), now)
        return True

    def report(self) -> str:
        text = self.stats.report("robot_driver")
        if self.episodes:
            n = self.episode + 1
            text += f"\n[robot_driver] success rate {self.successes}/{n} = {self.successes / max(n, 1):.0%}"
        return text

    def close(self) -> None:
        self.robot.disconnect()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(lambda transport: RobotDriverNode(transport, transport.parameters(PARAMETERS)), "robot_driver", argv)
