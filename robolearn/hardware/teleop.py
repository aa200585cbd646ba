"""Teleoperation devices: keyboard (terminal), gamepad, SpaceMouse, leader arm, scripted expert.

A device's `read(observation)` returns a `TeleopCommand`: either joint targets (leader arm,
scripted expert) or Cartesian increments of the end effector, which `CartesianMapper` turns
into joint targets with damped least-squares IK on the arm model, gripper pointing down.
Episode events ("start", "stop", "discard", "quit") come with the command.
"""

from __future__ import annotations

import abc
import os
import select
import sys
import termios
import tty
from dataclasses import dataclass, field

import numpy as np

from robolearn.hardware.robot import RobotObservation
from robolearn.sim.arm import ARM_JOINT_NAMES, load_model
from robolearn.sim.ik import DampedLeastSquaresIK, top_down_quat

EVENTS = ("start", "stop", "discard", "quit")
GRIPPER_OPEN, GRIPPER_CLOSED = 0.7, -0.15  # rad


@dataclass
class TeleopCommand:
    """One tick of teleoperation.

    Attributes:
        joint_target: (6,) rad for joint-space devices, else None.
        ee_delta: (3,) m end-effector increment in the world frame (Cartesian devices).
        roll_delta: wrist roll increment, rad.
        gripper: jaw target, rad, or None to keep the current one.
        events: subset of EVENTS.
    """

    joint_target: np.ndarray | None = None
    ee_delta: np.ndarray = field(default_factory=lambda: np.zeros(3))
    roll_delta: float = 0.0
    gripper: float | None = None
    events: set[str] = field(default_factory=set)


class TeleopDevice(abc.ABC):
    """A source of `TeleopCommand`s, read once per control tick."""

    def connect(self) -> TeleopDevice:
        return self

    def disconnect(self) -> None:
        pass

    def __enter__(self) -> TeleopDevice:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    @abc.abstractmethod
    def read(self, observation: RobotObservation) -> TeleopCommand: ...

    def scene_reset(self) -> None:
        """Someone else (e.g. a simulated robot between episodes) reset the scene; a device that
        plans from the scene starts over. Human-driven devices ignore it."""


class CartesianMapper:
    """Integrate Cartesian increments into a top-down gripper target and solve IK for the arm.

    Args:
        workspace_low, workspace_high: box (m) the end-effector target is kept in.
    """

    def __init__(self, workspace_low=(0.08, -0.25, 0.01), workspace_high=(0.32, 0.25, 0.25), roll_limit=2.6):
        self.ik = DampedLeastSquaresIK(load_model(), "grasp_site", ARM_JOINT_NAMES)
        self.low, self.high, self.roll_limit = np.array(workspace_low), np.array(workspace_high), roll_limit

    def reset(self, joint_pos: np.ndarray) -> None:
        """Start from the measured joints (6,) rad."""
        self.q = np.asarray(joint_pos[:5], dtype=float).copy()
        self.position = np.clip(self.ik.site_pose(self.q)[0], self.low, self.high)
        self.roll = float(joint_pos[4])
        self.gripper = float(joint_pos[5])

    def __call__(self, command: TeleopCommand) -> np.ndarray:
        """Joint targets (6,) rad for a Cartesian command."""
        self.position = np.clip(self.position + command.ee_delta, self.low, self.high)
        self.roll = float(np.clip(self.roll + command.roll_delta, -self.roll_limit, self.roll_limit))
        if command.gripper is not None:
            self.gripper = command.gripper
        self.q, _ = self.ik.solve(self.q, self.position, top_down_quat(self.position, self.roll))
        return np.append(self.q, self.gripper)


