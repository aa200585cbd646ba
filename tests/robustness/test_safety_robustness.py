"""The safety filter under invalid input: nothing a caller passes can poison it, disable its watchdog or
make it emit a command outside the limits or faster than the velocity limit (property-based)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robolearn.hardware.mujoco_robot import MujocoRobot
from robolearn.hardware.safety import SafetyFilter, SafetyLimits

LIMITS = SafetyLimits(lower=np.array([-1.0, -2.0, 0.0]), upper=np.array([1.0, 2.0, 0.5]),
                      max_velocity=np.array([1.0, 2.0, 0.5]))


def fresh(now=0.0):
    f = SafetyFilter(LIMITS, watchdog_timeout=0.25)
    f.reset(np.zeros(3), now)
    return f


def state(f):
    return (f._command.tolist(), f._last_time, f._last_input_time, f._hold, f.stopped)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, "0.5", True, None])
def test_watchdog_timeout_must_be_finite_and_positive(value):
    with pytest.raises(ValueError, match="watchdog_timeout must be a finite number of seconds > 0"):
        SafetyFilter(LIMITS, watchdog_timeout=value)
    f = fresh()
    with pytest.raises(ValueError, match="watchdog_timeout"):
        f.watchdog_timeout = value
    assert f.watchdog_timeout == 0.25
    with pytest.raises(ValueError, match="watchdog_timeout"):
        MujocoRobot(watchdog_timeout=value)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), -float("inf"), "1.0", None, True])
def test_invalid_time_changes_nothing(now):
    f = fresh()
    f.filter([0.5, 0.5, 0.2], 0.05)
    before = state(f)
    with pytest.raises(ValueError, match="now must be a finite time"):
        f.filter([0.9, 0.9, 0.4], now)
    with pytest.raises(ValueError, match="now must be a finite time"):
        f.tick(now, np.zeros(3))
    with pytest.raises(ValueError, match="now must be a finite time"):
        f.reset(np.zeros(3), now)
    assert state(f) == before
    reference = fresh()
    reference.filter([0.5, 0.5, 0.2], 0.05)
    np.testing.assert_array_equal(f.filter([0.9, 0.9, 0.4], 0.1), reference.filter([0.9, 0.9, 0.4], 0.1))


@pytest.mark.parametrize("position", [[np.nan, 0, 0], [0, np.inf, 0], [0, 0], "abc", [[0, 0, 0]], [True, False, True]])
def test_reset_refuses_a_bad_position_without_changing_state(position):
    f = fresh()
    f.filter([0.5, 0.5, 0.2], 0.05)
    before = state(f)
    with pytest.raises(ValueError):
        f.reset(position, 0.1)
    assert state(f) == before
    assert np.all(np.isfinite(f.filter([0.0, 0.0, 0.0], 0.2)))


@pytest.mark.parametrize("target", ["0.1 0.2 0.3", b"abc", True, [True, False, True], np.zeros((2, 3)), np.zeros((3, 1)),
                                    np.zeros((1, 3)), [0.1, 0.2], [0.1, 0.2, 0.3, 0.4], None, {"a": 1},
                                    [0.1, "x", 0.3], [np.nan, 0, 0], np.array([1, 2, 3], dtype=object)])
def test_invalid_targets_are_rejected_and_the_command_held(target):
    f = fresh()
    held = f.filter([0.05, 0.05, 0.05], 0.1)
    out = f.filter(target, 0.15)
    np.testing.assert_array_equal(out, held)
    assert f.rejected == 1


def test_watchdog_still_trips_after_invalid_input():
    f = fresh()
    f.filter([0.1, 0.1, 0.1], 0.1)
    for t in (0.2, 0.3, 0.4):
        f.filter("garbage", t)  # rejected inputs do not count as commands
    f.tick(0.5, np.array([0.02, 0.03, 0.04]))
    assert f.watchdog_tripped


# -- property: whatever arrives, outputs stay finite, within limits and rate-limited -----------------
finite = st.floats(-10, 10, allow_nan=False)
valid_target = st.lists(finite, min_size=3, max_size=3)
invalid_target = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3).filter(
        lambda v: not all(math.isfinite(x) for x in v)),
    st.lists(finite, min_size=0, max_size=6).filter(lambda v: len(v) != 3),
    st.text(max_size=5), st.booleans(), st.none(),
    st.lists(st.lists(finite, min_size=3, max_size=3), min_size=2, max_size=2))
bad_time = st.sampled_from([float("nan"), float("inf"), -float("inf"), "now", None])
op = st.one_of(
    st.tuples(st.just("filter"), valid_target, st.floats(0, 0.3)),
    st.tuples(st.just("filter"), invalid_target, st.floats(0, 0.3)),
    st.tuples(st.just("tick"), st.none(), st.floats(0, 0.5)),
    st.tuples(st.just("bad_time"), valid_target, bad_time),
    st.tuples(st.just("stop"), st.none(), st.just(0.0)),
    st.tuples(st.just("reset_stop"), st.none(), st.floats(0, 0.1)))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=40))
def test_property_outputs_finite_within_limits_and_rate_limited(ops):
    f = fresh()
    now, last, last_time = 0.0, np.zeros(3), 0.0
    for kind, value, dt in ops:
        if kind == "bad_time":
            with pytest.raises(ValueError):
                f.filter(value, dt)
            continue
        now += dt
        if kind == "filter":
            out = f.filter(value, now)
        elif kind == "tick":
            out = f.tick(now, last)  # the arm tracks its commands
        elif kind == "stop":
            f.stop()
            continue
        else:
            f.reset_stop(last, now)
            continue
        assert out.shape == (3,) and np.all(np.isfinite(out))
        assert np.all(out >= LIMITS.lower) and np.all(out <= LIMITS.upper)
        allowed = LIMITS.max_velocity * min(now - last_time, f.max_step_seconds) + 1e-12
        assert np.all(np.abs(out - last) <= allowed), (out, last, now - last_time)
        last, last_time = out, now
