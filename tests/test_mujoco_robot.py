"""MujocoRobot behind the Robot interface: safety filter, watchdog, latency, pacing."""

import time

import numpy as np
import pytest

from robolearn.hardware import MujocoRobot, RobotError


def test_connect_read_and_track_a_reachable_target():
    with MujocoRobot(realtime=False) as robot:
        obs = robot.read()
        assert obs.joint_pos.shape == (6,) and set(obs.extras) == {"gripper_opening", "cube_pos", "cube_quat"}
        target = obs.joint_pos + np.array([0.2, 0.1, -0.1, 0.1, 0.3, 0.0])
        for _ in range(40):  # 2 s of virtual time at 20 Hz
            sent = robot.send(target)
        np.testing.assert_allclose(sent, target, atol=1e-9)
        np.testing.assert_allclose(robot.read().joint_pos[:5], target[:5], atol=0.03)
        assert robot.read().timestamp == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(RobotError, match="not connected"):
        robot.read()


def test_commands_are_limited_and_nan_is_held():
    with MujocoRobot(realtime=False) as robot:
        start = robot.read().joint_pos
        sent = robot.send(np.full(6, 100.0))
        assert np.all(sent <= robot.limits.upper)
        assert np.all(np.abs(sent - start) <= robot.limits.max_velocity * robot.safety.max_step_seconds + 1e-9)
        held = robot.send(np.full(6, np.nan))
        np.testing.assert_array_equal(held, sent)
        assert np.all(np.isfinite(robot.read().joint_pos))


def test_watchdog_holds_position_when_commands_stop():
    with MujocoRobot(realtime=False, watchdog_timeout=0.25) as robot:
        for _ in range(5):
            robot.send(robot.read().joint_pos + 0.05)
        sent = [robot.tick() for _ in range(20)]  # 1 s with no commands
        assert robot.safety.watchdog_tripped
        np.testing.assert_allclose(sent[-1], sent[-10])  # holding, not drifting
        assert np.abs(robot.read().joint_vel).max() < 0.05


def test_stop_latches_until_reset():
    with MujocoRobot(realtime=False) as robot:
        position = robot.read().joint_pos
        robot.stop()
        for _ in range(10):
            np.testing.assert_allclose(robot.send(position + 0.5), robot.send(position - 0.5))
        robot.reset_stop()
        assert not np.allclose(robot.send(position + 0.5), position, atol=1e-3)


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_world_action_delay_delays_the_servos(delay):
    with MujocoRobot(realtime=False, world={"latency": {"action_delay": delay}}) as robot:
        robot.tick()  # let 0.05 s pass, so the rate limit allows a move
        q0 = robot.read().joint_pos
        robot.send(q0 + 0.05)  # 0.05 s later: applied without delay, not yet with 0.1 s
        moved_early = np.abs(robot.read().joint_pos - q0).max()
        robot.send(q0 + 0.05)
        robot.send(q0 + 0.05)  # 0.15 s: applied in both
        moved_late = np.abs(robot.read().joint_pos - q0).max()
    assert (moved_early < 0.01) == (delay > 0)  # (the held arm itself sags ~0.004 rad)
    assert moved_late > 0.03


def test_realtime_pacing_follows_the_wall_clock():
    with MujocoRobot(realtime=True) as robot:
        time.sleep(0.2)
        assert robot.read().timestamp == pytest.approx(0.2, abs=0.1)


def test_simulated_camera_frames():
    with MujocoRobot(realtime=False, cameras={"front": (48, 64), "wrist": (32, 32)}) as robot:
        images = robot.read().images
        assert images["front"].shape == (48, 64, 3) and images["wrist"].shape == (32, 32, 3)
        assert images["front"].dtype == np.uint8 and images["front"].std() > 5


def test_opencv_camera_reads_timestamped_rgb_frames(tmp_path):
    import imageio

    from robolearn.hardware import OpenCVCamera

    frames = [np.full((32, 48, 3), (200, 20, 20), np.uint8) for _ in range(5)]
    imageio.mimsave(tmp_path / "clip.mp4", frames, fps=10, macro_block_size=8)
    with OpenCVCamera(str(tmp_path / "clip.mp4")) as camera:
        t0, frame = camera.read()
        t1, _ = camera.read()
    assert frame.shape == (32, 48, 3) and t1 >= t0
    assert frame[..., 0].mean() > 150 and frame[..., 2].mean() < 80  # RGB order, not OpenCV's BGR
    with pytest.raises(RobotError, match="cannot be opened"):
        OpenCVCamera(str(tmp_path / "missing.mp4")).connect()
