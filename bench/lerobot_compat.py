"""LeRobot's own code against robolearn's LeRobot import and export (run by hand; LeRobot is not a robolearn
dependency: its releases need torch < 2.11 and torchvision).

  1. LeRobot writes a dataset (`LeRobotDataset.create`, `add_frame`, `save_episode`, `finalize`: its default AV1
     videos, two cameras, three episodes) and `robolearn dataset import` reads it: every low-dim value must come back
     exactly and every frame must be the one recorded (PSNR against the frames LeRobot was given).
  2. `robolearn dataset export` writes a robolearn dataset and `LeRobotDataset` loads it: items, video frames at the
     right index, `delta_timestamps` windows, stats, task strings.

Run it with a Python that has lerobot (e.g. a venv with `pip install torch==2.9.1 torchvision==0.24.1
lerobot==0.4.4`), pointing at robolearn's venv:

    /tmp/lrvenv/bin/python bench/lerobot_compat.py --robolearn .venv/bin/robolearn --dataset data/lift_images.zarr

`--dataset` is a robolearn dataset with camera keys (e.g. `robolearn collect task=lift_image n_episodes=5`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def robolearn_python(robolearn: str) -> str:
    return str(Path(robolearn).with_name("python"))


def read_zarr(robolearn: str, path: Path) -> dict:
    """The robolearn dataset's arrays and episode ends, read by robolearn's venv (this Python lacks robolearn)."""
    out = Path(tempfile.mkdtemp()) / "arrays.npz"
    code = ("import sys, numpy as np; from robolearn.datasets import ReplayBuffer\n"
            "b = ReplayBuffer.open(sys.argv[1]); d = b.load()\n"
            "np.savez(sys.argv[2], episode_ends=b.episode_ends, **d)\n")
    subprocess.run([robolearn_python(robolearn), "-c", code, str(path), str(out)], check=True)
    return dict(np.load(out))


def lerobot_writes_robolearn_reads(robolearn: str, work: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    rng = np.random.default_rng(0)
    features = {"observation.state": {"dtype": "float32", "shape": (6,), "names": [f"j{i}.pos" for i in range(6)]},
                "action": {"dtype": "float32", "shape": (6,), "names": [f"j{i}.pos" for i in range(6)]},
                "observation.images.laptop": {"dtype": "video", "shape": (64, 96, 3), "names": ["height", "width", "channels"]},
                "observation.images.phone": {"dtype": "video", "shape": (64, 96, 3), "names": ["height", "width", "channels"]}}
    ds = LeRobotDataset.create("local/so101_test", fps=30, features=features, root=work / "lerobot_made",
                               robot_type="so101_follower")
    states, frames = [], {"laptop": [], "phone": []}
    yy, xx = np.mgrid[0:64, 0:96]
    for episode, length in enumerate((12, 20, 9)):
        for i in range(length):
            state = rng.normal(size=6).astype(np.float32)
            step = len(states)  # a different brightness and pattern phase per recorded frame
            images = {cam: np.stack([(xx * 2 + step * 5 + k * 40) % 256, (yy * 3 + k * 60) % 256,
                                     np.full_like(xx, 20 + (step * 37 + k * 11) % 210)], -1).astype(np.uint8)
                      for k, cam in enumerate(("laptop", "phone"))}
            ds.add_frame({"observation.state": state, "action": state * 2,
                          **{f"observation.images.{c}": im for c, im in images.items()},
                          "task": ["pick", "place"][episode % 2]})
            states.append(state)
            for cam, im in images.items():
                frames[cam].append(im)
        ds.save_episode()
    ds.finalize()
    out = work / "imported.zarr"
    subprocess.run([robolearn, "dataset", "import", "format=lerobot", f"source={work / 'lerobot_made'}",
                    f"output={out}"], check=True)
    data = read_zarr(robolearn, out)
    assert data["episode_ends"].tolist() == [12, 32, 41], data["episode_ends"]
    assert np.array_equal(data["joint_pos"], np.stack(states)), "state differs"
    assert np.array_equal(data["action"], np.stack(states) * 2), "action differs"
    for cam in ("laptop", "phone"):
        got, sent = data[f"{cam}_image"], np.stack(frames[cam])
        matched = [psnr(got[i], sent[i]) for i in range(len(sent))]
        best = [int(np.argmax([psnr(got[i], s) for s in sent])) for i in range(len(sent))]
        print(f"1. LeRobot-written {cam}: {len(got)} frames, PSNR to the recorded frame min {min(matched):.1f} dB, "
              f"median {np.median(matched):.1f} dB; each frame's best match among all recorded frames is itself: "
              f"{best == list(range(len(sent)))}")
        assert best == list(range(len(sent))), "a frame was matched to the wrong timestamp"
    print("1. LeRobot 0.4.4 writes, robolearn imports: low-dim exact, episode ends exact, frames at their timestamps")


def robolearn_writes_lerobot_reads(robolearn: str, dataset: Path, work: Path) -> None:
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = work / "exported"
    subprocess.run([robolearn, "dataset", "export", "format=lerobot", f"source={dataset}", f"output={out}",
                    "lerobot.task=lift the cube"], check=True)
    data = read_zarr(robolearn, dataset)
    info = json.loads((out / "meta/info.json").read_text())
    cams = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    ds = LeRobotDataset("local/robolearn_export", root=out, video_backend="pyav")
    assert ds.num_frames == len(data["action"]) and ds.num_episodes == len(data["episode_ends"])
    worst = np.inf
    for index in np.linspace(0, ds.num_frames - 1, 7).astype(int):
        item = ds[int(index)]
        assert torch.equal(item["observation.state"], torch.from_numpy(data["joint_pos"][index])), index
        assert item["task"] == "lift the cube"
        for cam in cams:
            key = cam.removeprefix("observation.images.") + "_image"
            frame = (item[cam].numpy().transpose(1, 2, 0) * 255).round()
            worst = min(worst, psnr(data[key][index], frame))
    windowed = LeRobotDataset("local/robolearn_export", root=out, video_backend="pyav",
                              delta_timestamps={"observation.state": [-1 / ds.fps, 0.0]})[0]
    assert windowed["observation.state_is_pad"].tolist() == [True, False]
    print(f"2. robolearn exports, LeRobotDataset loads: {ds.num_episodes} episodes, {ds.num_frames} frames, cameras "
          f"{cams}; state exact, frames at their index (PSNR >= {worst:.1f} dB), delta_timestamps windows, tasks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robolearn", required=True, help="the robolearn command of robolearn's venv")
    parser.add_argument("--dataset", required=True, type=Path, help="a robolearn dataset with camera keys")
    args = parser.parse_args()
    import lerobot

    print(f"lerobot {getattr(lerobot, '__version__', '?')}")
    work = Path(tempfile.mkdtemp(prefix="lerobot_compat_"))
    lerobot_writes_robolearn_reads(args.robolearn, work)
    robolearn_writes_lerobot_reads(args.robolearn, args.dataset.resolve(), work)


if __name__ == "__main__":
    main()
