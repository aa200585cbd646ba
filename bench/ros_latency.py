"""Real-time behaviour of the ROS 2 deployment graph: control-rate jitter and observation-to-command latency.

    python bench/ros_latency.py --checkpoint runs/lift_diffusion_unet/checkpoints/best \
        [--value runs/lift_mixed_value_cal_ql/checkpoints/latest] [--episodes 5] [--transport dds rclpy]
    python bench/ros_latency.py --task lift_image --checkpoint runs/lift_image_diffusion_unet/checkpoints/best

Runs `robolearn deploy` (the simulated arm's driver and the policy node as separate processes on loopback,
20 Hz) for a few simulated episodes, once with the policy alone and, with --value, once with value
re-ranking of K chunks, for each transport given: `dds` (robolearn's cyclonedds transport, in this Python)
and `rclpy` (real rclpy with Fast DDS: the nodes run in `--ros-python`, by default the Kilted venv that
setup.sh installs, with Fast DDS pinned to 127.0.0.1). Prints each node's latency report and a summary
table: p99 jitter of the policy node's command period (target < 5 ms), missed periods of the policy node
and of the driver, observation-to-command latency (median, p99), inference time, success, and for rclpy
its latency over the DDS transport's, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_graph(checkpoint: str, value: str | None, k: int, episodes: int, domain: int, transport: str = "dds",
              ros_python: str | None = None, task: str = "lift", image_transport: str = "raw") -> dict:
    python = sys.executable if transport == "dds" else ros_python
    args = [python, "-m", "robolearn", "deploy", f"checkpoint={checkpoint}", f"episodes={episodes}",
            f"ros_domain_id={domain}", f"task={task}"]
    if image_transport != "raw":
        args += [f"+params.{node}.image_transport={image_transport}" for node in ("robot_driver", "policy_node")]
    if value:
        args += [f"value={value}", f"+params.policy_node.rerank_k={k}"]
    print(f"$ [{transport}] " + " ".join(args[2:]), flush=True)
    env = {**os.environ, "ROBOLEARN_TRANSPORT": transport, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_LOCALHOST_ONLY": "1", "FASTDDS_DEFAULT_PROFILES_FILE": str(ROOT / "configs/ros/fastdds_loopback.xml")}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    print(out, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed (exit {proc.returncode})")
    policy = out[out.index("[policy_node] latency report"):]

    def number(pattern: str, text: str = policy) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")

    driver = out[out.index("[robot_driver] latency report"):]
    return {"driver_missed": number(r"missed periods (\d+)", driver),
            "jitter_median": number(r"jitter \|interval - period\|: median ([\d.]+) ms"),
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
    parser.add_argument("--transport", nargs="+", choices=["dds", "rclpy"], default=["dds"],
                        help="transports to measure side by side (rclpy: real rclpy + Fast DDS in --ros-python)")
    parser.add_argument("--ros-python", default=str(ROOT / ".venv-ros" / "kilted" / "bin" / "python"),
                        help="a Python with rclpy (default: the Kilted venv from setup.sh)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (the table shows medians)")
    parser.add_argument("--task", default="lift", help="the task whose topic map the graph uses (lift_image: the "
                        "driver publishes its two cameras, the policy subscribes to them)")
    parser.add_argument("--image-transport", default="raw", choices=["raw", "compressed"],
                        help="camera frames as sensor_msgs/Image (raw) or CompressedImage (JPEG)")
    args = parser.parse_args()
    if "rclpy" in args.transport and not Path(args.ros_python).exists():
        raise SystemExit(f"--ros-python {args.ros_python} not found: run `bash setup.sh`")
    domain = 1 + os.getpid() % 200
    configs = [("policy alone", None, 0)] + ([(f"re-ranked, K={args.k}", args.value, args.k)] if args.value else [])
    rows = {}
    for _ in range(args.repeats):  # interleaved, so both transports see the same machine load
        for name, value, k in configs:
            for transport in args.transport:
                run = run_graph(args.checkpoint, value, k, args.episodes, domain, transport, args.ros_python,
                                args.task, args.image_transport)
                rows.setdefault(f"{name} [{transport}]", []).append(run)
    print(f"\ntask {args.task} (camera frames: {args.image_transport}), policy node at 20 Hz, {args.episodes} "
          f"simulated episodes per run, {args.repeats} run(s) per row "
          f"(medians), driver and policy as separate processes on loopback, {os.cpu_count()} CPU cores")
    print(f"{'':<30}{'jitter med':>11}{'jitter p99':>11}{'missed':>8}{'drv missed':>11}{'obs->cmd med':>13}"
          f"{'obs->cmd p99':>13}{'inference':>10}{'stale drop':>11}{'success':>9}")
    summary = {}
    for name, runs in rows.items():
        r = {key: (sorted(run[key] for run in runs)[len(runs) // 2] if key != "success" else runs[-1][key])
             for key in runs[0]}
        summary[name] = r
        print(f"{name:<30}{r['jitter_median']:>9.2f}ms{r['jitter_p99']:>9.2f}ms{r['missed']:>8.0f}"
              f"{r['driver_missed']:>11.0f}{r['latency_median']:>11.2f}ms{r['latency_p99']:>11.2f}ms"
              f"{r['inference_median']:>8.1f}ms{r['stale_dropped']:>11.0f}{r['success']:>9}")
    for name, _, _ in configs:
        if f"{name} [dds]" in summary and f"{name} [rclpy]" in summary:
            ratio = summary[f"{name} [rclpy]"]["latency_median"] / summary[f"{name} [dds]"]["latency_median"]
            print(f"{name}: observation-to-command latency, rclpy / dds = {ratio:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
