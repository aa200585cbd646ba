"""A real rclpy program (ROS 2 Kilted or Jazzy from PyPI, Fast DDS) that talks to robolearn's nodes.

Run with a ROS 2 venv's python (`.venv-ros/<distro>/bin/python`); it imports nothing from robolearn.
Prints one JSON report on stdout. Modes:

    driver SECONDS          observe robot_driver's topics, command the arm (commands, trajectory), e-stop
                            and reset it, subscribe late to the latched status
    robot SECONDS           be the robot for policy_node: publish joint states (joints in another order),
                            gripper opening and cube pose at 20 Hz; count the commands that come back
    feed_recorder SECONDS   publish observations and commands and start/stop an episode on the trigger topic
    params JSON             resolve parameter overrides with rclpy for each case in JSON ([argv, ...])
    param_client NODE       list and get the parameters of NODE through its parameter services
    graph NODE              what the ROS 2 graph shows of NODE: node names, its publishers and subscribers
"""

import json
import math
import sys
import time

import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED_1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                       history=HistoryPolicy.KEEP_LAST)
ESTOP = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def stamp_seconds(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def spin_for(node, seconds: float, every=None, period: float = 0.05) -> None:
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end:
        if every is not None and time.monotonic() >= next_tick:
            every()
            next_tick += period
        rclpy.spin_once(node, timeout_sec=0.005)


def wait_for_subscribers(node, publisher, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while publisher.get_subscription_count() == 0 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    return publisher.get_subscription_count() > 0


def driver(seconds: float) -> dict:
    node = rclpy.create_node("ros2_peer")
    joints, gripper, cube, episode, status = [], [], [], [], []
    node.create_subscription(JointState, "/joint_states", lambda m: joints.append((time.time(), m)), RELIABLE)
    node.create_subscription(Float64MultiArray, "/gripper_opening", lambda m: gripper.append(list(m.data)), RELIABLE)
    node.create_subscription(PoseStamped, "/cube_pose", lambda m: cube.append((time.time(), m)), RELIABLE)
    commands = node.create_publisher(Float64MultiArray, "/position_controller/commands", RELIABLE)
    trajectory = node.create_publisher(JointTrajectory, "/position_controller/joint_trajectory", RELIABLE)
    estop = node.create_publisher(Bool, "/e_stop", ESTOP)
    reset = node.create_publisher(Bool, "/e_stop/reset", ESTOP)
    report = {"matched": {"commands": wait_for_subscribers(node, commands),
                          "joint_trajectory": wait_for_subscribers(node, trajectory),
                          "e_stop": wait_for_subscribers(node, estop)}}
    spin_for(node, 2.0)  # observe
    window = [t for t, _ in joints if t > time.time() - 1.5]
    report["joint_states_hz"] = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 2 else 0.0
    report["joint_names"] = list(joints[-1][1].name) if joints else []
    report["stamp_to_receipt_ms"] = sorted(1e3 * (t - stamp_seconds(m.header)) for t, m in joints[-20:])
    report["cube_frame"] = cube[-1][1].header.frame_id if cube else None
    report["gripper_values"] = len(gripper[-1]) if gripper else 0
    start = list(joints[-1][1].position)
    # commands: one target per message, in joint_names order
    target = [p + d for p, d in zip(start, [0.10, -0.08, 0.06, 0.0, 0.10, 0.0])]
    spin_for(node, 1.5, lambda: commands.publish(Float64MultiArray(data=target)))
    report["after_commands_error"] = max(abs(a - b) for a, b in zip(joints[-1][1].position, target))
    # a trajectory with the joints in reverse order, stamped now
    target2 = [p + d for p, d in zip(start, [-0.05, 0.05, -0.04, 0.0, -0.05, 0.0])]
    order = list(reversed(JOINTS))

    def send_trajectory():
        msg = JointTrajectory(joint_names=order, points=[JointTrajectoryPoint(
            positions=[target2[JOINTS.index(j)] for j in order])])
        msg.header.stamp = node.get_clock().now().to_msg()
        trajectory.publish(msg)

    spin_for(node, 1.5, send_trajectory)
    report["after_trajectory_error"] = max(abs(a - b) for a, b in zip(joints[-1][1].position, target2))
    # e-stop: the arm holds while commands keep coming; the status says so
    estop.publish(Bool(data=True))
    spin_for(node, 0.3)
    held = list(joints[-1][1].position)
    spin_for(node, 1.0, lambda: commands.publish(Float64MultiArray(data=target)))
    report["moved_during_estop"] = max(abs(a - b) for a, b in zip(joints[-1][1].position, held))
    late = node.create_subscription(String, "/robolearn/driver_status", lambda m: status.append(m.data), LATCHED_1)
    spin_for(node, 1.0)  # a late subscriber gets the latched status at once
    report["late_status"] = list(status)
    reset.publish(Bool(data=True))
    spin_for(node, 1.0, lambda: commands.publish(Float64MultiArray(data=target)))
    report["status_after_reset"] = list(status)
    report["after_reset_error"] = max(abs(a - b) for a, b in zip(joints[-1][1].position, target))
    node.destroy_subscription(late)
    node.create_subscription(String, "/robolearn/episode", lambda m: episode.append(m.data), LATCHED)
    spin_for(node, max(0.0, seconds - 8.0))
    report["joint_states_received"] = len(joints)
    return report


def robot(seconds: float) -> dict:
    node = rclpy.create_node("ros2_robot")
    order = [JOINTS[i] for i in (3, 0, 5, 1, 4, 2)]  # not the driver's order: matching must be by name
    pub_joints = node.create_publisher(JointState, "/joint_states", RELIABLE)
    pub_gripper = node.create_publisher(Float64MultiArray, "/gripper_opening", RELIABLE)
    pub_cube = node.create_publisher(PoseStamped, "/cube_pose", RELIABLE)
    received = []
    node.create_subscription(Float64MultiArray, "/position_controller/commands",
                             lambda m: received.append((time.time(), list(m.data))), RELIABLE)
    home = {"shoulder_pan": 0.0, "shoulder_lift": -0.3, "elbow_flex": 0.6, "wrist_flex": 0.9, "wrist_roll": 0.0,
            "gripper": 0.5}

    def publish():
        now = node.get_clock().now().to_msg()
        msg = JointState(name=order, position=[home[j] for j in order], velocity=[0.0] * 6)
        msg.header.stamp = now
        pub_joints.publish(msg)
        pub_gripper.publish(Float64MultiArray(data=[0.03]))
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = now, "world"
        pose.pose.position.x, pose.pose.position.z, pose.pose.orientation.w = 0.2, 0.015, 1.0
        pub_cube.publish(pose)

    spin_for(node, seconds, publish)
    times = [t for t, _ in received]
    return {"commands": len(received),
            "all_six_finite": all(len(d) == 6 and all(math.isfinite(v) for v in d) for _, d in received),
            "rate_hz": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0}


def feed_recorder(seconds: float) -> dict:
    node = rclpy.create_node("ros2_feeder")
    pub_joints = node.create_publisher(JointState, "/joint_states", RELIABLE)
    pub_gripper = node.create_publisher(Float64MultiArray, "/gripper_opening", RELIABLE)
    pub_cube = node.create_publisher(PoseStamped, "/cube_pose", RELIABLE)
    pub_commands = node.create_publisher(Float64MultiArray, "/position_controller/commands", RELIABLE)
    trigger = node.create_publisher(String, "/recorder/trigger", LATCHED)
    matched = wait_for_subscribers(node, trigger)
    step = [0]

    def publish():
        step[0] += 1
        now = node.get_clock().now().to_msg()
        msg = JointState(name=JOINTS, position=[0.01 * step[0]] * 6, velocity=[0.0] * 6)
        msg.header.stamp = now
        pub_joints.publish(msg)
        pub_gripper.publish(Float64MultiArray(data=[0.02]))
        pose = PoseStamped()
        pose.header.stamp = now
        pose.pose.position.x, pose.pose.orientation.w = 0.2, 1.0
        pub_cube.publish(pose)
        pub_commands.publish(Float64MultiArray(data=[0.5] * 6))

    spin_for(node, 1.0, publish)
    trigger.publish(String(data="start"))
    spin_for(node, seconds, publish)
    trigger.publish(String(data="stop"))
    spin_for(node, 1.5, publish)
    return {"trigger_matched": matched, "published": step[0]}


def params(cases: list[list[str]]) -> list[dict]:
    out = []
    for argv in cases:
        context = rclpy.context.Context()
        rclpy.init(args=["peer", *argv], context=context)
        node = rclpy.create_node("policy_node", context=context, automatically_declare_parameters_from_overrides=True)
        out.append({p.name: p.value for p in node._parameters.values()
                    if p.name not in ("use_sim_time", "start_type_description_service")})
        node.destroy_node()
        rclpy.shutdown(context=context)
    return out


def param_client(target: str) -> dict:
    from rcl_interfaces.srv import GetParameters, ListParameters

    node = rclpy.create_node("ros2_param_client")
    out = {}
    for name, srv in (("list_parameters", ListParameters), ("get_parameters", GetParameters)):
        client = node.create_client(srv, f"/{target}/{name}")
        if not client.wait_for_service(timeout_sec=10.0):
            out[name] = None
            continue
        request = srv.Request()
        if name == "get_parameters":
            request.names = ["control_hz", "robot"]
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        result = future.result()
        out[name] = (list(result.result.names) if name == "list_parameters"
                     else [(v.type, v.double_value, v.string_value) for v in result.values])
    return out


def graph(target: str) -> dict:
    node = rclpy.create_node("ros2_graph_client")
    end = time.monotonic() + 10.0
    while time.monotonic() < end and (target, "/") not in node.get_node_names_and_namespaces():
        rclpy.spin_once(node, timeout_sec=0.1)
    spin_for(node, 0.5)  # the node's endpoints arrive with its announcement
    return {"nodes": [list(n) for n in node.get_node_names_and_namespaces()],
            "publishers": {t: types for t, types in node.get_publisher_names_and_types_by_node(target, "/")},
            "subscribers": {t: types for t, types in node.get_subscriber_names_and_types_by_node(target, "/")}}


def main() -> None:
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "params":
        print(json.dumps(params(json.loads(arg))), flush=True)
        return
    rclpy.init()
    modes = {"driver": driver, "robot": robot, "feed_recorder": feed_recorder, "param_client": param_client,
             "graph": graph}
    report = modes[mode](arg if mode in ("param_client", "graph") else float(arg))
    print(json.dumps(report), flush=True)
    rclpy.shutdown()


if __name__ == "__main__":
    main()
