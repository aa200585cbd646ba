"""ROS 2 nodes under malformed and hostile messages and parameters: a node never dies of a message, never
passes a bad value on, refuses implausible trajectories and timing, and says why it sends nothing."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ros_helpers import FakeTransport

from robolearn.policies.features import ObsFeature
from robolearn.ros.msgs import (
    Float64MultiArray,
    Header,
    JointState,
    JointTrajectory,
    JointTrajectoryPoint,
    Point,
    Pose,
    PoseStamped,
    Quaternion,
    Time,
)
from robolearn.ros.node import ObservationInbox, RateLimitedLog
from robolearn.ros.policy_node import PolicyNode
from robolearn.sim.arm import JOINT_NAMES
from robolearn.sim.lift import HOME_QPOS

OBS_PARAMS = {"joint_states_topic": "/joint_states", "gripper_opening_topic": "/gripper_opening",
              "cube_pose_topic": "/cube_pose"}
KEYS = ["joint_pos", "joint_vel", "gripper_opening", "cube_pos", "cube_quat"]


class ZeroPolicy:
    """Answers at once with a chunk of home poses."""

    obs_features = {"joint_pos": ObsFeature((6,)), "gripper_opening": ObsFeature((1,))}
    n_obs_steps, n_action_steps = 2, 8
    device = torch.device("cpu")

    def predict_action(self, obs, generator=None):
        assert all(torch.isfinite(v).all() for v in obs.values()), "a bad observation reached the policy"
        return torch.as_tensor(HOME_QPOS, dtype=torch.float32).expand(1, 8, 6).clone()


def policy_node(**overrides):
    from robolearn.ros.policy_node import PARAMETERS

    transport = FakeTransport()
    return transport, PolicyNode(transport, {**PARAMETERS, "checkpoint": "unused", **overrides}, policy=ZeroPolicy())


def joint_states(stamp=None, names=JOINT_NAMES, position=None):
    position = [0.0] * len(names) if position is None else position
    return JointState(header=Header(stamp=Time.from_seconds(time.time() if stamp is None else stamp)), name=list(names),
                      position=list(position), velocity=[0.0] * len(position))


def run(node, transport, seconds, gripper=(0.02,), stamp_offset=0.0, period=0.05):
    tick = start = time.monotonic()
    while tick - start < seconds:
        transport.deliver("/joint_states", joint_states(stamp=time.time() + stamp_offset))
        transport.deliver("/gripper_opening", Float64MultiArray(data=list(gripper)))
        node.step(tick)
        tick += period
        time.sleep(max(0.0, tick - time.monotonic()))


def commands(transport):
    return [m for topic, m in transport.published if topic == "/position_controller/commands"]


def test_empty_gripper_message_does_not_kill_the_policy_node(capsys):
    transport, node = policy_node()
    run(node, transport, 0.4, gripper=())  # every /gripper_opening is empty
    assert commands(transport) == []
    assert "gripper_opening needs 1 value(s), got 0" in node.inbox.errors["gripper_opening"]
    err = capsys.readouterr().err
    assert "dropped a malformed message on /gripper_opening" in err
    assert "sending nothing: gripper_opening on /gripper_opening: messages dropped" in err  # says why, while it happens
    run(node, transport, 0.6)  # valid messages again: it acts
    assert len(commands(transport)) > 3
    node.close()


def test_observations_stamped_behind_this_clock_still_drive_the_robot(capsys):
    """A sender whose clock is 0.5 s behind: the stamps cannot be trusted, arrival times are used, and the
    node says so (it used to send nothing, silently)."""
    transport, node = policy_node()
    run(node, transport, 1.0, stamp_offset=-0.5)
    assert len(commands(transport)) > 10
    assert node.stats.counters["untrusted_observation_stamps"] >= 1
    assert "observation stamps are 0.5" in capsys.readouterr().err
    node.close()


@pytest.mark.parametrize("hz", [-20.0, 0.0, 1e6, float("inf"), float("nan"), "fast", True])
def test_control_hz_must_be_a_sane_rate(hz):
    from robolearn.hardware.mujoco_robot import MujocoRobot
    from robolearn.ros.driver_node import PARAMETERS, RobotDriverNode

    with pytest.raises(ValueError, match="control_hz must be a finite rate"):
        policy_node(control_hz=hz)
    with pytest.raises(ValueError, match="control_hz must be a finite rate"):
        RobotDriverNode(FakeTransport(), {**PARAMETERS, "control_hz": hz}, robot=MujocoRobot(realtime=False))


@pytest.mark.parametrize(("name", "value"), [("watchdog_timeout", float("nan")), ("watchdog_timeout", float("inf")),
                                             ("episode_seconds", -1.0), ("reset_grace", float("nan"))])
def test_driver_timing_parameters_validated(name, value):
    from robolearn.hardware.mujoco_robot import MujocoRobot
    from robolearn.ros.driver_node import PARAMETERS, RobotDriverNode

    with pytest.raises(ValueError, match=name):
        RobotDriverNode(FakeTransport(), {**PARAMETERS, name: value}, robot=MujocoRobot(realtime=False))


def test_bad_parameter_is_one_line_from_the_node_process():
    env = {**os.environ, "ROBOLEARN_TRANSPORT": "dds", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(150 + os.getpid() % 50)}
    for value in ("-20.0", ".nan", "1.0e+6"):
        proc = subprocess.run([sys.executable, "-m", "robolearn.ros", "robot_driver_node", "--ros-args", "-p",
                               f"control_hz:={value}"], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "[robot_driver] error: control_hz must be" in proc.stderr


def driver():
    from robolearn.hardware.mujoco_robot import MujocoRobot
    from robolearn.ros.driver_node import PARAMETERS, RobotDriverNode

    transport = FakeTransport()
    robot = MujocoRobot(realtime=False)
    return transport, robot, RobotDriverNode(transport, dict(PARAMETERS), robot=robot)


def trajectory(stamp_seconds=None, stamp=None, target=None, time_from_start=0.0):
    target = HOME_QPOS + 0.02 if target is None else target
    header = Header(stamp=stamp if stamp is not None else Time.from_seconds(stamp_seconds or 0.0))
    return JointTrajectory(header=header, joint_names=list(JOINT_NAMES),
                           points=[JointTrajectoryPoint(positions=[float(v) for v in target],
                                                        time_from_start=_duration(time_from_start))])


def _duration(seconds):
    from robolearn.ros.msgs import Duration

    return Duration.from_seconds(seconds)


@pytest.mark.parametrize("make", [lambda: trajectory(stamp_seconds=time.time() + 3600),
                                  lambda: trajectory(stamp=Time(2**31 - 1, 0)),
                                  lambda: trajectory(stamp_seconds=time.time() - 3600),
                                  lambda: trajectory(time_from_start=-1.0),
                                  lambda: trajectory(time_from_start=3600.0),
                                  lambda: trajectory(target=[np.nan] * 6)])
def test_implausible_trajectories_are_refused_and_the_driver_holds(make, capsys):
    transport, robot, node = driver()
    transport.deliver("/position_controller/joint_trajectory", make())
    assert node.stats.counters["rejected_commands"] == 1 and node.trajectory == []
    assert "rejected a joint_trajectory message" in capsys.readouterr().err
    t = time.monotonic()
    for i in range(8):  # no valid command: the watchdog holds the arm
        node.step(t + 0.05 * i)
    assert robot.safety.watchdog_tripped
    transport.deliver("/position_controller/joint_trajectory", trajectory(stamp_seconds=time.time()))
    assert node.stats.counters.get("commands_received") == 1  # a plausible one still goes through
    node.close()


@pytest.mark.parametrize("data", [[], [0.0] * 5, [0.0] * 7, [np.nan] * 6, [np.inf] * 6])
def test_malformed_commands_are_refused(data):
    transport, robot, node = driver()
    transport.deliver("/position_controller/commands", Float64MultiArray(data=data))
    assert node.stats.counters["rejected_commands"] == 1 and node.target is None
    node.close()


def test_rate_limited_log_holds_back_repeats(capsys):
    log = RateLimitedLog("n", interval=60)
    assert log("k", "first") and not log("k", "second") and log("other", "third")
    assert capsys.readouterr().err.count("[n]") == 2


# -- property: random malformed messages never raise and never pass a bad value on -------------------
any_float = st.floats(allow_nan=True, allow_infinity=True)
names = st.lists(st.sampled_from([*JOINT_NAMES, "elbow", ""]), max_size=8)
message = st.one_of(
    st.builds(lambda n, p, v: ("/joint_states", JointState(header=Header(stamp=Time.from_seconds(time.time())),
                                                           name=n, position=p, velocity=v)),
              names, st.lists(any_float, max_size=8), st.lists(any_float, max_size=8)),
    st.builds(lambda d: ("/gripper_opening", Float64MultiArray(data=d)), st.lists(any_float, max_size=3)),
    st.builds(lambda p, q: ("/cube_pose", PoseStamped(header=Header(stamp=Time.from_seconds(time.time())),
                                                      pose=Pose(position=Point(*p), orientation=Quaternion(*q)))),
              st.tuples(any_float, any_float, any_float), st.tuples(any_float, any_float, any_float, any_float)))
SHAPES = {"joint_pos": (6,), "joint_vel": (6,), "gripper_opening": (1,), "cube_pos": (3,), "cube_quat": (4,)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(message, min_size=1, max_size=20))
def test_property_inbox_survives_and_keeps_only_valid_values(messages, capsys):
    transport = FakeTransport()
    inbox = ObservationInbox(transport, KEYS, OBS_PARAMS, JOINT_NAMES, log=RateLimitedLog("test", interval=1e9))
    for topic, msg in messages:
        transport.deliver(topic, msg)
    for key, (value, _, _) in inbox.latest.items():
        assert value.shape == SHAPES[key] and np.all(np.isfinite(value)), (key, value)
    fresh = inbox.fresh(time.monotonic(), 1.0)
    assert fresh is None or all(np.all(np.isfinite(v)) for v in fresh.values())
    capsys.readouterr()
