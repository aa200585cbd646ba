"""Build robots and teleoperation devices from names (used by `robolearn record` and `robolearn replay`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from robolearn.hardware.bus import DynamixelBus, FeetechBus
from robolearn.hardware.bus_arm import BusArm
from robolearn.hardware.calibration import ArmCalibration
from robolearn.hardware.camera import OpenCVCamera
from robolearn.hardware.mujoco_robot import MujocoRobot
from robolearn.hardware.robot import Robot
from robolearn.hardware.teleop import (
    ExpertTeleop,
    GamepadTeleop,
    KeyboardTeleop,
    LeaderArmTeleop,
    SpaceMouseTeleop,
    TeleopDevice,
)
from robolearn.paths import config_dir
from robolearn.sim.world import World

BUSES = {"feetech": FeetechBus, "dynamixel": DynamixelBus}


def hardware_config_path(name: str) -> Path:
    """configs/hardware/<name>.yaml, or `name` itself if it is a path to a YAML file.

    Raises FileNotFoundError naming the known robots.
    """
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"hardware config not found: {path}")
        return path
    path = config_dir() / "hardware" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no hardware config {path.name}; known robots: sim, {', '.join(known)}")
    return path


def make_bus_arm(name: str, port: str | None = None, read_only: bool = False,
                 calibration: str | None = None) -> BusArm:
    """A `BusArm` from configs/hardware/<name>.yaml (bus type, port, baud rate, calibration).

    `calibration`: a YAML written by `robolearn calibrate` that replaces the shipped calibration
    (and bus settings). Raises FileNotFoundError for an unknown name, ValueError for a bad file.
    """
    path = hardware_config_path(calibration or name)
    spec = yaml.safe_load(path.read_text())["bus"]
    if spec.get("type") not in BUSES:
        raise ValueError(f"{path}: bus.type must be one of {sorted(BUSES)}, got {spec.get('type')!r}")
    bus = BUSES[spec["type"]](port or spec["port"], int(spec.get("baudrate", 1_000_000)))
    return BusArm(bus, ArmCalibration.load(path), read_only=read_only)


def make_robot(name: str, port: str | None = None, realtime: bool = True, control_hz: float = 20.0,
               sim: dict | None = None, calibration: str | None = None, cameras: dict | None = None,
               world: dict | None = None) -> Robot:
    """"sim" -> `MujocoRobot` (options in `sim`: world (a world config mapping, `robolearn.sim.world`), seed,
    cameras {name: [height, width]}); any other name -> `make_bus_arm(name, port,
    calibration=calibration)` with `cameras` {name: OpenCV source (device index, path or URL)} as
    `OpenCVCamera`s. `world` (a world config mapping) is the simulated arm's world, if not in `sim`.

    Raises:
        ValueError: a world other than the nominal one for a real arm.
    """
    if name == "sim":
        return MujocoRobot(realtime=realtime, control_hz=control_hz, **({"world": world} | (sim or {})))
    if not World(world).is_nominal:
        raise ValueError(f"world={world.get('name')} applies to the simulated arm (robot=sim); a real arm is in "
                         "the real world")
    arm = make_bus_arm(name, port, calibration=calibration)
    arm.cameras = {camera: OpenCVCamera(source) for camera, source in (cameras or {}).items()}
    return arm


def make_device(name: str, rate_hz: float = 20.0, leader: str | None = None, leader_port: str | None = None,
                episodes: int = 1, seed: int = 0, leader_calibration: str | None = None) -> TeleopDevice:
    """keyboard | gamepad | spacemouse | leader (a read-only `make_bus_arm(leader, leader_port)`
    mirrored in joint space, episode keys from the keyboard) | expert (scripted, simulation)."""
    if name == "keyboard":
        return KeyboardTeleop()
    if name == "gamepad":
        return GamepadTeleop(rate_hz=rate_hz)
    if name == "spacemouse":
        return SpaceMouseTeleop(rate_hz=rate_hz)
    if name == "leader":
        if not leader:
            raise ValueError("device=leader needs leader=<hardware config name>, e.g. leader=so101")
        return LeaderArmTeleop(make_bus_arm(leader, leader_port, read_only=True, calibration=leader_calibration),
                               events_from=KeyboardTeleop())
    if name == "expert":  # the simulated arm's scene is Lift's: its expert drives
        from robolearn.sim.expert import LiftExpert

        return ExpertTeleop(LiftExpert(), episodes=episodes, seed=seed)
    raise ValueError(f"unknown teleoperation device {name!r}: keyboard, gamepad, spacemouse, leader or expert")
