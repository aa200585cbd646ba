"""Benchmark the scripted Lift expert: success rate over N seeds and simulation speed.

    python bench/expert.py [--episodes 100] [--seed 0]

Prints the expert's success rate (with a 95% Wilson interval), the mean episode length,
the grasp modes it used, and env steps/s for the expert next to random actions measured in
the same run (the ratio shows the cost of the IK expert over plain stepping).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robolearn.evaluate import wilson_interval
from robolearn.sim import LiftEnv, LiftExpert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env, expert = LiftEnv(), LiftExpert()
    successes, lengths, modes = 0, [], []
    t0 = time.perf_counter()
    for i in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + i)
        expert.reset(obs, np.random.default_rng(args.seed + i))
        modes.append(expert.grasp_mode)
        for t in range(env.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                break
        successes += info["is_success"]
        lengths.append(t + 1)
    expert_time = time.perf_counter() - t0
    expert_rate = sum(lengths) / expert_time

    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    n_random = sum(lengths)
    t0 = time.perf_counter()
    for _ in range(n_random):
        env.step(env.action_space.sample())
    random_rate = n_random / (time.perf_counter() - t0)

    lo, hi = wilson_interval(successes, args.episodes)
    print(f"expert success: {successes}/{args.episodes} = {successes / args.episodes:.1%} "
          f"(95% CI {lo:.1%}-{hi:.1%})")
    print(f"episode length: mean {np.mean(lengths):.1f} steps ({np.mean(lengths) / 20:.2f} s at 20 Hz), "
          f"max {max(lengths)}")
    counts = np.bincount(modes, minlength=4)
    print("grasp modes (grasp yaw = cube yaw + k*90 deg), episodes per k: "
          + ", ".join(f"k={k}: {c}" for k, c in enumerate(counts)))
    print(f"env steps/s: expert {expert_rate:,.0f}, random actions {random_rate:,.0f} "
          f"(expert/random = {expert_rate / random_rate:.2f})")


if __name__ == "__main__":
    main()
