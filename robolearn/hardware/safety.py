"""The safety layer between any command source (policy, teleoperation, replay) and a robot.

Every driver sends its joint targets through a `SafetyFilter`:
- NaN or inf targets are rejected: the previous safe command is held;
- targets are clamped to the joint position limits;
- the change from the previous command is limited by the joint velocity limits
  (|delta| <= max_velocity * elapsed, elapsed capped at `max_step_seconds`, so a pause never
  turns into a jump);
- a watchdog holds the measured position when no command arrived for `watchdog_timeout` s;
- `stop()` latches: the robot holds where it was until `reset_stop()` is called explicitly.

Inputs are validated: a target must be a 1-D numeric (not bool, not text) array of one value per
joint; anything else is rejected like a NaN target (the held command is sent, `rejected` counts it).
Times must be finite, and `reset` needs a finite position; invalid ones raise `ValueError` and leave
the filter's state exactly as it was, so a bad input can never poison later commands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robolearn.config_checks import finite_number
from robolearn.sim.arm import JointLimits


@dataclass(frozen=True)
class SafetyLimits:
    """Limits enforced on joint position commands, arrays of shape (n_joints,).

    Attributes:
        lower, upper: position limits, rad.
        max_velocity: speed limits, rad/s.
    """

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray

    def __post_init__(self):
        lo, hi, v = (np.asarray(x, dtype=float) for x in (self.lower, self.upper, self.max_velocity))
        if not (lo.shape == hi.shape == v.shape and lo.ndim == 1):
            raise ValueError(f"lower, upper and max_velocity must be 1-D of one length, got {lo.shape}, "
                             f"{hi.shape}, {v.shape}")
        if np.any(lo > hi) or np.any(v <= 0) or not np.all(np.isfinite(np.concatenate([lo, hi, v]))):
            raise ValueError("need finite limits with lower <= upper and max_velocity > 0")

    @classmethod
    def from_joint_limits(cls, limits: JointLimits, margin: float = 0.0) -> SafetyLimits:
        """From the arm description (`robolearn.sim.arm.joint_limits`), shrunk by `margin` rad."""
        return cls(limits.lower + margin, limits.upper - margin, limits.max_velocity)


class SafetyFilter:
    """Make joint position commands safe (see the module docstring).

    Args:
        limits: the enforced limits.
        watchdog_timeout: seconds without a command after which the robot holds its position.
        max_step_seconds: the longest interval the velocity limit integrates over, s.

    Call `reset(position, now)` with the measured joint positions (rad) when connecting.
    """

    def __init__(self, limits: SafetyLimits, watchdog_timeout: float = 0.25, max_step_seconds: float = 0.1):
        self.limits = limits
        self.watchdog_timeout = watchdog_timeout
        self.max_step_seconds = positive_seconds(max_step_seconds, "max_step_seconds")
        self._command: np.ndarray | None = None
        self._last_time = 0.0
        self._last_input_time = 0.0
        self._hold: np.ndarray | None = None
        self.stopped = False
        self.rejected = 0  # commands refused for NaN/inf or a wrong shape

    @property
    def watchdog_timeout(self) -> float:
        """Seconds without a command after which the robot holds; finite and > 0."""
        return self._watchdog_timeout

    @watchdog_timeout.setter
    def watchdog_timeout(self, value: float) -> None:
        self._watchdog_timeout = positive_seconds(value, "watchdog_timeout")

    @property
    def n_joints(self) -> int:
        return len(self.limits.lower)

    def reset(self, position: np.ndarray, now: float) -> None:
        """Start from the measured position (rad) at time `now` (s); clears the watchdog hold.

        Raises:
            ValueError: `position` is not n_joints finite numbers, or `now` is not a finite time
                (the filter is left unchanged).
        """
        position = self._check_shape(position, "position")
        if not np.all(np.isfinite(position)):
            raise ValueError(f"position must be finite, got {position.tolist()}")
        now = _check_time(now)
        self._command = np.clip(position, self.limits.lower, self.limits.upper)
        self._last_time = self._last_input_time = now
        self._hold = None

    def _check_shape(self, x, name: str) -> np.ndarray:
        """`x` as a float array (n_joints,); ValueError for text, bools, objects, other shapes."""
        if isinstance(x, (str, bytes)):
            raise ValueError(f"{name} must be {self.n_joints} numbers, got text {x!r:.40}")
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be {self.n_joints} numbers ({exc})") from None
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be {self.n_joints} numbers, got dtype {arr.dtype}")
        if arr.shape != (self.n_joints,):
            raise ValueError(f"{name} must have shape ({self.n_joints},), got {arr.shape}")
        return arr.astype(float)

    def _require_reset(self) -> np.ndarray:
        if self._command is None:
            raise RuntimeError("SafetyFilter.reset(position, now) must be called before commands")
        return self._command

    def filter(self, target, now: float) -> np.ndarray:
        """The safe command (rad) for a requested `target` (rad) at time `now` (s).

        An invalid target (wrong shape or type, NaN/inf) is rejected: the held command is returned.

        Raises:
            ValueError: `now` is not a finite time (nothing changes).
            RuntimeError: `reset` was never called.
        """
        command = self._require_reset()
        now = _check_time(now)
        try:
            target = self._check_shape(target, "target")
            valid = bool(np.all(np.isfinite(target)))
        except ValueError:
            valid = False
        if self.stopped or not valid:
            # The held command is sent now: the rate limit must count from here, not from the
            # last accepted target, or the next target could jump.
            self.rejected += int(not valid)
            self._last_time = max(self._last_time, now)
            return command.copy()
        self._last_input_time = now
        self._hold = None
        elapsed = min(max(now - self._last_time, 0.0), self.max_step_seconds)
        step = self.limits.max_velocity * elapsed
        safe = np.clip(np.clip(target, self.limits.lower, self.limits.upper), command - step, command + step)
        self._command, self._last_time = safe, now
        return safe.copy()

    def tick(self, now: float, measured: np.ndarray) -> np.ndarray:
        """The command to send on a control tick at `now` when no new target arrived.

        If no target came for `watchdog_timeout` s (or after `stop()`), the robot holds the
        position measured when the hold began; otherwise the last safe command is repeated.
        """
        command = self._require_reset()
        now = _check_time(now)
        if self.stopped or now - self._last_input_time > self.watchdog_timeout:
            if self._hold is None:
                try:
                    measured = self._check_shape(measured, "measured")
                except ValueError:  # no usable reading: hold the last safe command
                    measured = command
                self._hold = np.clip(np.where(np.isfinite(measured), measured, command),
                                     self.limits.lower, self.limits.upper)
            self._command, self._last_time = self._hold.copy(), now
            return self._hold.copy()
        self._last_time = max(self._last_time, now)
        return command.copy()

    @property
    def watchdog_tripped(self) -> bool:
        """True while the robot holds position because commands stopped arriving."""
        return self._hold is not None and not self.stopped

    def stop(self) -> None:
        """Latch a stop: every later target is ignored until `reset_stop()`."""
        self.stopped = True

    def reset_stop(self, position: np.ndarray, now: float) -> None:
        """Clear a latched stop explicitly, starting again from the measured position."""
        self.stopped = False
        self.reset(position, now)


def positive_seconds(value, name: str) -> float:
    """`value` as a finite duration > 0 s.

    Raises:
        ValueError: not a number (bools and text included), NaN, inf, or <= 0; the message names `name`.
    """
    seconds = finite_number(value)
    if seconds is None or seconds <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _check_time(now) -> float:
    seconds = finite_number(now)
    if seconds is None:
        raise ValueError(f"now must be a finite time in s, got {now!r}")
    return seconds
