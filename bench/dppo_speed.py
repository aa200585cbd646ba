"""DPPO fine-tuning throughput (env steps/s) of this checkout against an older commit, side by side.

    python bench/dppo_speed.py --old 303c324 [--iterations 4] [--repeats 3] [--out runs/bench_dppo_speed]

Both run `robolearn finetune` at its default settings (Lift, 32 envs x 50 decisions, 5 PPO epochs) from the
same pretrained Diffusion Policy (`bench/finetune.py`'s start: 200 demonstrations with recoveries, 20 DDPM
steps, 750 training steps; trained by the older code), with the actor updating from the first iteration and no evaluation. The older
commit runs from a `git worktree` of it. Each run's rate is taken from its TensorBoard log (`train/env_steps`
and its wall-clock stamps) between the end of its first iteration and the end of its last, so start-up is
left out; the time from launch to the end of the first iteration (start-up, torch.compile, env workers) is
printed beside it. The two code paths alternate within every repeat; the script prints every rate, the medians
and the ratio new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def robolearn(*args: str, code: Path | None = None) -> None:
    env = dict(os.environ)
    if code is not None:  # the older commit's package and configs first on the path
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    print(f"$ {'PYTHONPATH=' + str(code) + ' ' if code else ''}robolearn " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "robolearn", *args], check=True, env=env)


def env_steps_per_second(run_dir: Path, started: float | None = None) -> tuple[float, float | None]:
    """(env steps at the last iteration - at the first) / (wall time between them), from the run's TensorBoard;
    and, given the wall-clock time the run `started`, the seconds from then to the end of its first iteration
    (start-up, compiling and the first iteration)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    scalars = events.Scalars("train/env_steps")
    if len(scalars) < 2:
        raise RuntimeError(f"{run_dir}: fewer than two iterations logged")
    first, last = scalars[0], scalars[-1]
    return ((last.value - first.value) / (last.wall_time - first.wall_time),
            None if started is None else first.wall_time - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--iterations", type=int, default=4, help="PPO iterations per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_dppo_speed")
    parser.add_argument("--json", default="bench/results/dppo_speed.json")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    old_code = out / "old_code"
    if not old_code.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(old_code), args.old], check=True)
    dataset, pretrain = out / "demos.zarr", out / "pretrain"
    if not (pretrain / "checkpoints" / "latest").exists():
        robolearn("collect", "n_episodes=200", "task.expert.failure_rate=0.3", "task.expert.max_retries=1",
                  f"output={dataset}", "overwrite=true")
        # by the older code, whose checkpoint both read (a newer config may hold keys the older one lacks)
        robolearn("train", "policy=diffusion_unet_ddpm20", f"dataset={dataset}", f"run_dir={pretrain}",
                  "training.steps=750", "training.warmup_steps=200", "eval.n_episodes=0", "eval.final_n_episodes=0",
                  "eval.n_video=0", "threads=1", code=old_code)
    common = [f"checkpoint={pretrain}/checkpoints/latest", f"dataset={dataset}", f"threads={args.threads}",
              f"ppo.iterations={args.iterations}", "ppo.critic_warmup_iters=0", "eval.n_episodes=0",
              "eval.final_n_episodes=0", "checkpoint_every=1000"]
    rates: dict[str, list[float]] = {"old": [], "new": []}
    first_iteration: dict[str, list[float]] = {"old": [], "new": []}
    for repeat in range(args.repeats):
        for name, code in (("old", old_code), ("new", None)):
            run_dir = out / f"{name}_{repeat}"
            if run_dir.exists():  # an earlier run of this bench; anything else is left alone
                if not (run_dir / "tb").is_dir() and not (run_dir / "checkpoints").is_dir():
                    raise SystemExit(f"{run_dir} exists and is not a robolearn run folder; choose another --out")
                shutil.rmtree(run_dir)
            started = time.time()
            robolearn("finetune", *common, f"run_dir={run_dir}", code=code)
            rate, first_s = env_steps_per_second(run_dir, started)
            rates[name].append(rate)
            first_iteration[name].append(first_s)
            print(f"{name} (repeat {repeat}): {rate:,.0f} env steps/s; start-up and first iteration {first_s:.1f} s",
                  flush=True)
    old, new = (float(np.median(rates[k])) for k in ("old", "new"))
    first_old, first_new = (float(np.median(first_iteration[k])) for k in ("old", "new"))
    print(f"\nDPPO env steps/s, default settings, {args.threads} threads, median of {args.repeats}: "
          f"{args.old} {old:,.0f}, this checkout {new:,.0f}: {new / old:.2f}x "
          f"(start-up and first iteration: {first_old:.1f} s vs {first_new:.1f} s)")
    Path(args.json).write_text(json.dumps({"old_commit": args.old, "threads": args.threads,
                                           "iterations": args.iterations, "rates": rates,
                                           "first_iteration_s": first_iteration,
                                           "median_old": old, "median_new": new, "ratio": new / old}, indent=1))


if __name__ == "__main__":
    main()
