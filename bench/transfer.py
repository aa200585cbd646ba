"""The sim-to-real transfer table: policies x worlds, and what randomization costs in env throughput.

    python bench/transfer.py --policy nominal=runs/transfer_nominal/checkpoints/best \\
        --policy randomized=runs/transfer_randomized/checkpoints/best \\
        --policy dppo=runs/lift_diffusion_unet_ddpm20_randomized_finetune/checkpoints/latest \\
        [--task lift] [--episodes 50] [--ros-episodes 50] [--out bench/results/transfer_lift.json]

1. Env throughput: `robolearn/Lift-v0` stepped with the same smooth joint targets in the nominal, randomized and
   real-proxy worlds, interleaved, 5 repeats; medians and the ratio to nominal (target: randomization costs
   <= 10%).
2. Each policy in each world of configs/world (nominal, randomized, real_proxy) with `robolearn eval`'s code on
   the held-out test seeds (100000 + i), success with a 95% Wilson interval.
3. Each policy in the real proxy through the ROS 2 graph (`robolearn deploy world=real_proxy graph=...`: the
   simulated arm behind robot_driver_node, policy_node, DDS on loopback, the wall clock), --ros-episodes episodes
   (0: skipped). --graph sim_marker (the default, for state policies): the cube pose comes from marker_node's
   estimates on the simulated marker camera's frames, as on a real arm; --graph sim for camera policies.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

WORLDS = ("nominal", "randomized", "real_proxy")


def world_config(name: str) -> dict:
    from robolearn.paths import config_dir

    return yaml.safe_load((config_dir() / "world" / f"{name}.yaml").read_text())


def steps_per_second(world: dict | None, steps: int = 2000) -> float:
    from robolearn.sim.lift import HOME_QPOS, LiftEnv

    env = LiftEnv(world=world)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for t in range(steps):
        _, _, term, trunc, _ = env.step(HOME_QPOS + 0.3 * np.sin(t / 10 + np.arange(6)))
        if term or trunc or t % 200 == 199:  # resets (where worlds are sampled) count too
            env.reset(seed=t)
    return steps / (time.perf_counter() - t0)


def throughput(repeats: int = 5) -> dict:
    """Steps/s of the shipped worlds and of each group of `randomized` alone, interleaved, medians of `repeats`."""
    randomized = world_config("randomized")
    worlds = {w: None if w == "nominal" else world_config(w) for w in WORLDS}
    worlds.update({f"randomized {g} only": {"name": g, g: randomized[g]}
                   for g in ("physics", "object", "latency", "sensors", "visual")})
    runs = {w: [] for w in worlds}
    for _ in range(repeats):
        for w, config in worlds.items():
            runs[w].append(steps_per_second(config))
    med = {w: statistics.median(v) for w, v in runs.items()}
    return {"steps_per_s": med, "runs": runs, "cost_vs_nominal": {w: 1 - med[w] / med["nominal"] for w in worlds}}


def evaluate(checkpoint: str, task_name: str, world: str, episodes: int) -> dict:
    from hydra import compose, initialize_config_dir

    from robolearn.paths import config_dir
    from robolearn.policies.checkpoint import load_policy
    from robolearn.sim.evaluation import evaluate_policy
    from robolearn.tasks import load_task

    with initialize_config_dir(str(config_dir()), version_base=None):
        cfg = compose("eval", [f"task={task_name}", f"world={world}"])
    task = load_task(cfg.task, cfg.world)
    policy = load_policy(checkpoint)
    res = evaluate_policy(policy, task.env_id, range(100000, 100000 + episodes), task.env_kwargs, progress=False)
    return {k: res[k] for k in ("success_rate", "ci95", "n_episodes", "mean_length", "seconds")}


def ros_real_proxy(checkpoint: str, task_name: str, episodes: int, domain: int, graph: str) -> dict:
    from robolearn.deploy import ros_params_dir

    # loopback only: LOCALHOST discovery, a private domain, Fast DDS pinned to 127.0.0.1 by the shipped profile
    env = {**os.environ, "ROBOLEARN_TRANSPORT": "dds", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_LOCALHOST_ONLY": "1", "FASTDDS_DEFAULT_PROFILES_FILE": str(ros_params_dir() / "fastdds_loopback.xml")}
    t0 = time.perf_counter()
    limit = episodes * 15 + 60  # s: the graph stops itself then; the process is killed 60 s later at the latest
    proc = subprocess.run([sys.executable, "-m", "robolearn", "deploy", f"checkpoint={checkpoint}", f"task={task_name}",
                           f"graph={graph}", "world=real_proxy", f"episodes={episodes}", f"ros_domain_id={domain}",
                           f"timeout={limit}"], capture_output=True, text=True, env=env, timeout=limit + 60)
    out = proc.stdout + proc.stderr
    match = re.search(r"success rate (\d+)/(\d+)", out)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"deploy failed:\n{out[-3000:]}")
    from robolearn.sim.evaluation import wilson_interval

    k, n = int(match.group(1)), int(match.group(2))
    inference = re.search(r"\[policy_node\].*?inference: median ([\d.]+) ms", out, re.S)
    missed = re.search(r"\[robot_driver\] latency report.*?missed periods (\d+)", out, re.S)
    markers = re.search(r"frames_without_markers (\d+), poses_published (\d+)", out)
    return {"success_rate": k / n, "ci95": list(wilson_interval(k, n)), "n_episodes": n, "graph": graph,
            "seconds": time.perf_counter() - t0, "inference_median_ms": float(inference.group(1)) if inference else None,
            "driver_missed_periods": int(missed.group(1)) if missed else None,
            "marker_frames_missed_published": [int(markers.group(1)), int(markers.group(2))] if markers else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", action="append", default=[], help="label=checkpoint folder (repeatable)")
    parser.add_argument("--task", default="lift")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--ros-episodes", type=int, default=50)
    parser.add_argument("--ros-domain", type=int, default=71)
    parser.add_argument("--graph", default="sim_marker", help="sim_marker (state policies) | sim (camera policies)")
    parser.add_argument("--skip-sim", action="store_true", help="only the ROS 2 runs")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", default="bench/results/transfer_lift.json")
    args = parser.parse_args()
    results: dict = {"task": args.task, "episodes": args.episodes, "policies": {}}
    if not args.skip_throughput:
        results["throughput"] = throughput()
        t = results["throughput"]
        for w, v in t["steps_per_s"].items():
            print(f"env steps/s (median of 5), {w}: {v:.0f} ({t['cost_vs_nominal'][w]:+.1%} cost)", flush=True)
    for item in args.policy:
        label, checkpoint = item.split("=", 1)
        row = {"checkpoint": checkpoint}
        for world in () if args.skip_sim else WORLDS:
            row[world] = evaluate(checkpoint, args.task, world, args.episodes)
            print(f"{label:12s} {world:11s} {row[world]['success_rate']:6.1%} "
                  f"(95% CI {row[world]['ci95'][0]:.0%}-{row[world]['ci95'][1]:.0%})", flush=True)
        if args.ros_episodes:
            row["real_proxy_ros"] = ros_real_proxy(checkpoint, args.task, args.ros_episodes, args.ros_domain,
                                                   args.graph)
            r = row["real_proxy_ros"]
            print(f"{label:12s} real_proxy through ROS 2: {r['success_rate']:.1%} "
                  f"(95% CI {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}, {r['seconds']:.0f} s)", flush=True)
        results["policies"][label] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
