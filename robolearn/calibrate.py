"""`robolearn calibrate`: measure a bus arm's homing offsets and joint ranges, write the calibration YAML."""

from __future__ import annotations

import select
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig

from robolearn.errors import UserError
from robolearn.hardware.bus import BusError
from robolearn.hardware.calibration import ArmCalibration, JointCalibration
from robolearn.hardware.factory import BUSES, hardware_config_path
from robolearn.outputs import check_writable
from robolearn.sim.arm import JOINT_NAMES


def _wait_enter(stream, sample=None, rate_hz: float = 20.0) -> None:
    """Block until a line arrives on `stream`, calling `sample()` at `rate_hz` meanwhile."""
    while True:
        if select.select([stream], [], [], 1.0 / rate_hz)[0]:
            stream.readline()
            return
        if sample is not None:
            sample()


def calibrate(cfg: DictConfig, stream=None) -> Path:
    """Hydra task: torque off; the user poses the arm at the model's zero pose (Enter), then moves
    every joint through its range (Enter). Homing offsets are the zero-pose readings; ranges the
    extremes seen; directions are kept from the base config. Writes `cfg.output`."""
    stream = sys.stdin if stream is None else stream
    check_writable(cfg.output, "output")  # before the user spends minutes moving the arm
    base_path = hardware_config_path(cfg.robot)
    base = yaml.safe_load(base_path.read_text())
    bus_spec = dict(base["bus"], port=cfg.port or base["bus"]["port"])
    base_cal = ArmCalibration.load(base_path)
    bus = BUSES[bus_spec["type"]](bus_spec["port"], int(bus_spec.get("baudrate", 1_000_000)))
    ids = base_cal.servo_ids
    try:
        bus.open()
    except BusError as exc:
        raise UserError(str(exc)) from exc
    regs = type(bus).REGISTERS
    with bus:
        missing = [f"{j} (ID {sid})" for j, sid in zip(JOINT_NAMES, ids) if not bus.ping(sid)]
        if missing:
            raise UserError(f"servos not answering on {bus_spec['port']}: {', '.join(missing)}")
        bus.sync_write(*regs["torque_enable"], {sid: 0 for sid in ids})

        def positions() -> np.ndarray:
            raw = bus.sync_read(ids, *regs["present_position"])
            return np.array([raw[sid] for sid in ids])

        print("Torque is off. Move the arm to its zero pose: every link pointing straight up, jaw closed. "
              "Then press Enter.", flush=True)
        _wait_enter(stream)
        zero = positions()
        low, high = zero.copy(), zero.copy()

        def sample() -> None:
            nonlocal low, high
            p = positions()
            low, high = np.minimum(low, p), np.maximum(high, p)

        print("Now move every joint slowly through its whole range, then press Enter.", flush=True)
        _wait_enter(stream, sample)
        sample()
    joints = {}
    for i, name in enumerate(JOINT_NAMES):
        if high[i] - low[i] < 50:
            raise UserError(f"{name} (ID {ids[i]}) moved only {high[i] - low[i]} ticks; move every joint "
                            "through its range and run robolearn calibrate again")
        joints[name] = JointCalibration(ids[i], int(zero[i]), int(low[i]), int(high[i]),
                                        base_cal.joints[name].direction)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    ArmCalibration(joints, base_cal.ticks_per_turn).save(out)
    data = yaml.safe_load(out.read_text())
    out.write_text(yaml.safe_dump({"bus": bus_spec, **data}, sort_keys=False))
    print(f"calibration written to {out} (use it with calibration={out}); taken at {time.strftime('%Y-%m-%d %H:%M')}")
    return out