class KeyboardTeleop(TeleopDevice):
    """Keys in a terminal (no X server): w/s x, a/d y, r/f z, q/e wrist roll, g toggles the gripper;
    c starts an episode, v stops and saves it, b discards it, Esc quits.

    Args:
        step: end-effector move per key press, m; roll_step: rad per key press.
        stream: file descriptor to read (default: standard input, put in cbreak mode).
    """

    MOVES = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1)}
    KEY_EVENTS = {"c": "start", "v": "stop", "b": "discard", "\x1b": "quit"}
    HELP = "w/s a/d r/f move, q/e roll, g gripper | c start, v save, b discard, Esc quit"

    def __init__(self, step: float = 0.005, roll_step: float = 0.05, stream: int | None = None):
        self.step, self.roll_step = step, roll_step
        self.fd = sys.stdin.fileno() if stream is None else stream
        self._saved = None
        self._closed = False

    def connect(self) -> KeyboardTeleop:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def disconnect(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read(self, observation: RobotObservation | None = None) -> TeleopCommand:
        command = TeleopCommand()
        keys = ""
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1024)
            if not data:
                break
            keys += data.decode(errors="ignore")
        for key in keys:
            if key in self.MOVES:
                axis, sign = self.MOVES[key]
                command.ee_delta[axis] += sign * self.step
            elif key in "qe":
                command.roll_delta += self.roll_step if key == "q" else -self.roll_step
            elif key == "g":
                current = observation.joint_pos[5] if observation is not None else GRIPPER_OPEN
                command.gripper = GRIPPER_CLOSED if current > (GRIPPER_OPEN + GRIPPER_CLOSED) / 2 else GRIPPER_OPEN
            elif key in self.KEY_EVENTS:
                command.events.add(self.KEY_EVENTS[key])
        return command


def _deadzone(x: np.ndarray, dz: float) -> np.ndarray:
    return np.where(np.abs(x) < dz, 0.0, (x - np.sign(x) * dz) / (1 - dz))


class _EdgeButtons:
    """Turn held buttons into press events."""

    def __init__(self):
        self.previous: tuple = ()

    def pressed(self, buttons) -> set[int]:
        buttons = tuple(bool(b) for b in buttons)
        prev = self.previous + (False,) * (len(buttons) - len(self.previous))
        self.previous = buttons
        return {i for i, (b, p) in enumerate(zip(buttons, prev)) if b and not p}


def gamepad_command(axes, pressed: set[int], dt: float, speed: float = 0.1, roll_speed: float = 1.0,
                    deadzone: float = 0.1, gripper_closed: bool = False) -> TeleopCommand:
    """Map a gamepad (SDL layout: axes lx, ly, rx, ry; buttons A=0, B=1, X=2, Y=3, back=6, start=7)
    to a command: left stick moves in x/y, right stick vertical moves z and horizontal rolls;
    A toggles the gripper (`gripper_closed` is the state after toggling), start/back start/stop,
    B discards, Y quits. `speed` m/s and `roll_speed` rad/s at full deflection; dt in s."""
    a = _deadzone(np.asarray(list(axes) + [0.0] * 4, dtype=float)[:4], deadzone)
    command = TeleopCommand(ee_delta=np.array([-a[1], -a[0], -a[3]]) * speed * dt, roll_delta=-a[2] * roll_speed * dt)
    if 0 in pressed:
        command.gripper = GRIPPER_CLOSED if gripper_closed else GRIPPER_OPEN
    command.events = {name for button, name in ((7, "start"), (6, "stop"), (1, "discard"), (3, "quit"))
                      if button in pressed}
    return command


class GamepadTeleop(TeleopDevice):
    """A gamepad through pygame's joystick API (`pip install pygame`); see `gamepad_command`."""

    def __init__(self, index: int = 0, rate_hz: float = 20.0, **mapping):
        self.index, self.dt, self.mapping = index, 1.0 / rate_hz, mapping
        self.edges, self.closed = _EdgeButtons(), False

    def connect(self) -> GamepadTeleop:
        try:
            import pygame
        except ImportError as exc:
            raise RuntimeError("the gamepad needs pygame: pip install pygame") from exc
        pygame.init()
        pygame.joystick.init()
        if pygame.joystick.get_count() <= self.index:
            raise RuntimeError(f"no gamepad {self.index} found ({pygame.joystick.get_count()} connected)")
        self.pygame, self.stick = pygame, pygame.joystick.Joystick(self.index)
        return self

    def read(self, observation: RobotObservation | None = None) -> TeleopCommand:
        self.pygame.event.pump()
        axes = [self.stick.get_axis(i) for i in range(self.stick.get_numaxes())]
        pressed = self.edges.pressed([self.stick.get_button(i) for i in range(self.stick.get_numbuttons())])
        if 0 in pressed:
            self.closed = not self.closed
        return gamepad_command(axes, pressed, self.dt, gripper_closed=self.closed, **self.mapping)


def spacemouse_command(motion, pressed: set[int], dt: float, speed: float = 0.1, roll_speed: float = 1.0,
                       deadzone: float = 0.05, gripper_closed: bool = False) -> TeleopCommand:
    """Map a 3Dconnexion SpaceMouse state (x, y, z, roll, pitch, yaw in [-1, 1]) to a command:
    translation moves the end effector, yaw rolls the wrist; the left button toggles the gripper
    and the right button starts/stops an episode (`pressed` holds button press events)."""
    m = _deadzone(np.asarray(motion, dtype=float)[:6], deadzone)
    command = TeleopCommand(ee_delta=m[:3] * speed * dt, roll_delta=m[5] * roll_speed * dt)
    if 0 in pressed:
        command.gripper = GRIPPER_CLOSED if gripper_closed else GRIPPER_OPEN
    if 1 in pressed:
        command.events.add("start_or_stop")
    return command


