"""Training-step anatomy of an image Diffusion Policy: the share of a step spent loading the batch (gathering
uint8 windows) and augmenting it (random crops, the [-1, 1] map), the step rate of each image encoder, the
single-decision latency (batch 1, DDIM), and the resident memory of the data.

    python bench/image_training.py [--dataset data/lift_image.zarr] [--encoders small_cnn,resnet18]

Uses the task's features (default `lift_image`: two 96 x 96 cameras + joint positions) and the default policy
config (configs/policy/diffusion_unet.yaml). `resnet18` needs torchvision (it is skipped, with a note, where
torchvision cannot be imported). Figures are medians over `--steps` steps after 3 warm-up steps.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
import yaml

from robolearn.datasets import SequenceDataset
from robolearn.paths import config_dir
from robolearn.policies.diffusion import DiffusionPolicyConfig
from robolearn.policies.vision import crop_images, normalize_images


def rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="lift_image")
    parser.add_argument("--dataset", default="data/lift_image.zarr")
    parser.add_argument("--encoders", default="small_cnn,resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    task = yaml.safe_load((config_dir() / "task" / f"{args.task}.yaml").read_text())
    policy_yaml = yaml.safe_load((config_dir() / "policy" / "diffusion_unet.yaml").read_text())
    features = task["obs_features"]
    before = rss_mib()
    data = SequenceDataset(args.dataset, list(features), task.get("action_key", "action"))
    image_bytes = sum(data.data[k].nbytes for k in data.image_keys)
    print(f"{args.dataset}: {len(data)} windows; images kept uint8 in memory: {image_bytes / 2**20:.0f} MiB "
          f"({', '.join(f'{k} {data.data[k].dtype} {data.data[k].shape}' for k in data.image_keys)}); "
          f"peak RSS {before:.0f} -> {rss_mib():.0f} MiB after loading")
    normalizer = data.fit_normalizer()
    rng = np.random.default_rng(0)
    for encoder in args.encoders.split(","):
        spec = {k: v for k, v in policy_yaml.items() if k not in ("_target_", "name")}
        spec["image_encoder"] = {**spec.get("image_encoder", {}), "type": encoder}
        try:
            policy = DiffusionPolicyConfig(obs_features=features, action_dim=data.action_dim, **spec).build(normalizer)
        except ImportError as exc:
            print(f"{encoder}: skipped ({exc})")
            continue
        n_params = sum(p.numel() for p in policy.obs_encoder.parameters())
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        load, augment, step = [], [], []
        for i in range(args.steps + 3):
            t0 = time.perf_counter()
            batch = data.get_batch(rng.choice(len(data), args.batch_size, replace=False))
            t1 = time.perf_counter()
            for key in data.image_keys:  # what the encoder does before its network, timed on its own
                images = batch["obs"][key].flatten(0, 1)
                normalize_images(crop_images(images, policy.obs_encoder.image_encoders[key].crop, random=True))
            t2 = time.perf_counter()
            loss = policy.compute_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            t3 = time.perf_counter()
            if i >= 3:
                load.append(t1 - t0)
                augment.append(t2 - t1)
                step.append(t3 - t2)  # includes the augmentation again, inside the encoder
        total = median_ms(load) + median_ms(step)
        policy.eval()
        obs = {k: v[:1] for k, v in data.get_batch(np.arange(1))["obs"].items()}
        latency = []
        with torch.no_grad():
            for i in range(13):
                t0 = time.perf_counter()
                policy.predict_action(obs)
                if i >= 3:
                    latency.append(time.perf_counter() - t0)
        print(f"{encoder}: encoders {n_params / 1e6:.2f}M params; batch {args.batch_size}: step {total:.0f} ms "
              f"({1e3 / total:.1f} steps/s), load {median_ms(load):.1f} ms ({median_ms(load) / total:.1%}), "
              f"augment {median_ms(augment):.1f} ms ({median_ms(augment) / total:.1%}); decision latency at batch 1 "
              f"(encoders + DDIM-{policy.config.num_inference_steps}): {median_ms(latency):.1f} ms; "
              f"peak RSS {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
