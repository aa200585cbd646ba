"""Marker pose accuracy and speed on rendered frames of the simulated marker cube.

    python bench/marker_pose.py [--frames 200] [--height 480 --width 640]

The cube at the Lift task's random spawn poses (robolearn/Lift-v0 with `cube_markers=True`), seen by the scene's
"marker" camera at the nominal calibration; prints the median and 90th percentile of the position error (mm)
and the orientation error (deg), the frames with no marker found, and the median estimation and render times.
Targets: median <= 5 mm and <= 3 deg.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robolearn.hardware.markers import MarkerPoseEstimator, cube_marker_map
from robolearn.sim.lift import LiftEnv
from robolearn.sim.markers import MARKER_LENGTH, sim_camera_calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args()
    size = (args.height, args.width)
    env = LiftEnv(cube_markers=True)
    est = MarkerPoseEstimator(sim_camera_calibration("marker", *size), cube_marker_map(0.015), MARKER_LENGTH)
    pos_err, ang_err, est_ms, render_ms, misses = [], [], [], [], 0
    for seed in range(args.frames):
        env.reset(seed=100000 + seed)
        t0 = time.perf_counter()
        frame = env.render_camera_image("marker", size)
        t1 = time.perf_counter()
        pose = est.estimate(frame)
        t2 = time.perf_counter()
        render_ms.append(1e3 * (t1 - t0))
        est_ms.append(1e3 * (t2 - t1))
        if pose is None:
            misses += 1
            continue
        true_pos = env.data.qpos[env._cube_adr:env._cube_adr + 3]
        true_quat = env.data.qpos[env._cube_adr + 3:env._cube_adr + 7]
        pos_err.append(1e3 * np.linalg.norm(pose.position - true_pos))
        ang_err.append(np.degrees(2 * np.arccos(min(1.0, abs(float(np.dot(pose.quat, true_quat)))))))
    print(f"{args.frames} frames at {args.height}x{args.width}: no marker found in {misses}")
    print(f"position error: median {np.median(pos_err):.2f} mm, p90 {np.percentile(pos_err, 90):.2f} mm")
    print(f"orientation error: median {np.median(ang_err):.2f} deg, p90 {np.percentile(ang_err, 90):.2f} deg")
    print(f"estimation: median {np.median(est_ms):.1f} ms/frame; rendering the frame: median {np.median(render_ms):.1f} ms")


if __name__ == "__main__":
    main()
