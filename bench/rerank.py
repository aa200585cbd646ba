"""Value-guided re-ranking (V-GPS) on Lift from mixed-quality demonstrations.

    python bench/rerank.py [--episodes 200] [--failure-rate 0.5] [--policy-steps 4000] [--q-steps 10000]

In one run, with the `robolearn` commands a user would type (collection is skipped when the
dataset exists, and training resumes from its checkpoints, so a second run only re-evaluates):
1. collects mixed-quality Lift demonstrations: the scripted expert with injected mistakes
   (`robolearn collect task.expert.failure_rate=...`);
2. trains the default Diffusion Policy on them (`robolearn train`), so it inherits the mistakes;
3. trains a Cal-QL Q-function over (observation history, action chunk) on the same data
   (`robolearn train-value`);
4. evaluates on the same 100 held-out seeds, with the same sampling seed: the policy alone;
   re-ranked by the Q-function with K = 4, 16, 64; and the control that picks uniformly at random
   among the same K samples;
5. measures the added latency per decision (batch 1, ms) for each K against the policy alone.
It prints the table and writes bench/results/rerank_lift.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def run_robolearn(*args: str) -> None:
    print("$ robolearn " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "robolearn", *args], check=True)


def decision_latency_ms(policy, obs: dict, repeats: int) -> float:
    """Median wall time of one `predict_action` at batch 1, ms."""
    g = torch.Generator().manual_seed(0)
    policy.predict_action(obs, generator=g)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.predict_action(obs, generator=g)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/lift_mixed.zarr")
    parser.add_argument("--policy-run", default="runs/lift_mixed_diffusion_unet")
    parser.add_argument("--q-run", default="runs/lift_mixed_value_{algorithm}")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--failure-rate", type=float, default=0.5)
    parser.add_argument("--policy-steps", type=int, default=4000)
    parser.add_argument("--q-steps", type=int, default=10000)
    parser.add_argument("--algorithm", default="cal_ql", choices=["cal_ql", "iql"])
    parser.add_argument("--n-seeds", type=int, default=100)
    parser.add_argument("--ks", default="4,16,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default="bench/results/rerank_lift.json")
    parser.add_argument("--latency-only", action="store_true",
                        help="keep the success rows of --results and measure only the latency (on a quiet machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]

    dataset = Path(args.dataset)
    if not dataset.exists() and not args.latency_only:
        run_robolearn("collect", f"n_episodes={args.episodes}", f"task.expert.failure_rate={args.failure_rate}", f"output={dataset}")
    policy_run, q_run = Path(args.policy_run), Path(args.q_run.format(algorithm=args.algorithm))
    if not args.latency_only:
        run_robolearn("train", f"dataset={dataset}", f"run_dir={policy_run}", f"training.steps={args.policy_steps}",
                      "training.eval_every=1000", f"threads={args.threads}")
        run_robolearn("train-value", f"dataset={dataset}", f"run_dir={q_run}", f"algorithm={args.algorithm}",
                      f"training.steps={args.q_steps}", f"threads={args.threads}")
    policy_ckpt, q_ckpt = policy_run / "checkpoints" / "best", q_run / "checkpoints" / "latest"

    from robolearn.datasets import ReplayBuffer
    from robolearn.policies.checkpoint import load_policy
    from robolearn.sim.evaluation import evaluate_policy
    from robolearn.value import ValueGuidedPolicy, load_q_function

    policy = load_policy(policy_ckpt)
    q = load_q_function(q_ckpt)
    buffer = ReplayBuffer.open(dataset)
    demo_success = float(buffer.array("success")[:][buffer.episode_ends - 1].mean())
    seeds = range(100000, 100000 + args.n_seeds)  # the held-out test seeds of `robolearn eval`
    env_kwargs = {"control_hz": 20, "max_episode_seconds": 10.0}

    rows = []

    def evaluate(label: str, candidate, k: int) -> None:
        t0 = time.perf_counter()
        r = evaluate_policy(candidate, "robolearn/Lift-v0", seeds, env_kwargs, sampling_seed=0, progress=False)
        rows.append({"method": label, "k": k, "success_rate": r["success_rate"], "ci95": r["ci95"],
                     "mean_length": r["mean_length"], "eval_seconds": time.perf_counter() - t0})
        print(f"{label:<28} success {r['success_rate']:6.1%}  (95% CI {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%})",
              flush=True)

    if args.latency_only:
        rows = json.loads(Path(args.results).read_text())["rows"]
    else:
        evaluate("policy alone", policy, 1)
        for k in ks:
            evaluate(f"re-ranked by Q, K={k}", ValueGuidedPolicy(policy, q, k=k), k)
            evaluate(f"random choice, K={k}", ValueGuidedPolicy(policy, q, k=k, selection="random"), k)

    obs = {key: torch.zeros(1, policy.n_obs_steps, *f.shape) for key, f in policy.obs_features.items()}
    base_ms = decision_latency_ms(policy, obs, repeats=50)
    latency = {"policy alone": base_ms}
    for k in ks:
        latency[f"K={k}"] = decision_latency_ms(ValueGuidedPolicy(policy, q, k=k), obs, repeats=50)

    alone = rows[0]["success_rate"]
    print(f"\nLift, mixed-quality demonstrations ({buffer.n_episodes} episodes, {demo_success:.0%} successful), "
          f"{args.n_seeds} held-out seeds, Q-function: {args.algorithm}")
    print(f"{'method':<28}{'success':>9}{'vs alone':>10}{'95% CI':>12}{'added ms/decision':>19}")
    for row in rows:
        reranked = row["method"].startswith("re-ranked")
        added = f"{latency['K=' + str(row['k'])] - base_ms:.1f}" if reranked else ""
        ci = f"{row['ci95'][0]:.0%}-{row['ci95'][1]:.0%}"
        print(f"{row['method']:<28}{row['success_rate']:>9.0%}{100 * (row['success_rate'] - alone):>+9.0f}p"
              f"{ci:>12}{added:>19}")
    print(f"policy alone: {base_ms:.1f} ms per decision at batch 1 ({torch.get_num_threads()} threads)")
    results = {"rows": rows, "latency_ms": latency, "dataset_episodes": buffer.n_episodes,
               "dataset_success": demo_success, "algorithm": args.algorithm, "n_seeds": args.n_seeds,
               "policy_steps": args.policy_steps, "q_steps": args.q_steps}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=1))
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
