"""MP4 video in and out with PyAV (FFmpeg): the camera streams of LeRobot datasets.

Encoding defaults: H.264 (libx264) with full-resolution chroma (yuv444p), CRF 18, a keyframe every 2 frames (so any
frame decodes fast, as LeRobot does). LeRobot's own default, AV1 (SVT-AV1) in yuv420p at CRF 30, is smaller but
halves the chroma resolution, which small rendered frames with sharp coloured edges do not survive: on 96 x 96
Lift renders it reaches 33-34 dB PSNR, H.264 4:4:4 at CRF 18 38-42 dB (bench/dataset_io.py). Both decode with
LeRobot's decoders (torchcodec, PyAV). Decoding takes whatever codec FFmpeg reads (AV1, H.264, HEVC, ...).
Times are in seconds: a frame's time is its presentation timestamp times the stream's time base.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from robolearn.datasets.formats.common import FormatError

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its settings for every stream unless told errors only


@dataclass(frozen=True)
class VideoSettings:
    """Encoder settings (see the module docstring). `codec`: an FFmpeg encoder (libx264, libsvtav1, libx265, ...);
    `crf`: quality, lower is better and larger; `gop`: frames between keyframes; `preset`: the codec's
    speed/quality preset (None: the codec's default)."""

    codec: str = "libx264"
    pix_fmt: str = "yuv444p"
    crf: int = 18
    gop: int = 2
    preset: int | str | None = None

    def options(self) -> dict[str, str]:
        opts = {"crf": str(self.crf), "g": str(self.gop)}
        if self.preset is not None:
            opts["preset"] = str(self.preset)
        return opts

    def check(self, fps: float, name: str = "video") -> None:
        """Open (and close) an encoder with these settings on a 16 x 16 stream, so that settings FFmpeg refuses
        (an unknown codec or pixel format, one the codec cannot encode, a quality out of its range, a bad preset)
        fail before any work.

        Raises:
            FormatError: naming the settings (`name`, e.g. "lerobot.video") and FFmpeg's reason.
        """
        settings = f"{name}.codec={self.codec} {name}.pix_fmt={self.pix_fmt} {name}.crf={self.crf} " \
                   f"{name}.gop={self.gop}" + ("" if self.preset is None else f" {name}.preset={self.preset}")
        try:
            context = av.CodecContext.create(self.codec, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            raise FormatError(f"{settings}: video codec {self.codec!r} has no encoder in this FFmpeg build "
                              "(try libx264, libsvtav1 or libx265)") from None
        try:
            context.width = context.height = 16
            context.pix_fmt = self.pix_fmt
            context.time_base = 1 / Fraction(fps).limit_denominator(1001)
            context.framerate = Fraction(fps).limit_denominator(1001)
            context.options = self.options()
            context.open()
        except (ValueError, av.error.FFmpegError) as exc:
            raise FormatError(f"{settings}: FFmpeg refuses these encoder settings ({exc}); e.g. "
                              f"{name}.pix_fmt=yuv444p or yuv420p, {name}.crf in 0-51") from None


class VideoWriter:
    """Appends RGB frames to one MP4 file at a constant rate; `n_frames` counts what was written, so the time of
    the next frame is `n_frames / fps` (what a LeRobot episode's `from_timestamp` records).

    Raises:
        FormatError: the codec is not an encoder in this FFmpeg build, or frames change size.
    """

    def __init__(self, path: str | os.PathLike, fps: float, height: int, width: int, settings: VideoSettings):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        try:
            av.codec.Codec(settings.codec, "w")
        except av.codec.codec.UnknownCodecError:
            raise FormatError(f"video codec {settings.codec!r} has no encoder in this FFmpeg build "
                              "(try libsvtav1, libx264 or libx265)") from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream(settings.codec, rate=self.fps, options=settings.options())
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, settings.pix_fmt
        self._time_base = 1 / self.fps  # the frames' clock (the muxer may give the stream a finer one)
        self._stream.time_base = self._time_base
        self.shape = (height, width)
        self._reformatter = VideoReformatter()
        self.n_frames = 0
        self.bytes = 0

    def write(self, frames: np.ndarray) -> None:
        """Append frames: uint8 (T, H, W, 3) RGB, or (T, H, W, 1) grey."""
        if frames.shape[1:3] != self.shape:
            raise FormatError(f"{self.path}: frames of {frames.shape[1:3]} after frames of {self.shape}")
        fmt = "gray" if frames.shape[-1] == 1 else "rgb24"
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame[..., 0] if fmt == "gray" else frame, format=fmt)
            vf = self._reformatter.reformat(vf, format=self._stream.pix_fmt)  # one conversion context per file
            vf.pts, vf.time_base = self.n_frames, self._time_base
            self._mux(self._stream.encode(vf))
            self.n_frames += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is not None:
            self._mux(self._stream.encode())
            self._container.close()
            self._container = None


def open_video(path: Path):
    """An opened PyAV container with a video stream.

    Raises:
        FormatError: the file is missing, not a video, or damaged (names the file).
    """
    if not path.is_file():
        raise FormatError(f"video file {path} is missing")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise FormatError(f"{path} is not a readable video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise FormatError(f"{path} holds no video stream")
    return container


def probe(path: str | os.PathLike) -> dict:
    """LeRobot's `info` entry of a video feature, read from the file's first video stream."""
    with open_video(Path(path)) as container:
        stream = container.streams.video[0]
        channels = 1 if stream.pix_fmt.startswith("gray") else 3
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec.canonical_name,
                "video.pix_fmt": stream.pix_fmt, "video.is_depth_map": False, "video.fps": int(stream.base_rate),
                "video.channels": channels, "has_audio": bool(container.streams.audio)}


class VideoReader:
    """Decodes an MP4 file front to back, handing out the frames whose times fall in a window; windows are
    asked for in increasing time (episodes in file order), so each frame is decoded once.

    Args:
        path: the video file.
        size: (height, width) to resize frames to (area interpolation), or None to keep them.

    Raises (from `frames_at`):
        FormatError: the file is damaged, or the frames in the window do not match the timestamps asked for.
    """

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None):
        self.path = Path(path)
        self.size = size
        self._container = open_video(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = self._decode()
        self._pending: tuple[float, np.ndarray] | None = None
        self._last_time = -np.inf

    def _decode(self):
        # one reformatter for the whole file: its conversion context is built once, not per frame (3x faster)
        reformatter = VideoReformatter()
        kwargs = {} if self.size is None else {"height": self.size[0], "width": self.size[1], "interpolation": "AREA"}
        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is None:
                    continue
                rgb = reformatter.reformat(frame, format="rgb24", **kwargs)
                yield float(frame.pts * self._stream.time_base), rgb.to_ndarray()
        except av.error.FFmpegError as exc:
            raise FormatError(f"{self.path} is damaged or truncated ({exc})") from None

    def frames_at(self, times: np.ndarray, start: float, stop: float, tolerance_s: float) -> np.ndarray:
        """The frames at `times` (s, increasing), from those in [start - tol, stop - tol): uint8 (T, H, W, 3).

        Raises:
            FormatError: the window holds another number of frames than `times`, or a frame is further than
                `tolerance_s` from its time.
        """
        if start < self._last_time - tolerance_s:
            raise FormatError(f"{self.path}: episodes are not in time order in this file (window at {start:.4f} s "
                              f"after one ending at {self._last_time:.4f} s)")
        self._last_time = stop
        window: list[tuple[float, np.ndarray]] = []
        while True:
            item = self._pending if self._pending is not None else next(self._frames, None)
            self._pending = None
            if item is None:
                break
            t, frame = item
            if t < start - tolerance_s:
                continue
            if t >= stop - tolerance_s:
                self._pending = item
                break
            window.append(item)
        if len(window) != len(times):
            raise FormatError(f"{self.path}: {len(window)} video frames between {start:.4f} s and {stop:.4f} s, "
                              f"but the table has {len(times)} rows for that episode")
        found = np.array([t for t, _ in window])
        error = np.abs(found - np.asarray(times, dtype=np.float64))
        if len(error) and error.max() > tolerance_s:
            i = int(error.argmax())
            raise FormatError(f"{self.path}: the frame for t={times[i]:.4f} s is at {found[i]:.4f} s, more than "
                              f"tolerance_s={tolerance_s} away")
        return np.stack([f for _, f in window]) if window else np.zeros((0, 0, 0, 3), np.uint8)

    def close(self) -> None:
        self._frames.close()
        self._container.close()
