"""Camera frames <-> sensor_msgs/Image and sensor_msgs/CompressedImage, and the topics cameras use.

Topics follow image_transport's layout: camera `<name>` publishes raw frames on
`<camera_topic_prefix>/<name>/image_raw` (sensor_msgs/Image, "rgb8") and, with `image_transport: compressed`,
JPEG frames on `.../image_raw/compressed` (sensor_msgs/CompressedImage, format "rgb8; jpeg compressed bgr8" as
image_transport's compressed plugin writes it). The observation key of camera `<name>` is `<name>_image`.
"""

from __future__ import annotations

import numpy as np

from robolearn.ros.msgs import CompressedImage, Header, Image

IMAGE_SUFFIX = "_image"
IMAGE_TRANSPORTS = ("raw", "compressed")


def is_image_key(key: str) -> bool:
    """Whether observation `key` is a camera's (`<camera>_image`)."""
    return key.endswith(IMAGE_SUFFIX) and len(key) > len(IMAGE_SUFFIX)


def camera_topic(camera: str, prefix: str = "/camera", transport: str = "raw") -> str:
    """The topic of camera `camera` (a name like "front", or its observation key "front_image").

    Raises:
        ValueError: an unknown transport.
    """
    if transport not in IMAGE_TRANSPORTS:
        raise ValueError(f"image_transport must be one of {list(IMAGE_TRANSPORTS)}, got {transport!r}")
    name = camera[:-len(IMAGE_SUFFIX)] if is_image_key(camera) else camera
    topic = f"{prefix.rstrip('/')}/{name}/image_raw"
    return topic + "/compressed" if transport == "compressed" else topic


def camera_names(spec: str | list) -> list[str]:
    """A node's `cameras` parameter ("front,wrist" or a list) -> ["front", "wrist"] (empty: no cameras).

    Raises:
        ValueError: a name that cannot be part of a topic.
    """
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if str(n).strip()]
    bad = [n for n in names if not n.replace("_", "").isalnum()]
    if bad:
        raise ValueError(f"cameras must be names of letters, digits and _, got {bad}")
    return names


def message_type(transport: str) -> type:
    """Image for "raw", CompressedImage for "compressed"."""
    return CompressedImage if transport == "compressed" else Image


def image_message(frame: np.ndarray, header: Header) -> Image:
    """An RGB frame (H, W, 3) uint8 -> sensor_msgs/Image "rgb8".

    Raises:
        ValueError: not a uint8 (H, W, 3) array.
    """
    frame = check_frame(frame)
    height, width = frame.shape[:2]
    return Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
                 data=frame.tobytes())


def compressed_image_message(frame: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    """An RGB frame (H, W, 3) uint8 -> sensor_msgs/CompressedImage (JPEG at `quality`, via OpenCV).

    Raises:
        ValueError: not a uint8 (H, W, 3) array.
    """
    import cv2

    frame = check_frame(frame)
    ok, encoded = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return CompressedImage(header=header, format="rgb8; jpeg compressed bgr8", data=encoded.tobytes())


def frame_message(frame: np.ndarray, header: Header, transport: str = "raw", quality: int = 90):
    """A frame as the message of `transport`: Image ("raw") or CompressedImage JPEG at `quality` ("compressed")."""
    if transport == "compressed":
        return compressed_image_message(frame, header, quality)
    return image_message(frame, header)


def frame_from_message(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage (JPEG, PNG) -> RGB (H, W, 3) uint8.

    Raises:
        ValueError: an unsupported encoding, a size that does not match the data, or undecodable bytes.
    """
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if isinstance(msg, CompressedImage) or hasattr(msg, "format"):
        import cv2

        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f"compressed image ({msg.format!r}, {len(data)} bytes) cannot be decoded")
        return decoded[..., ::-1].copy()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise ValueError(f"image encoding {msg.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8, mono8)")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1 or step < width * channels or len(data) < step * height:
        raise ValueError(f"image of {height} x {width} {msg.encoding} with step {step} has {len(data)} bytes")
    pixels = data[:step * height].reshape(height, step)[:, :width * channels].reshape(height, width, channels)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[..., :3] if msg.encoding.startswith("rgb") else pixels[..., 2::-1]
    return np.ascontiguousarray(rgb)


def check_frame(frame) -> np.ndarray:
    """`frame` as a C-contiguous uint8 (H, W, 3) array.

    Raises:
        ValueError: another dtype or shape.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a camera frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)
