"""DPPO vs Gaussian PPO on Lift, from the same weak start, side by side.

    python bench/finetune.py [--pretrain-episodes 200] [--pretrain-steps N] [--iterations N]

In one run, with the `robolearn` commands a user would type:
0. collects the demonstrations: the scripted expert with recoveries (`robolearn collect task.expert.failure_rate=0.3
   task.expert.max_retries=1`: 30% of the episodes miss a first grasp, reopen and grasp again, as human
   demonstrations do; --failure-rate 0 for clean demonstrations);
1. pretrains a deliberately weak Diffusion Policy (20 DDPM steps; an early checkpoint by default, or
   few demonstrations) and evaluates it on 200 held-out test seeds (--test-episodes; the start should be at 20-60%);
   pretraining runs on one thread, so the same machine gives the same start every time;
2. fine-tunes it with DPPO (`robolearn finetune`, its default settings unless --set/--dppo-set);
3. fine-tunes a Gaussian MLP policy, BC-pretrained on the same demonstrations, with PPO and the
   same envs and budget (`robolearn finetune policy=gaussian`);
4. measures plain env stepping with random actions in this process, for the throughput ratio.
It prints both learning curves (success vs env steps and wall clock), the success on the held-out
test seeds of the last checkpoint (each run's result: the running mean of its weights) and of the best one
on the selection seeds, throughput in env steps/s, and writes a PNG of both curves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def robolearn(*args: str) -> None:
    print("$ robolearn " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "robolearn", *args], check=True)


def random_action_steps_per_second(seconds: float = 5.0) -> float:
    """Plain env.step with random actions in one process (the baseline for throughput)."""
    import gymnasium as gym

    import robolearn.sim  # noqa: F401

    env = gym.make("robolearn/Lift-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        n += 1
        if terminated or truncated:
            env.reset()
    return n / (time.perf_counter() - t0)


def plot_curves(summary: dict, path: str) -> None:
    """PNG of both selection-seed learning curves, against env steps and against wall clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, label in (("dppo", "DPPO (diffusion)"), ("gaussian", "Gaussian PPO")):
        c = summary[name]["curve"]
        axes[0].plot([p["env_steps"] / 1000 for p in c], [p["success_rate"] for p in c], marker="o", label=label)
        axes[1].plot([p["wall_s"] / 60 for p in c], [p["success_rate"] for p in c], marker="o", label=label)
    for ax, xlabel in zip(axes, ("env steps, thousands", "wall clock, min (2 CPU cores)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success rate (selection seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(0.9, color="gray", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[0].legend()
    pre = summary["pretrain"]
    recoveries = f" ({pre['failure_rate']:.0%} with recoveries)" if pre["failure_rate"] and pre["max_retries"] else ""
    fig.suptitle(f"Lift fine-tuning from {pre['episodes']} demonstrations{recoveries}, {pre['steps']} "
                 f"pretraining steps ({pre['test_success']:.0%} on {pre['test_episodes']} test seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_finetune")
    parser.add_argument("--pretrain-episodes", type=int, default=200)
    parser.add_argument("--pretrain-steps", type=int, default=750)
    parser.add_argument("--failure-rate", type=float, default=0.3,
                        help="demonstrations with an injected mistake (recovered with --max-retries)")
    parser.add_argument("--max-retries", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=None, help="PPO iterations (default: the config's)")
    parser.add_argument("--test-episodes", type=int, default=200,
                        help="held-out test seeds for the start and the final checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", default="bench/results/finetune_lift.png")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra `robolearn finetune` overrides for both runs, e.g. ppo.actor_lr=3e-5")
    parser.add_argument("--dppo-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for the DPPO run only, e.g. policy.min_sampling_denoising_std=0.05")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the plot's JSON")
    args = parser.parse_args()
    if args.replot:
        plot_curves(json.loads(Path(args.plot).with_suffix(".json").read_text()), args.plot)
        return
    out = Path(args.out)
    dataset = out / "demos.zarr"
    test = f"eval.final_n_episodes={args.test_episodes}"
    common = [f"threads={args.threads}", f"dataset={dataset}", test, *args.set]
    if args.iterations is not None:
        common.append(f"ppo.iterations={args.iterations}")

    robolearn("collect", f"n_episodes={args.pretrain_episodes}", f"task.expert.failure_rate={args.failure_rate}",
              f"task.expert.max_retries={args.max_retries}", f"output={dataset}")
    t0 = time.perf_counter()
    robolearn("train", "policy=diffusion_unet_ddpm20", f"dataset={dataset}", f"run_dir={out}/pretrain",
              f"training.max_train_episodes={args.pretrain_episodes}", f"training.steps={args.pretrain_steps}",
              "training.warmup_steps=200", "eval.n_episodes=0", "eval.n_video=0", test, "threads=1")
    pretrain_s = time.perf_counter() - t0
    start = json.loads((out / "pretrain" / "eval_results.json").read_text())

    robolearn("finetune", f"checkpoint={out}/pretrain/checkpoints/latest", f"run_dir={out}/dppo", *common,
              *args.dppo_set)
    robolearn("finetune", "policy=gaussian", f"policy.bc_max_episodes={args.pretrain_episodes}",
              f"run_dir={out}/gaussian", *common)
    random_sps = random_action_steps_per_second()

    runs = {name: json.loads((out / name / "eval_results.json").read_text()) for name in ("dppo", "gaussian")}
    # fine-tuning wall clock from the runs' own curves: cumulative across resumes (a second invocation with
    # more --iterations continues both runs), selection evaluations included, the final test evaluation not
    dppo_s, gauss_s = (runs[name]["curve"][-1]["wall_s"] for name in ("dppo", "gaussian"))
    print(f"\npretrained Diffusion Policy ({args.pretrain_episodes} demonstrations, failure_rate "
          f"{args.failure_rate}, max_retries {args.max_retries}; {args.pretrain_steps} steps, "
          f"{pretrain_s / 60:.1f} min in this invocation): {start['success_rate']:.1%} on {start['n_episodes']} held-out test seeds")
    print(f"\n{'iteration':>9} {'env steps':>10} | {'DPPO success':>12} {'wall min':>8} | "
          f"{'Gaussian success':>16} {'wall min':>8}")
    curves = {name: r["curve"] for name, r in runs.items()}
    for a, b in zip(curves["dppo"], curves["gaussian"]):
        print(f"{a['iteration']:>9} {a['env_steps']:>10} | {a['success_rate']:>12.0%} {a['wall_s'] / 60:>8.1f} | "
              f"{b['success_rate']:>16.0%} {b['wall_s'] / 60:>8.1f}")
    for name, r, secs in (("DPPO", runs["dppo"], dppo_s), ("Gaussian PPO", runs["gaussian"], gauss_s)):
        lo, hi = r["ci95"]
        print(f"{name:>12}: last checkpoint (the running mean of the weights) {r['success_rate']:.1%} on "
              f"{r['n_episodes']} held-out test seeds (95% CI {lo:.0%}-{hi:.0%}), "
              f"{r['env_steps']} env steps, {secs / 60:.1f} min wall, {r['env_steps'] / secs:,.0f} env steps/s")
        if "best" in r:
            lo, hi = r["best"]["ci95"]
            print(f"{'':>12}  the best checkpoint on the selection seeds: {r['best']['success_rate']:.1%} "
                  f"(95% CI {lo:.0%}-{hi:.0%})")
    print(f"plain env stepping, random actions, one process: {random_sps:,.0f} env steps/s; "
          f"DPPO fine-tuning runs at {runs['dppo']['env_steps'] / dppo_s / random_sps:.2f}x that")
    summary = {"pretrain": {"episodes": args.pretrain_episodes, "failure_rate": args.failure_rate,
                            "max_retries": args.max_retries, "steps": args.pretrain_steps,
                            "test_success": start["success_rate"], "test_episodes": start["n_episodes"],
                            "seconds": pretrain_s},
               "random_action_env_steps_per_s": random_sps, "overrides": {"both": args.set, "dppo": args.dppo_set}}
    for name, secs in (("dppo", dppo_s), ("gaussian", gauss_s)):
        r = runs[name]
        summary[name] = {"test_success": r["success_rate"], "ci95": r["ci95"], "best": r.get("best"),
                         "env_steps": r["env_steps"],
                         "seconds": secs, "env_steps_per_s": r["env_steps"] / secs, "curve": r["curve"]}
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    Path(args.plot).with_suffix(".json").write_text(json.dumps(summary, indent=1))

    plot_curves(summary, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
