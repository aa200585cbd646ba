"""`marker_node`: the cube's pose from a camera that sees its ArUco markers (`robolearn.hardware.markers`).

Subscribes to <camera_topic_prefix>/<camera>/image_raw (or .../compressed), estimates the object's pose in the
newest frame each period and publishes it on `cube_pose_topic` (geometry_msgs/PoseStamped, frame "world")
stamped with the frame's capture time, so a state policy on a real arm gets the cube pose a simulator would give
it. A frame with no marker of the map in view publishes nothing (counted as a miss; the policy node's
observation timeout then holds the arm if no pose arrives for long).

Parameters:
    camera: the camera's name ("marker": the simulated scene's marker camera)
    calibration: a YAML with camera_matrix (3x3, px), dist_coeffs, position (m) and rotation (3x3: the OpenCV
        camera axes in the world frame), or "sim" for the simulated camera at image_height x image_width px
    image_height, image_width: the frame size the "sim" calibration is for, px
    marker_length: side of the markers' black squares, m; object_half_size: half the cube's edge, m (the markers
        lie on its faces, `CUBE_FACES`); dictionary: the ArUco dictionary
    control_hz: how often the newest frame is processed, Hz
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from robolearn.hardware.markers import (
    DICTIONARY,
    CameraCalibration,
    MarkerPoseEstimator,
    cube_marker_map,
)
from robolearn.ros.images import camera_topic, frame_from_message, message_type
from robolearn.ros.msgs import PoseStamped
from robolearn.ros.node import (
    TOPIC_DEFAULTS,
    RateLimitedLog,
    TimingStats,
    check_timing,
    pose_message,
    run,
)
from robolearn.ros.transport import DEFAULT_QOS, SENSOR_QOS, Transport

PARAMETERS = {"camera": "marker", "calibration": "sim", "image_height": 480, "image_width": 640,
              "marker_length": 0.024, "object_half_size": 0.015, "dictionary": DICTIONARY, "control_hz": 20.0,
              "cube_pose_topic": TOPIC_DEFAULTS["cube_pose_topic"],
              "camera_topic_prefix": TOPIC_DEFAULTS["camera_topic_prefix"],
              "image_transport": TOPIC_DEFAULTS["image_transport"]}


def load_calibration(spec: str, camera: str, height: int, width: int) -> CameraCalibration:
    """"sim" -> the simulated camera's calibration; else the calibration YAML at path `spec`.

    Raises:
        FileNotFoundError: no such file. ValueError: a malformed calibration.
    """
    if spec == "sim":
        from robolearn.sim.markers import sim_camera_calibration

        return sim_camera_calibration(camera, height, width)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"camera calibration not found: {path}")
    return CameraCalibration.from_dict(yaml.safe_load(path.read_text()))


class MarkerNode:
    """The marker node (see the module docstring)."""

    def __init__(self, transport: Transport, params: dict):
        check_timing(params)
        self.p = params
        self.rate_hz = float(params["control_hz"])
        self.log = RateLimitedLog("marker_node")
        calibration = load_calibration(params["calibration"], params["camera"], int(params["image_height"]),
                                       int(params["image_width"]))
        self.estimator = MarkerPoseEstimator(calibration, cube_marker_map(float(params["object_half_size"])),
                                             float(params["marker_length"]), params["dictionary"])
        kind = params["image_transport"]
        transport.create_subscription(camera_topic(params["camera"], params["camera_topic_prefix"], kind),
                                      message_type(kind), self._on_frame, SENSOR_QOS)
        self.pub = transport.create_publisher(params["cube_pose_topic"], PoseStamped, DEFAULT_QOS)
        self.frame = None
        self.stats = TimingStats(1.0 / self.rate_hz)
        self.estimate_ms: list[float] = []

    def _on_frame(self, msg) -> None:
        self.frame = msg

    def step(self, now: float) -> bool:
        msg, self.frame = self.frame, None
        if msg is None:
            return True
        try:
            image = frame_from_message(msg)
        except ValueError as exc:
            self.stats.count("bad_frames")
            self.log("frame", f"dropped a frame: {exc}")
            return True
        t0 = time.perf_counter()
        pose = self.estimator.estimate(image)
        self.estimate_ms.append(1e3 * (time.perf_counter() - t0))
        if pose is None:
            self.stats.count("frames_without_markers")
            return True
        self.pub.publish(pose_message(pose.position, pose.quat, wall_time=msg.header.stamp.to_seconds()))
        self.stats.count("poses_published")
        self.stats.publish(now, time.monotonic())
        return True

    def report(self) -> str:
        ms = sorted(self.estimate_ms)
        timing = f"; estimation median {ms[len(ms) // 2]:.1f} ms" if ms else ""
        return self.stats.report("marker_node") + timing

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(lambda transport: MarkerNode(transport, transport.parameters(PARAMETERS)), "marker_node", argv)
