"""The scripted Lift expert: succeeds, and picks among equivalent grasp yaws (multimodal)."""

import numpy as np
import pytest

from robolearn.sim import LiftEnv, LiftExpert
from robolearn.sim.expert import ROLL_LIMIT


def run(env, expert, seed):
    obs, _ = env.reset(seed=seed)
    expert.reset(obs, np.random.default_rng(seed))
    for _ in range(env.max_episode_steps):
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            return info["is_success"]
    return False


def test_expert_succeeds_on_a_handful_of_seeds():
    env, expert = LiftEnv(), LiftExpert()
    results = [run(env, expert, seed) for seed in range(1000, 1010)]
    assert sum(results) >= 9, results


def test_expert_grasp_yaw_is_multimodal():
    env, expert = LiftEnv(), LiftExpert()
    obs, _ = env.reset(seed=5)
    rolls = set()
    for draw in range(40):
        expert.reset(obs, np.random.default_rng(draw))
        rolls.add(round(expert.grasp_roll, 6))
    assert len(rolls) >= 3  # 3-4 equivalent grasp yaws within the wrist's roll range
    assert all(abs(r) <= ROLL_LIMIT for r in rolls)
    gaps = np.diff(sorted(rolls))
    np.testing.assert_allclose(gaps, np.pi / 2, atol=1e-6)  # the cube's 90 deg symmetry


def test_action_noise_changes_actions():
    env = LiftEnv()
    obs, _ = env.reset(seed=0)
    clean, noisy = LiftExpert(), LiftExpert(action_noise=0.05)
    clean.reset(obs, np.random.default_rng(0))
    noisy.reset(obs, np.random.default_rng(0))
    assert not np.allclose(clean.act(obs), noisy.act(obs))


def test_injected_mistakes_fail_without_retries_and_are_recovered_with_them():
    env = LiftEnv()
    seeds = range(2000, 2006)
    plain = LiftExpert(failure_rate=1.0)
    assert not any(run(env, plain, seed) for seed in seeds)
    recovering = LiftExpert(failure_rate=1.0, max_retries=1)
    outcomes = []
    for seed in seeds:
        outcomes.append(run(env, recovering, seed))
        assert recovering.retries <= 1
        assert recovering.failure is None or recovering.retries == 0  # a retry drops the mistake
    assert sum(outcomes) >= 5, outcomes


def test_clean_expert_does_not_retry():
    env, expert = LiftEnv(), LiftExpert(max_retries=2)
    assert run(env, expert, 1000)
    assert expert.retries == 0


def test_negative_max_retries_is_rejected():
    with pytest.raises(ValueError, match="max_retries"):
        LiftExpert(max_retries=-1)
