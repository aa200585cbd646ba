"""Teleoperation devices, `robolearn record` (crash safety, trainable output) and `robolearn replay`."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_train_cli import TINY, run

from robolearn.datasets import ReplayBuffer
from robolearn.hardware.bus import FeetechBus
from robolearn.hardware.bus_arm import BusArm
from robolearn.hardware.calibration import ArmCalibration
from robolearn.hardware.emulator import ServoBusEmulator
from robolearn.hardware.robot import RobotObservation
from robolearn.hardware.teleop import (
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    CartesianMapper,
    KeyboardTeleop,
    LeaderArmTeleop,
    TeleopCommand,
    gamepad_command,
    spacemouse_command,
)
from robolearn.paths import config_dir
from robolearn.sim.lift import HOME_QPOS


def obs_at(q):
    return RobotObservation(0.0, np.asarray(q, dtype=float), np.zeros(6))


def test_keyboard_keys_become_moves_gripper_and_events():
    r, w = os.pipe()
    kb = KeyboardTeleop(step=0.01, roll_step=0.1, stream=r).connect()
    os.write(w, b"wwaqgc")
    cmd = kb.read(obs_at(HOME_QPOS))
    np.testing.assert_allclose(cmd.ee_delta, [0.02, 0.01, 0.0])
    assert cmd.roll_delta == pytest.approx(0.1) and cmd.gripper == GRIPPER_CLOSED and cmd.events == {"start"}
    os.write(w, b"fvb\x1b")
    cmd = kb.read(obs_at(HOME_QPOS))
    np.testing.assert_allclose(cmd.ee_delta, [0, 0, -0.01])
    assert cmd.events == {"stop", "discard", "quit"}
    assert kb.read(obs_at(HOME_QPOS)).events == set()  # nothing pressed
    os.close(r)
    os.close(w)


def test_gamepad_and_spacemouse_mappings():
    cmd = gamepad_command([0.05, -1.0, 0.0, 0.5], {0, 7}, dt=0.1, speed=0.1, gripper_closed=True)
    assert cmd.ee_delta[0] == pytest.approx(0.01) and cmd.ee_delta[1] == 0.0  # inside the dead zone
    assert cmd.ee_delta[2] < 0 and cmd.gripper == GRIPPER_CLOSED and cmd.events == {"start"}
    assert gamepad_command([0, 0, 0, 0], {1, 3}, dt=0.1).events == {"discard", "quit"}
    cmd = spacemouse_command([1, 0, -1, 0, 0, 0.5], {0}, dt=0.05, speed=0.2, gripper_closed=False)
    np.testing.assert_allclose(cmd.ee_delta, [0.01, 0, -0.01])
    assert cmd.roll_delta > 0 and cmd.gripper == GRIPPER_OPEN


def test_cartesian_mapper_moves_the_gripper_by_the_delta():
    mapper = CartesianMapper()
    mapper.reset(HOME_QPOS)
    start = mapper.ik.site_pose(HOME_QPOS[:5])[0]
    target = mapper(TeleopCommand(ee_delta=np.array([0.03, -0.02, -0.04])))
    np.testing.assert_allclose(mapper.ik.site_pose(target[:5])[0], start + [0.03, -0.02, -0.04], atol=1e-3)
    far = mapper(TeleopCommand(ee_delta=np.array([5.0, 0, 0])))  # clipped to the workspace
    assert mapper.ik.site_pose(far[:5])[0][0] <= mapper.high[0] + 1e-3


def test_leader_arm_is_mirrored_in_joint_space_and_never_torqued():
    with ServoBusEmulator("feetech", range(1, 7), FeetechBus.REGISTERS, initial_position=2148) as emu:
        cal = ArmCalibration.load(config_dir() / "hardware" / "so101.yaml")
        with LeaderArmTeleop(BusArm(FeetechBus(emu.port), cal, read_only=True)) as leader:
            cmd = leader.read(None)
        np.testing.assert_allclose(cmd.joint_target, 100 * 2 * np.pi / 4096)
        assert all(emu._get(s, "torque_enable") == 0 for s in range(1, 7))


def test_expert_does_not_start_an_episode_while_the_last_lift_is_still_in_view():
    from robolearn.hardware.teleop import ExpertTeleop
    from robolearn.sim.expert import LiftExpert
    from robolearn.sim.lift import CUBE_HALF_SIZE, LIFT_HEIGHT, TABLE_TOP_Z, cube_lifted

    def obs(cube_z):  # the scene reports its success test, as MujocoRobot does
        return RobotObservation(timestamp=0.0, joint_pos=np.array(HOME_QPOS[:6], dtype=float), joint_vel=np.zeros(6),
                                extras={"gripper_opening": np.array([0.06]), "cube_quat": np.array([1.0, 0, 0, 0]),
                                        "cube_pos": np.array([0.2, 0.0, cube_z])}, success=cube_lifted(cube_z))

    expert = ExpertTeleop(LiftExpert(), episodes=2)
    lifted, on_table = obs(TABLE_TOP_Z + CUBE_HALF_SIZE + LIFT_HEIGHT + 0.01), obs(TABLE_TOP_Z + CUBE_HALF_SIZE)
    assert expert.read(on_table).events == {"start"}
    assert expert.read(lifted).events == {"stop"}  # episode 1 done
    # stale observations of the lifted cube (the scene reset not seen yet): hold, no phantom episode
    for _ in range(3):
        command = expert.read(lifted)
        assert command.events == set() and np.allclose(command.joint_target, lifted.joint_pos)
    assert expert.read(on_table).events == {"start"}  # the reset scene starts episode 2


def test_scripted_teleop_records_episodes_that_train_loads(tmp_path):
    out = run("record", "device=expert", "max_episodes=2", "realtime=false", f"output={tmp_path}/rec.zarr",
              cwd=tmp_path)
    assert "2 episodes recorded this session" in out.stdout
    rb = ReplayBuffer.open(tmp_path / "rec.zarr")
    assert rb.n_episodes == 2 and rb.episode_lengths.min() > 20
    assert {"joint_pos", "action", "timestamp", "cube_pos", "gripper_opening"} <= set(rb.keys)
    train = run("train", f"dataset={tmp_path}/rec.zarr", f"run_dir={tmp_path}/run", "training.steps=5",
                "training.val_ratio=0.0", "eval.n_episodes=0", "eval.final_n_episodes=1", "eval.n_video=0",
                *[o for o in TINY if not o.startswith("eval.")], cwd=tmp_path)
    assert "success" in train.stdout

    rep = run("replay", f"dataset={tmp_path}/rec.zarr", "episode=1", "realtime=false", cwd=tmp_path).stdout
    max_error = float(re.search(r"max ([0-9.]+) rad", rep).group(1))
    assert max_error < 0.01, rep


def test_sigkill_while_recording_keeps_finished_episodes(tmp_path):
    path = tmp_path / "rec.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "robolearn", "record", "device=expert", "max_episodes=100",
                             "realtime=false", f"output={path}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (path.exists() and ReplayBuffer.open(path).n_episodes >= 2):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.05)  # into the next episode
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    rb = ReplayBuffer.open(path)
    assert rb.n_episodes >= 2
    for i in range(rb.n_episodes):
        ep = rb.get_episode(i)
        assert ep["done"][-1] and not ep["done"][:-1].any()
        assert len(ep["action"]) == len(ep["joint_pos"]) > 20


def test_keyboard_recording_in_a_terminal_session(tmp_path):
    """Keys typed into `robolearn record` (simulated arm, real time): start, move, save, quit."""
    proc = subprocess.Popen([sys.executable, "-m", "robolearn", "record", "device=keyboard",
                             f"output={tmp_path}/kb.zarr"], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (tmp_path / "kb.zarr").exists():  # the recorder is up once its dataset exists
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    for keys in (b"c", b"wwww", b"rrrr", b"g", b"v", b"\x1b"):
        time.sleep(0.6)
        proc.stdin.write(keys)
        proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    rb = ReplayBuffer.open(tmp_path / "kb.zarr")
    assert rb.n_episodes == 1
    ep = rb.get_episode(0)
    assert len(ep["action"]) >= 10  # about 2.4 s at 20 Hz
    assert ep["action"][-1, 5] < ep["action"][0, 5]  # the gripper was closed with g
    assert np.ptp(ep["action"][:, 1]) > 0.01  # the arm moved


def test_a_real_arm_recording_trains_without_a_simulator(tmp_path):
    run("record", "device=expert", "max_episodes=2", "realtime=false", f"output={tmp_path}/rec.zarr", cwd=tmp_path)
    out = run("train", "task=real_joints", f"dataset={tmp_path}/rec.zarr", f"run_dir={tmp_path}/run",
              "training.steps=5", "training.val_ratio=0.0", *TINY, cwd=tmp_path).stdout
    assert "no simulator evaluation" in out
    assert (tmp_path / "run" / "checkpoints" / "latest" / "ema.safetensors").is_file()