class SpaceMouseTeleop(TeleopDevice):
    """A 3Dconnexion SpaceMouse through `pyspacemouse` (hidapi); see `spacemouse_command`."""

    def __init__(self, rate_hz: float = 20.0, **mapping):
        self.dt, self.mapping = 1.0 / rate_hz, mapping
        self.edges, self.closed, self.recording = _EdgeButtons(), False, False

    def connect(self) -> SpaceMouseTeleop:
        try:
            import pyspacemouse
        except ImportError as exc:
            raise RuntimeError("the SpaceMouse needs pyspacemouse: pip install pyspacemouse") from exc
        if not pyspacemouse.open():
            raise RuntimeError("no SpaceMouse found (check the USB connection and hidraw permissions)")
        self.device = pyspacemouse
        return self

    def disconnect(self) -> None:
        if hasattr(self, "device"):
            self.device.close()

    def read(self, observation: RobotObservation | None = None) -> TeleopCommand:
        s = self.device.read()
        pressed = self.edges.pressed(s.buttons)
        if 0 in pressed:
            self.closed = not self.closed
        command = spacemouse_command([s.x, s.y, s.z, s.roll, s.pitch, s.yaw], pressed, self.dt,
                                     gripper_closed=self.closed, **self.mapping)
        if "start_or_stop" in command.events:  # one button: toggles recording
            command.events = {"stop" if self.recording else "start"}
            self.recording = not self.recording
        return command


class LeaderArmTeleop(TeleopDevice):
    """A leader arm read in joint space: the follower mirrors its joints.

    Args:
        leader: a `BusArm` opened read-only (torque off, so a person can move it by hand).
        events_from: another device (e.g. `KeyboardTeleop`) whose episode events are merged in.
    """

    def __init__(self, leader, events_from: TeleopDevice | None = None):
        self.leader, self.events_from = leader, events_from

    def connect(self) -> LeaderArmTeleop:
        self.leader.connect()
        if self.events_from is not None:
            self.events_from.connect()
        return self

    def disconnect(self) -> None:
        self.leader.disconnect()
        if self.events_from is not None:
            self.events_from.disconnect()

    def read(self, observation: RobotObservation | None = None) -> TeleopCommand:
        command = TeleopCommand(joint_target=self.leader.read().joint_pos)
        if self.events_from is not None:
            command.events = self.events_from.read(observation).events
        return command


class ExpertTeleop(TeleopDevice):
    """A scripted device: a task's expert drives the arm and starts/stops episodes by itself.

    `expert` has `reset(obs, rng)` and `act(obs) -> joint targets` over {"joint_pos", **extras} (the Lift
    expert needs the extras gripper_opening, cube_pos and cube_quat of `MujocoRobot`). Each episode starts
    on the first read, stops when the scene reports success (`RobotObservation.success`) or after
    `max_steps`, and recording quits after `episodes` episodes.
    """

    def __init__(self, expert, episodes: int = 1, max_steps: int = 200, seed: int = 0):
        self.expert, self.episodes, self.max_steps, self.seed = expert, episodes, max_steps, seed
        self.done, self.steps = 0, None

    def scene_reset(self) -> None:
        """Abandon the episode in progress; the next read plans a new one from the new scene."""
        self.steps = None

    def read(self, observation: RobotObservation) -> TeleopCommand:
        if self.done >= self.episodes:
            return TeleopCommand(joint_target=observation.joint_pos, events={"quit"})
        obs = {"joint_pos": observation.joint_pos, **observation.extras}
        lifted = bool(observation.success)
        command = TeleopCommand()
        if self.steps is None:
            if lifted:  # the scene still shows the last episode's success (its reset is on the way): hold
                return TeleopCommand(joint_target=observation.joint_pos)
            self.expert.reset(obs, np.random.default_rng(self.seed + self.done))
            self.steps = 0
            command.events.add("start")
        command.joint_target = self.expert.act(obs)
        self.steps += 1
        if lifted or self.steps >= self.max_steps:
            command.events.add("stop")
            self.done, self.steps = self.done + 1, None
        return command
