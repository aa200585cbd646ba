"""Diffusion Policy speed on this machine: training throughput and inference latency of each sampling loop.

    python bench/policy_speed.py [--threads 2] [--repeats 30] [--no-compiled] [--json PATH]

For robolearn's default U-Net (Lift: 14-dim observation x 2 steps, 6-dim action) and for a
U-Net of the reference Diffusion Policy's low-dim size (down_dims 256/512/1024, kernel 5,
8 groups, step embedding 256, horizon 16, observation 20 x 2 steps, action 2), both measured in
this run, it prints:
- training throughput, samples/s (batch 256: noise, forward, backward, AdamW step),
- single-chunk latency at batch 1, DDIM-10 and DDPM-100 (median and p95, ms),
- latency of sampling 16 candidate chunks in one batched DDIM-10 pass (value re-ranking),
training throughput also with the U-Net through `torch.compile` (unless --no-compiled),
each chunk latency for the three sampling loops (`inference=eager|fast|compiled`, robolearn.policies.diffusion),
timed in turn within every repeat so that the machine's noise hits them alike, with the ratios fast / eager and
compiled / eager, and the compile time of the compiled loop (its first call per batch size).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from robolearn.datasets import LinearNormalizer
from robolearn.policies import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.features import low_dim_spec


def make_policy(obs_dim: int, action_dim: int, down_dims: list[int], step_embed_dim: int) -> DiffusionPolicy:
    config = DiffusionPolicyConfig(obs_features=low_dim_spec({"obs": obs_dim}), action_dim=action_dim, horizon=16,
                                   n_obs_steps=2, n_action_steps=8, down_dims=down_dims, kernel_size=5,
                                   n_groups=8, step_embed_dim=step_embed_dim)
    rng = np.random.default_rng(0)
    normalizer = LinearNormalizer.fit({"obs": rng.uniform(-1, 1, (100, obs_dim)),
                                       "action": rng.uniform(-1, 1, (100, action_dim))})
    return DiffusionPolicy(config, normalizer)


def train_throughput(policy: DiffusionPolicy, batch_size: int = 256, steps: int = 8, compiled: bool = False) -> float:
    """Training samples/s at `batch_size` (noise, forward, backward, AdamW step), median of `steps` steps after two
    warm-up steps; `compiled`: on a copy whose U-Net runs through `torch.compile` (compiled in the warm-up)."""
    if compiled:
        policy = copy.deepcopy(policy)
        policy.model = torch.compile(policy.model)
    obs_dim, action_dim = policy.obs_features["obs"].size, policy.action_dim
    batch = {"obs": {"obs": torch.randn(batch_size, 2, obs_dim, device=policy.device)},
             "action": torch.randn(batch_size, 16, action_dim, device=policy.device)}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    policy.train()
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = policy.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync(policy.device)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    return batch_size / float(np.median(times))


def latency_ms(policy: DiffusionPolicy, sampler: str, steps: int, num_samples: int, repeats: int,
               modes: tuple[str, ...]) -> dict:
    """{mode: (median, p95) ms} of one `sample` call per mode (copies of `policy`), the modes timed in turn in
    every repeat; and {"compile s": the first call of the compiled loop} when it is among the modes."""
    policy.eval()
    policy.set_sampler(sampler, steps)
    obs = {"obs": torch.randn(1, 2, policy.obs_features["obs"].size, device=policy.device)}
    copies, out = {}, {}
    for mode in modes:
        copies[mode] = copy.deepcopy(policy)
        copies[mode].set_inference(mode)
        t0 = time.perf_counter()
        for _ in range(2):  # warm-up; the compiled loop compiles here
            copies[mode].sample(obs, num_samples=num_samples)
        if mode == "compiled":
            out["compile s"] = time.perf_counter() - t0
    times = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            sync(policy.device)
            t0 = time.perf_counter()
            copies[mode].sample(obs, num_samples=num_samples)
            sync(policy.device)
            times[mode].append((time.perf_counter() - t0) * 1000)
    for mode in modes:
        out[mode] = (float(np.median(times[mode])), float(np.percentile(times[mode], 95)))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled loop (its compile time)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    modes = ("eager", "fast") if args.no_compiled else ("eager", "fast", "compiled")
    nets = {
        "robolearn default": make_policy(14, 6, [32, 64, 128], 32).to(device),
        "reference size": make_policy(20, 2, [256, 512, 1024], 256).to(device),
    }
    rows = {}
    for name, policy in nets.items():
        params = sum(p.numel() for p in policy.model.parameters())
        rows[name] = {"params (M)": params / 1e6, "train samples/s (B=256)": train_throughput(policy)}
        if not args.no_compiled:
            rows[name]["train samples/s (B=256), compiled U-Net"] = train_throughput(policy, compiled=True)
        for label, sampler, steps, k, repeats in (("DDIM-10 B=1", "ddim", 10, 1, args.repeats),
                                                  ("DDPM-100 B=1", "ddpm", 100, 1, max(5, args.repeats // 5)),
                                                  ("DDIM-10 16 candidates", "ddim", 10, 16, args.repeats)):
            res = latency_ms(policy, sampler, steps, k, repeats, modes)
            for mode in modes:
                rows[name][f"{label} {mode} median/p95 ms"] = res[mode]
            for mode in modes[1:]:
                rows[name][f"{label} {mode}/eager"] = res[mode][0] / res["eager"][0]
            if "compile s" in res:
                rows[name][f"{label} compile s"] = res["compile s"]
            print(name, label, {k: v for k, v in rows[name].items() if k.startswith(label)}, flush=True)
    print(f"torch {torch.__version__}, {args.threads} threads, {device}")
    header = f"{'':44s}" + "".join(f"{n:>22s}" for n in nets) + f"{'default/reference':>20s}"
    print(header)
    for metric in rows["robolearn default"]:
        a, b = rows["robolearn default"][metric], rows["reference size"][metric]
        if isinstance(a, tuple):
            cells = "".join(f"{f'{v[0]:.1f} / {v[1]:.1f}':>22s}" for v in (a, b))
            ratio = a[0] / b[0]
        else:
            cells = f"{a:>22.3f}{b:>22.3f}"
            ratio = a / b
        print(f"{metric:44s}{cells}{ratio:>20.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "threads": args.threads,
                                               "device": str(device), "nets": rows}, indent=1))


if __name__ == "__main__":
    main()
