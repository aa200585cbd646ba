"""`camera_node`: a real arm's OpenCV cameras on ROS 2 topics.

Parameters:
    cameras: "name=source,..." e.g. "front=0,wrist=/dev/video2" (a device index, path or URL OpenCV opens);
        empty: no cameras (the node idles, so a graph without cameras runs unchanged)
    width, height, fps: requested capture size (px) and rate (Hz); 0 keeps the device's
    image_height, image_width: size of the published frames, px (0: as captured); the policy's cameras were
        trained at one size (96 x 96 for lift_image), so resize here, once, not in every subscriber
    image_transport: raw (sensor_msgs/Image rgb8) | compressed (sensor_msgs/CompressedImage JPEG)
    camera_topic_prefix: frames of camera <name> go to <prefix>/<name>/image_raw[/compressed]
    control_hz: how often every camera is read and published, Hz

Each frame's header stamp is its capture time (ROS time), so the policy node can align frames with the joint
states (`robolearn.ros.node.ObservationInbox`); frame_id is "<name>_camera". A camera that stops delivering
frames is reported (rate-limited) and retried every period; the other cameras go on.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from robolearn.hardware.camera import OpenCVCamera
from robolearn.hardware.robot import RobotError
from robolearn.ros.images import (
    camera_names,
    camera_topic,
    frame_message,
    message_type,
)
from robolearn.ros.node import (
    TOPIC_DEFAULTS,
    RateLimitedLog,
    TimingStats,
    check_timing,
    run,
    stamp,
)
from robolearn.ros.transport import SENSOR_QOS, Transport

PARAMETERS = {"cameras": "", "width": 0, "height": 0, "fps": 0.0, "image_height": 96, "image_width": 96,
              "jpeg_quality": 90, "control_hz": 30.0, "camera_topic_prefix": TOPIC_DEFAULTS["camera_topic_prefix"],
              "image_transport": TOPIC_DEFAULTS["image_transport"]}


def parse_cameras(spec: str) -> dict[str, int | str]:
    """"front=0,wrist=/dev/video2" -> {"front": 0, "wrist": "/dev/video2"} (digits become device indices).

    Raises:
        ValueError: an entry without "=" or a bad camera name.
    """
    out = {}
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        if "=" not in entry:
            raise ValueError(f"cameras entry {entry!r} must be name=source (e.g. front=0)")
        name, source = (part.strip() for part in entry.split("=", 1))
        camera_names([name])
        out[name] = int(source) if source.isdigit() else source
    return out


def resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frame` at (height, width) px (OpenCV's area interpolation); unchanged when either is 0."""
    if not height or not width or frame.shape[:2] == (height, width):
        return frame
    import cv2

    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


class CameraNode:
    """The camera node (see the module docstring).

    Args:
        cameras: {name: an unconnected camera with connect(), read() -> (monotonic s, RGB frame), disconnect()};
            default: `OpenCVCamera`s from the `cameras` parameter.
    """

    def __init__(self, transport: Transport, params: dict, cameras: dict | None = None):
        check_timing(params)
        self.p = params
        self.rate_hz = float(params["control_hz"])
        self.log = RateLimitedLog("camera_node")
        if cameras is None:
            size = {"width": params["width"] or None, "height": params["height"] or None, "fps": params["fps"] or None}
            cameras = {name: OpenCVCamera(source, **size) for name, source in parse_cameras(params["cameras"]).items()}
        self.cameras = {name: camera.connect() for name, camera in cameras.items()}
        kind = params["image_transport"]
        self.publishers = {name: transport.create_publisher(camera_topic(name, params["camera_topic_prefix"], kind),
                                                            message_type(kind), SENSOR_QOS) for name in self.cameras}
        self.stats = TimingStats(1.0 / self.rate_hz)
        if not self.cameras:
            print("[camera_node] no cameras configured (parameter cameras: name=source,...): idle", flush=True)

    def step(self, now: float) -> bool:
        for name, camera in self.cameras.items():
            try:
                taken, frame = camera.read()
            except RobotError as exc:
                self.stats.count(f"{name}_read_errors")
                self.log(f"read:{name}", f"camera {name}: {exc}")
                continue
            frame = resize(frame, int(self.p["image_height"]), int(self.p["image_width"]))
            header = stamp(time.time() - (time.monotonic() - taken), frame_id=f"{name}_camera")
            self.publishers[name].publish(frame_message(frame, header, self.p["image_transport"],
                                                        int(self.p["jpeg_quality"])))
        if self.cameras:
            self.stats.publish(now, time.monotonic())
        return True

    def report(self) -> str:
        return self.stats.report("camera_node")

    def close(self) -> None:
        for camera in self.cameras.values():
            camera.disconnect()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(lambda transport: CameraNode(transport, transport.parameters(PARAMETERS)), "camera_node", argv)
