"""Benchmark a task's scripted expert: success rate and score over N seeds, and simulation speed.

    python bench/expert.py [--task lift|pusht] [--episodes 100] [--seed 0]

Prints the expert's success rate (with a 95% Wilson interval), the mean score (mean over episodes of the
episode's maximum reward, Push-T's metric), the mean episode length, the modes the expert chose (its
`mode`), and env steps/s for the expert next to random actions measured in the same run (the ratio shows
the cost of the expert over plain stepping).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import gymnasium as gym
import numpy as np
from hydra import compose, initialize_config_dir

from robolearn.paths import config_dir
from robolearn.sim.evaluation import wilson_interval
from robolearn.tasks import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="lift")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with initialize_config_dir(str(config_dir()), version_base=None):
        task = load_task(compose("collect", overrides=[f"task={args.task}"]).task)
    env, expert = gym.make(task.env_id, **task.env_kwargs), task.make_expert()
    successes, lengths, scores, modes = 0, [], [], Counter()
    t0 = time.perf_counter()
    for i in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + i)
        expert.reset(obs, np.random.default_rng(args.seed + i))
        modes[json.dumps(expert.mode, sort_keys=True)] += 1
        best, t = -np.inf, 0
        while True:
            obs, reward, terminated, truncated, info = env.step(expert.act(obs))
            best, t = max(best, float(reward)), t + 1
            if terminated or truncated:
                break
        successes += bool(info["is_success"])
        lengths.append(t)
        scores.append(best)
    expert_time = time.perf_counter() - t0
    expert_rate = sum(lengths) / expert_time

    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    n_random = min(sum(lengths), 20000)
    t0 = time.perf_counter()
    for _ in range(n_random):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    random_rate = n_random / (time.perf_counter() - t0)

    lo, hi = wilson_interval(successes, args.episodes)
    hz = env.metadata["render_fps"]
    print(f"{task.name} expert success: {successes}/{args.episodes} = {successes / args.episodes:.1%} "
          f"(95% CI {lo:.1%}-{hi:.1%}); mean score {np.mean(scores):.3f}")
    print(f"episode length: mean {np.mean(lengths):.1f} steps ({np.mean(lengths) / hz:.2f} s at {hz} Hz), "
          f"max {max(lengths)}; {expert_time:.1f} s for {args.episodes} episodes")
    print("modes, episodes each: " + ", ".join(f"{m}: {c}" for m, c in sorted(modes.items())))
    print(f"env steps/s: expert {expert_rate:,.0f}, random actions {random_rate:,.0f} "
          f"(expert/random = {expert_rate / random_rate:.2f})")


if __name__ == "__main__":
    main()
