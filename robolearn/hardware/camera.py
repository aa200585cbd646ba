"""Cameras through OpenCV: a device index (/dev/videoN) or a path/URL, frames timestamped on arrival."""

from __future__ import annotations

import time

import numpy as np

from robolearn.hardware.robot import RobotError


class OpenCVCamera:
    """An OpenCV video source (needs `opencv-python` or `opencv-python-headless`).

    Args:
        source: device index (0 = /dev/video0) or a path/URL OpenCV can open.
        width, height: requested frame size, px (None: the device default).
        fps: requested frame rate, Hz (None: the device default).

    `read()` returns (timestamp s on the monotonic clock, frame (H, W, 3) uint8 RGB).

    Raises:
        RobotError: OpenCV is missing, the source cannot be opened, or it stops delivering frames.
    """

    def __init__(self, source: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None):
        self.source, self.width, self.height, self.fps = source, width, height, fps
        self.capture = None

    def connect(self) -> OpenCVCamera:
        try:
            import cv2
        except ImportError as exc:
            raise RobotError("cameras need OpenCV: pip install opencv-python-headless") from exc
        self.cv2 = cv2
        self.capture = cv2.VideoCapture(self.source)
        if not self.capture.isOpened():
            raise RobotError(f"camera {self.source!r} cannot be opened")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):
            if value:
                self.capture.set(prop, value)
        return self

    def disconnect(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None

    def __enter__(self) -> OpenCVCamera:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def read(self) -> tuple[float, np.ndarray]:
        if self.capture is None:
            raise RobotError(f"camera {self.source!r} is not connected")
        ok, frame = self.capture.read()
        stamp = time.monotonic()
        if not ok or frame is None:
            raise RobotError(f"camera {self.source!r} delivered no frame")
        return stamp, self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)
