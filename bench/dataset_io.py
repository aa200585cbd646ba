"""Dataset import and export speed, round-trip fidelity and file sizes (`robolearn dataset import/export`).

Data: `--episodes` scripted Lift episodes with two 96 x 96 cameras (front, wrist) and every low-dim key, collected
here; from them
  * a LeRobot v3.0 dataset (exported with the default H.264 4:4:4 CRF 18 settings, and with LeRobot's own default
    AV1 4:2:0 CRF 30), imported back;
  * a robomimic-layout HDF5 file of `--demos` demos (the Lift episodes repeated, with an 84 x 84 agentview image as
    robomimic's image datasets have), imported;
  * a ROS 2 bag (MCAP), exported and imported back.
Speeds are frames (time steps, all cameras included) per second, each the median of `--repeats` runs; the
baseline, measured in the same run, is loading the same dataset from robolearn's own zarr (`ReplayBuffer.load`).
Round trips report whether low-dim arrays and episode boundaries come back bit-exact, and the PSNR of camera frames.

    python bench/dataset_io.py [--episodes 100] [--demos 200] [--repeats 3] [--out bench/results/dataset_io.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from robolearn.cli import main as cli_main
from robolearn.datasets import ReplayBuffer
from robolearn.datasets.formats.common import resize_frames


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).is_dir() \
        else Path(path).stat().st_size


def robolearn(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "robolearn", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"robolearn {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def timed(args: list[str], output: Path, repeats: int) -> float:
    """Median wall time (s) of the command `robolearn *args output=...` (run in this process, so Python's start
    is not counted; hydra, reading, writing and the final rename are), writing `output` afresh each time."""
    times = []
    for _ in range(repeats):
        shutil.rmtree(output, ignore_errors=True)
        t0 = time.perf_counter()
        cli_main([*args, f"output={output}"])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_time(path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with ReplayBuffer.open(path) as buffer:
            buffer.load()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(a_path: Path, b_path: Path) -> dict:
    with ReplayBuffer.open(a_path) as a, ReplayBuffer.open(b_path) as b:
        same_ends = a.episode_ends.tolist() == b.episode_ends.tolist()
        a_data, b_data = a.load(), b.load()
    out = {"episode_ends_identical": same_ends, "same_keys": sorted(a_data) == sorted(b_data), "psnr_db": {}}
    low_dim = [k for k, v in a_data.items() if v.dtype != np.uint8]
    out["low_dim_bit_exact"] = all(a_data[k].dtype == b_data[k].dtype and a_data[k].tobytes() == b_data[k].tobytes()
                                   for k in low_dim)
    for k, v in a_data.items():
        if v.dtype == np.uint8:
            mse = np.mean((v.astype(np.float64) - b_data[k]) ** 2)
            out["psnr_db"][k] = float("inf") if mse == 0 else round(float(10 * np.log10(255**2 / mse)), 2)
    return out


def make_robomimic(src: Path, path: Path, n_demos: int) -> int:
    """A robomimic-layout file of `n_demos` demos from the Lift episodes (repeated); returns its frame count."""
    with ReplayBuffer.open(src) as buffer:
        episodes = [buffer.get_episode(e) for e in range(buffer.n_episodes)]
    frames = 0
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        for d in range(n_demos):
            ep = episodes[d % len(episodes)]
            g = data.create_group(f"demo_{d}")
            n = len(ep["action"])
            g.attrs["num_samples"] = n
            g["actions"], g["rewards"], g["dones"] = ep["action"].astype(np.float64), ep["reward"], ep["done"]
            g["states"] = np.zeros((n, 45))
            g["obs/robot0_joint_pos"] = ep["joint_pos"].astype(np.float64)
            g["obs/object"] = np.concatenate([ep["cube_pos"], ep["cube_quat"]], 1).astype(np.float64)
            g["obs/agentview_image"] = resize_frames(ep["front_image"], (84, 84))
            frames += n
        names = [f"demo_{d}".encode() for d in range(n_demos)]
        f["mask/train"], f["mask/valid"] = names[: int(0.9 * n_demos)], names[int(0.9 * n_demos):]
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--demos", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/dataset_io.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dataset_io_"))
    results: dict = {"episodes": args.episodes, "repeats": args.repeats}
    try:
        zarr_path = work / "lift.zarr"
        robolearn("collect", "task=lift_image", f"n_episodes={args.episodes}", f"output={zarr_path}", cwd=work)
        with ReplayBuffer.open(zarr_path) as buffer:
            n_frames = buffer.n_steps
        results["frames"] = n_frames
        results["zarr_bytes"] = folder_bytes(zarr_path)
        base = load_time(zarr_path, args.repeats)
        results["baseline_zarr_load_frames_per_s"] = round(n_frames / base)
        print(f"{args.episodes} Lift episodes, {n_frames} frames, two 96x96 cameras; zarr {results['zarr_bytes'] / 2**20:.1f} MiB, "
              f"loads at {n_frames / base:.0f} frames/s (baseline)")

        for name, video in (("lerobot", []), ("lerobot_av1", ["lerobot.video.codec=libsvtav1",
                                                             "lerobot.video.pix_fmt=yuv420p", "lerobot.video.crf=30"])):
            folder = work / name
            t_export = timed(["dataset", "export", "format=lerobot", f"source={zarr_path}", *video], folder, args.repeats)
            back = work / f"{name}_back.zarr"
            t_import = timed(["dataset", "import", "format=lerobot", f"source={folder}"], back, args.repeats)
            row = {"export_frames_per_s": round(n_frames / t_export), "import_frames_per_s": round(n_frames / t_import),
                   "bytes": {"data": folder_bytes(folder / "data"), "videos": folder_bytes(folder / "videos")},
                   **compare(zarr_path, back)}
            row["import_over_zarr_load"] = round(base / t_import, 4)
            results[name] = row
            print(f"{name}: export {row['export_frames_per_s']} frames/s, import {row['import_frames_per_s']} frames/s "
                  f"({row['import_over_zarr_load']:.3f}x zarr load); parquet {row['bytes']['data'] / 2**10:.0f} KiB, "
                  f"mp4 {row['bytes']['videos'] / 2**20:.2f} MiB; low-dim bit-exact {row['low_dim_bit_exact']}, "
                  f"episode ends identical {row['episode_ends_identical']}, PSNR {row['psnr_db']}")

        h5 = work / "robomimic.hdf5"
        rm_frames = make_robomimic(zarr_path, h5, args.demos)
        t_rm = timed(["dataset", "import", "format=robomimic", f"source={h5}"], work / "rm.zarr", args.repeats)
        results["robomimic"] = {"demos": args.demos, "frames": rm_frames, "hdf5_bytes": folder_bytes(h5),
                                "import_frames_per_s": round(rm_frames / t_rm)}
        print(f"robomimic: {args.demos} demos, {rm_frames} frames (84x84 agentview): import "
              f"{results['robomimic']['import_frames_per_s']} frames/s")

        bag = work / "bag"
        t_bag_export = timed(["dataset", "export", "format=rosbag", f"source={zarr_path}"], bag, args.repeats)
        t_bag_import = timed(["dataset", "import", "format=rosbag", f"source={bag}"], work / "bag_back.zarr",
                             args.repeats)
        results["rosbag"] = {"export_frames_per_s": round(n_frames / t_bag_export),
                             "import_frames_per_s": round(n_frames / t_bag_import), "bytes": folder_bytes(bag),
                             **compare(zarr_path, work / "bag_back.zarr")}
        r = results["rosbag"]
        print(f"rosbag (mcap): export {r['export_frames_per_s']} frames/s, import {r['import_frames_per_s']} frames/s, "
              f"{r['bytes'] / 2**20:.1f} MiB; low-dim bit-exact {r['low_dim_bit_exact']}, PSNR {r['psnr_db']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
