"""Real-time behaviour of the ROS 2 deployment graph: control-rate jitter and observation-to-command latency.

    python bench/ros_latency.py --checkpoint runs/lift_diffusion_unet/checkpoints/best \
        [--value runs/lift_mixed_value_cal_ql/checkpoints/latest] [--episodes 5]

Runs `robolearn deploy` (the simulated arm's driver and the policy node as separate processes over
cyclonedds on loopback, 20 Hz) for a few simulated episodes, once with the policy alone and, with
--value, once with value re-ranking of K chunks, and prints each node's latency report and a
summary table: p99 jitter of the policy node's command period (target < 5 ms), missed periods,
observation-to-command latency (median, p99), inference time, success.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys


def run_graph(checkpoint: str, value: str | None, k: int, episodes: int, domain: int) -> dict:
    args = [sys.executable, "-m", "robolearn", "deploy", f"checkpoint={checkpoint}", f"episodes={episodes}",
            f"ros_domain_id={domain}"]
    if value:
        args += [f"value={value}", f"+params.policy_node.rerank_k={k}"]
    print("$ " + " ".join(args[2:]), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "ROBOLEARN_TRANSPORT": "dds"})
    out = proc.stdout + proc.stderr
    print(out, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed (exit {proc.returncode})")
    policy = out[out.index("[policy_node] latency report"):]

    def number(pattern: str, text: str = policy) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")

    return {"jitter_median": number(r"jitter \|interval - period\|: median ([\d.]+) ms"),
            "jitter_p99": number(r"jitter \|interval - period\|: median [\d.]+ ms, p99 ([\d.]+) ms"),
            "missed": number(r"missed periods (\d+)"),
            "latency_median": number(r"latency: median ([\d.]+) ms"),
            "latency_p99": number(r"latency: median [\d.]+ ms, p99 ([\d.]+) ms"),
            "inference_median": number(r"inference: median ([\d.]+) ms"),
            "stale_dropped": number(r"stale_actions_dropped (\d+)"),
            "success": re.search(r"success rate (\d+/\d+)", out).group(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/lift_diffusion_unet/checkpoints/best")
    parser.add_argument("--value", default=None, help="Q-function checkpoint: also run with re-ranking")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    domain = 1 + os.getpid() % 200
    rows = {"policy alone": run_graph(args.checkpoint, None, 0, args.episodes, domain)}
    if args.value:
        rows[f"re-ranked, K={args.k}"] = run_graph(args.checkpoint, args.value, args.k, args.episodes, domain)
    print(f"\npolicy node at 20 Hz, {args.episodes} simulated episodes per row, driver and policy as separate "
          f"processes over cyclonedds (loopback), {os.cpu_count()} CPU cores")
    print(f"{'':<22}{'jitter med':>11}{'jitter p99':>11}{'missed':>8}{'obs->cmd med':>13}{'obs->cmd p99':>13}"
          f"{'inference':>10}{'stale drop':>11}{'success':>9}")
    for name, r in rows.items():
        print(f"{name:<22}{r['jitter_median']:>9.2f}ms{r['jitter_p99']:>9.2f}ms{r['missed']:>8.0f}"
              f"{r['latency_median']:>11.2f}ms{r['latency_p99']:>11.2f}ms{r['inference_median']:>8.1f}ms"
              f"{r['stale_dropped']:>11.0f}{r['success']:>9}")


if __name__ == "__main__":
    main()
