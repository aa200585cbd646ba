"""How to store camera images in a zarr dataset: size on disk, time to load every frame, time to read one
training batch of random frames, for Blosc codecs and chunk lengths (frames per chunk), beside a JPEG (lossy)
reference encoded with OpenCV.

Frames come from the Lift scene's two 96 x 96 cameras driven by the scripted expert (robolearn/Lift-v0). Every
figure is the median of `--repeats` runs, measured side by side in this process.

    python bench/image_storage.py [--episodes 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from robolearn.datasets.collection import run_expert_episode
from robolearn.sim.expert import LiftExpert
from robolearn.sim.lift import LiftEnv


def frames(n_episodes: int) -> np.ndarray:
    env, expert = LiftEnv(cameras=("front", "wrist")), LiftExpert()
    out = [np.concatenate([ep["front_image"], ep["wrist_image"]])
           for ep in (run_expert_episode(env, expert, seed) for seed in range(n_episodes))]
    env.close()
    return np.concatenate(out)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jpeg_row(images: np.ndarray, batch: np.ndarray, repeats: int, quality: int = 90) -> str:
    import cv2

    encoded = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1] for im in images]
    size = sum(len(e) for e in encoded)
    load = median_time(lambda: [cv2.imdecode(e, cv2.IMREAD_COLOR) for e in encoded], repeats)
    read = median_time(lambda: [cv2.imdecode(encoded[i], cv2.IMREAD_COLOR) for i in batch], repeats)
    decoded = np.stack([cv2.imdecode(e, cv2.IMREAD_COLOR)[..., ::-1] for e in encoded])
    error = float(np.abs(decoded.astype(np.int16) - images).mean())
    return (f"{'jpeg q' + str(quality) + ' (OpenCV, lossy)':<34} {'1':>6} {size / 2**20:>9.1f} "
            f"{images.nbytes / size:>6.1f}x {load:>8.2f} {read * 1e3:>10.1f}   mean abs error {error:.2f}/255")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="frames per training batch (64 windows x 2 steps x 2 cameras)")
    args = parser.parse_args()
    images = frames(args.episodes)
    rng = np.random.default_rng(0)
    batch = np.sort(rng.choice(len(images), size=min(args.batch, len(images)), replace=False))
    print(f"{len(images)} frames of 96 x 96 x 3 uint8 ({images.nbytes / 2**20:.1f} MiB raw); "
          f"a batch reads {len(batch)} random frames; median of {args.repeats}")
    print(f"{'codec':<34} {'frames':>6} {'MiB':>9} {'ratio':>7} {'load s':>8} {'batch ms':>10}")
    codecs = {"blosc zstd5 bitshuffle (default)": BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
              "blosc zstd5 shuffle": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
              "blosc lz4 5 noshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
              "none": None}
    root = Path(tempfile.mkdtemp(prefix="image_storage_"))
    try:
        for name, codec in codecs.items():
            for chunk in (1, 16, 128):
                path = root / f"{name.split()[0]}{hash(name) % 1000}_{chunk}.zarr"
                arr = zarr.create_array(path, shape=images.shape, chunks=(chunk, 96, 96, 3), dtype="uint8",
                                        compressors=codec)
                arr[:] = images
                load = median_time(lambda: arr[:], args.repeats)
                read = median_time(lambda: arr.get_orthogonal_selection((batch,)), args.repeats)
                print(f"{name:<34} {chunk:>6} {folder_bytes(path) / 2**20:>9.1f} "
                      f"{images.nbytes / folder_bytes(path):>6.1f}x {load:>8.2f} {read * 1e3:>10.1f}")
        print(jpeg_row(images, batch, args.repeats))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
