"""Servo bus drivers against the pty emulator: wire protocol, calibration, errors, BusArm."""

import time

import numpy as np
import pytest

from robolearn.hardware.bus import (
    BusError,
    BusTimeout,
    DynamixelBus,
    FeetechBus,
    ServoError,
    stuff,
    unstuff,
)
from robolearn.hardware.bus_arm import BusArm
from robolearn.hardware.calibration import ArmCalibration, JointCalibration
from robolearn.hardware.emulator import ServoBusEmulator
from robolearn.hardware.robot import RobotError
from robolearn.paths import config_dir

BUSES = [("feetech", FeetechBus), ("dynamixel", DynamixelBus)]


def eventually(condition, seconds: float = 1.0) -> bool:
    """Sync writes get no status packet: give the emulator thread a moment to apply them."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture(params=BUSES, ids=[b[0] for b in BUSES])
def bus_pair(request):
    protocol, cls = request.param
    with ServoBusEmulator(protocol, range(1, 7), cls.REGISTERS) as emu:
        yield emu, cls


def test_ping_read_write_and_sync(bus_pair):
    emu, cls = bus_pair
    with cls(emu.port) as bus:
        assert bus.ping(3) and not bus.ping(42)
        addr, n = cls.REGISTERS["goal_position"]
        bus.write(2, addr, 1234, n)
        assert emu.goal(2) == 1234 and bus.read(2, addr, n) == 1234
        bus.sync_write(addr, n, {1: 100, 5: 4000})  # no status packet: read back to order the check
        assert bus.sync_read([1, 2, 5], addr, n) == {1: 100, 2: 1234, 5: 4000}
        assert (emu.goal(1), emu.goal(5)) == (100, 4000)


def test_dynamixel_byte_stuffing_round_trip():
    assert stuff(b"\x03\xff\xff\xfd\x00") == b"\x03\xff\xff\xfd\xfd\x00"
    assert unstuff(stuff(b"\xff\xff\xfd\xff\xff\xfd")) == b"\xff\xff\xfd\xff\xff\xfd"
    regs = DynamixelBus.REGISTERS
    with ServoBusEmulator("dynamixel", [1], regs) as emu, DynamixelBus(emu.port) as bus:
        value = int.from_bytes(b"\xff\xff\xfd\x00", "little")  # its bytes need stuffing on the wire
        bus.write(1, *regs["homing_offset"][:1], value, regs["homing_offset"][1])
        assert bus.read(1, *regs["homing_offset"]) == value


def test_servo_error_status_is_a_clear_error(bus_pair):
    emu, cls = bus_pair
    bits = 0x20 if cls is FeetechBus else 0x80
    emu.set_error(4, bits)
    with cls(emu.port) as bus, pytest.raises(ServoError, match=r"servo 4 reports error.*(overload|hardware alert)"):
        bus.read(4, *cls.REGISTERS["present_position"])


def test_missing_port_and_unplugged_servo(bus_pair, tmp_path):
    emu, cls = bus_pair
    with pytest.raises(BusError, match="cannot open servo bus port"):
        cls(str(tmp_path / "ttyNOPE")).open()
    emu.unplugged.add(6)
    with cls(emu.port, timeout=0.05) as bus, pytest.raises(BusTimeout, match="servo 6 .* did not answer"):
        bus.sync_read([5, 6], *cls.REGISTERS["present_position"])


def test_calibration_conversion_and_yaml(tmp_path):
    cal = ArmCalibration.load(config_dir() / "hardware" / "so101.yaml")
    assert cal.servo_ids == [1, 2, 3, 4, 5, 6]
    q = np.array([0.3, -0.2, 1.0, 0.5, -1.5, 0.4])
    np.testing.assert_allclose(cal.to_rad(cal.to_ticks(q)), q, atol=2 * np.pi / 4096)
    flipped = ArmCalibration({**cal.joints, "wrist_roll": JointCalibration(5, 2048, 0, 4095, -1)})
    assert flipped.to_ticks(q)[4] == 2048 + round(1.5 * 4096 / (2 * np.pi))
    assert cal.to_ticks(np.full(6, 10.0))[5] == 2830  # clipped to the servo's range
    cal.save(tmp_path / "c.yaml")
    np.testing.assert_array_equal(ArmCalibration.load(tmp_path / "c.yaml").to_ticks(q), cal.to_ticks(q))
    (tmp_path / "bad.yaml").write_text("joints:\n  shoulder_pan: {servo_id: 1}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        ArmCalibration.load(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="direction must be 1 or -1"):
        JointCalibration(1, 2048, 0, 4095, 2)


def test_bus_arm_reads_and_commands_through_calibration_and_safety(bus_pair):
    emu, cls = bus_pair
    cal = ArmCalibration.load(config_dir() / "hardware" / "so101.yaml")
    with BusArm(cls(emu.port), cal) as arm:
        assert eventually(lambda: all(emu._get(sid, "torque_enable") == 1 for sid in range(1, 7)))
        np.testing.assert_allclose(arm.read().joint_pos, 0.0, atol=1e-9)  # emulator starts at 2048 ticks
        target = np.array([0.2, -0.1, 0.3, 0.1, -0.2, 0.3])
        for _ in range(40):
            sent = arm.send(target)
            time.sleep(0.01)
        np.testing.assert_allclose(sent, target)  # reachable, so passed through once the rate limit allows
        time.sleep(0.2)
        np.testing.assert_allclose(arm.read().joint_pos, target, atol=2 * np.pi / 4096)
        assert [emu.goal(s) for s in range(1, 7)] == cal.to_ticks(target).tolist()
        first = arm.send(np.full(6, np.nan))  # NaN: the previous command is held on the bus
        np.testing.assert_allclose(first, target)
    assert eventually(lambda: all(emu._get(sid, "torque_enable") == 0 for sid in range(1, 7)))


def test_bus_arm_connect_names_a_missing_servo(bus_pair):
    emu, cls = bus_pair
    emu.unplugged.add(3)
    cal = ArmCalibration.load(config_dir() / "hardware" / "so101.yaml")
    with pytest.raises(RobotError, match=r"elbow_flex \(ID 3\)"):
        BusArm(cls(emu.port), cal).connect()


def test_calibrate_command_measures_zero_pose_and_ranges(tmp_path):
    import subprocess
    import sys

    from robolearn.hardware.factory import make_bus_arm

    with ServoBusEmulator("feetech", range(1, 7), FeetechBus.REGISTERS, initial_position=2100) as emu:
        out = tmp_path / "follower.yaml"
        proc = subprocess.Popen([sys.executable, "-m", "robolearn", "calibrate", "robot=so101", f"port={emu.port}",
                                 f"output={out}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert "zero pose" in proc.stdout.readline()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert "whole range" in proc.stdout.readline()
        for value in (1500, 2700, 2200):  # the person sweeps every joint
            for sid in range(1, 7):
                emu._set(sid, "present_position", value)
            time.sleep(0.3)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        cal = ArmCalibration.load(out)
        j = cal.joints["elbow_flex"]
        assert (j.servo_id, j.homing_offset, j.range_min, j.range_max) == (3, 2100, 1500, 2700)
        with make_bus_arm("so101", calibration=str(out), read_only=True) as arm:  # the written file drives it
            np.testing.assert_allclose(arm.read().joint_pos, (2200 - 2100) * 2 * np.pi / 4096)
