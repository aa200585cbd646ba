"""The safety filter: never out of limits, never too fast, NaN held, watchdog, latched stop."""

import numpy as np
import pytest

from robolearn.hardware import SafetyFilter, SafetyLimits
from robolearn.sim import joint_limits

LIMITS = SafetyLimits.from_joint_limits(joint_limits())


def make(now=0.0, **kw):
    f = SafetyFilter(LIMITS, **kw)
    f.reset((LIMITS.lower + LIMITS.upper) / 2, now)
    return f


def test_never_out_of_limits_and_never_faster_than_allowed_whatever_the_input():
    rng = np.random.default_rng(0)
    f = make()
    previous, t = f.tick(0.0, np.zeros(6)), 0.0
    for _ in range(5000):
        dt = rng.choice([0.0, 0.001, 0.05, 0.3, 2.0]) * rng.uniform()
        t += dt
        kind = rng.integers(4)
        target = [rng.uniform(-50, 50, 6), rng.normal(0, 1e6, 6),
                  np.where(rng.uniform(size=6) < 0.3, np.nan, rng.uniform(-3, 3, 6)),
                  np.full(6, rng.choice([np.inf, -np.inf]))][kind]
        out = f.filter(target, t)
        assert np.all(out >= LIMITS.lower) and np.all(out <= LIMITS.upper)
        assert np.all(np.abs(out - previous) <= LIMITS.max_velocity * min(dt, f.max_step_seconds) + 1e-12)
        assert np.all(np.isfinite(out))
        previous = out


def test_nan_targets_hold_the_previous_command():
    f = make()
    first = f.filter(LIMITS.lower + 0.1, 0.05)
    held = f.filter(np.array([np.nan, 0, 0, 0, 0, 0]), 0.1)
    np.testing.assert_array_equal(held, first)
    assert f.rejected == 1
    assert f.filter(np.zeros(5), 0.15).shape == (6,) and f.rejected == 2  # wrong length is refused, not raised


def test_a_reachable_target_is_passed_through():
    f = make()
    target = f.tick(0.0, np.zeros(6)) + 0.01
    np.testing.assert_allclose(f.filter(target, 0.05), target)


def test_watchdog_holds_the_measured_position():
    f = make(watchdog_timeout=0.25)
    f.filter(LIMITS.upper, 0.05)
    measured = (LIMITS.lower + LIMITS.upper) / 2 + 0.02
    assert not f.watchdog_tripped
    np.testing.assert_array_equal(f.tick(0.2, measured), f.tick(0.2, measured))  # fresh: last command repeated
    held = f.tick(0.4, measured)
    assert f.watchdog_tripped
    np.testing.assert_allclose(held, measured)
    np.testing.assert_allclose(f.tick(1.0, measured + 0.5), measured)  # keeps the position it latched
    out = f.filter(measured + 0.01, 1.05)  # a new command resumes from the hold, rate-limited
    assert not f.watchdog_tripped and np.all(np.abs(out - measured) <= LIMITS.max_velocity * 0.05 + 1e-12)


def test_stop_latches_until_reset():
    f = make()
    position = f.tick(0.0, np.zeros(6))
    f.stop()
    for t in (0.1, 0.2, 5.0):
        np.testing.assert_allclose(f.filter(LIMITS.upper, t), position)
    held = f.tick(5.1, position)
    np.testing.assert_allclose(held, position)
    f.reset_stop(position, 6.0)
    assert not np.allclose(f.filter(position + 0.05, 6.05), position)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="lower <= upper"):
        SafetyLimits(np.ones(2), np.zeros(2), np.ones(2))
    with pytest.raises(RuntimeError, match="must be called before commands"):
        SafetyFilter(LIMITS).filter(np.zeros(6), 0.0)
