"""Image encoders for `rgb` observation features: uint8 camera images (N, H, W, 3) -> features (N, out_dim).

Every encoder here does the same three things before its network (Chi et al. 2023, Sec. III-B and the
reference `MultiImageObsEncoder`):

1. crop: a random `crop_ratio` crop per image while training (augmentation; the reference uses 84 of 96
   px), the centre crop in eval mode, so train and test see the same image size;
2. a fixed map of pixel values [0, 255] -> [-1, 1] (no per-pixel statistics, so nothing to fit and nothing
   that a new camera or lighting can invalidate);
3. the network, ending in a spatial softmax (Levine et al. 2016, "End-to-End Training of Deep Visuomotor
   Policies", Sec. 4.2): each of K keypoint channels becomes the expected (x, y) image position of its
   softmax over pixels, then a linear layer maps the 2K coordinates to `feature_dim`.

Two networks (the `type` of the `image_encoder` config):
- "resnet18": torchvision's ResNet-18 trunk trained from scratch (no pretrained weights: nothing is
  downloaded) with every BatchNorm replaced by GroupNorm (batch statistics break EMA averaging and small
  batches; the reference's choice), stride 32, spatial softmax with 32 keypoints. 11.2M parameters.
- "small_cnn": three convolutions (16-32-32 channels, strides 2-2-1, GroupNorm, ReLU) then the spatial
  softmax: the default, sized for 2 CPU cores (`bench/image_encoders.py` measures both).

With `shared: true` one network serves every camera of a policy (cameras must then have one shape);
otherwise each camera gets its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: the `image_encoder` config a policy gets when its yaml gives none
DEFAULT_IMAGE_ENCODER = {"type": "small_cnn", "feature_dim": 64, "crop_ratio": 0.875, "shared": False,
                         "num_keypoints": 16}
ENCODER_TYPES = ("small_cnn", "resnet18")


def image_encoder_config(spec: Mapping | None) -> dict:
    """The full `image_encoder` config: `spec` over `DEFAULT_IMAGE_ENCODER`.

    Raises:
        ValueError: an unknown key or type, or a value out of range (the message names it).
    """
    spec = dict(spec or {})
    unknown = set(spec) - set(DEFAULT_IMAGE_ENCODER)
    if unknown:
        raise ValueError(f"unknown image_encoder keys {sorted(unknown)}; it takes {sorted(DEFAULT_IMAGE_ENCODER)}")
    cfg = {**DEFAULT_IMAGE_ENCODER, **spec}
    if cfg["type"] not in ENCODER_TYPES:
        raise ValueError(f"image_encoder.type must be one of {list(ENCODER_TYPES)}, got {cfg['type']!r}")
    if not 0.5 <= float(cfg["crop_ratio"]) <= 1.0:
        raise ValueError(f"image_encoder.crop_ratio must be in [0.5, 1], got {cfg['crop_ratio']}")
    for key in ("feature_dim", "num_keypoints"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"image_encoder.{key} must be a positive integer, got {cfg[key]!r}")
    cfg["crop_ratio"], cfg["shared"] = float(cfg["crop_ratio"]), bool(cfg["shared"])
    return cfg


def crop_size(shape: tuple[int, int], crop_ratio: float) -> tuple[int, int]:
    """(height, width) px of the crop of an image of `shape` (H, W): `crop_ratio` of each side, rounded."""
    return tuple(max(1, int(round(s * crop_ratio))) for s in shape)


def crop_images(images: torch.Tensor, size: tuple[int, int], random: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop (N, H, W, C) images to (N, h, w, C): at a uniformly random offset per image (`random`), else centred.

    Works on any dtype (crop before converting uint8 to float: 4x less memory traffic).
    """
    n, height, width = images.shape[:3]
    h, w = size
    if (h, w) == (height, width):
        return images
    if not random:
        top, left = (height - h) // 2, (width - w) // 2
        return images[:, top:top + h, left:left + w]
    top = torch.randint(0, height - h + 1, (n,), generator=generator).to(images.device)
    left = torch.randint(0, width - w + 1, (n,), generator=generator).to(images.device)
    # every h x w window as a view (N, H - h + 1, W - w + 1, C, h, w); picking one per image copies only the crops
    windows = images.unfold(1, h, 1).unfold(2, w, 1)
    return windows[torch.arange(n, device=images.device), top, left].permute(0, 2, 3, 1)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) in [0, 255] -> float32 (N, C, H, W) in [-1, 1]: the fixed image normalizer."""
    return images.permute(0, 3, 1, 2).to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


class SpatialSoftmax(nn.Module):
    """Feature maps (N, C, H, W) -> keypoints (N, 2K): a 1x1 convolution to K maps, a softmax over each map's
    pixels, and each map's expected (x, y) position in [-1, 1] (Levine et al. 2016, Sec. 4.2, eq. 2)."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        self.out_dim = 2 * num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.keypoints(x)
        n, k, h, w = x.shape
        attention = torch.softmax(x.flatten(2), dim=-1).reshape(n, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        expected_x = (attention.sum(2) * xs).sum(-1)
        expected_y = (attention.sum(3) * ys).sum(-1)
        return torch.cat([expected_x, expected_y], dim=-1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 channels per group (at least one group): the reference's BatchNorm replacement."""
    return nn.GroupNorm(max(1, channels // 16), channels)


def small_cnn_trunk() -> tuple[nn.Module, int]:
    """The small CNN's convolutions; returns (trunk, output channels)."""
    layers, channels = [], 3
    for out, kernel, stride in ((16, 5, 2), (32, 3, 2), (32, 3, 1)):
        layers += [nn.Conv2d(channels, out, kernel, stride), group_norm(out), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers), channels


def resnet18_trunk() -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 from scratch with GroupNorm, without its pooling and classifier.

    Raises:
        ImportError: torchvision is missing or does not load beside this torch build (the message says what to
            install).
    """
    try:
        from torchvision.models import resnet18
    except Exception as exc:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError
        raise ImportError(f"image_encoder.type=resnet18 needs torchvision built for torch {torch.__version__} "
                          f"(pip install torchvision matching it; {type(exc).__name__}: {exc})") from None

    net = resnet18(weights=None, norm_layer=group_norm)
    return nn.Sequential(*list(net.children())[:-2]), 512


class ImageEncoder(nn.Module):
    """uint8 images (N, H, W, 3) -> features (N, feature_dim): crop, fixed [-1, 1] map, CNN trunk, spatial
    softmax, linear. Random crops in training mode, the centre crop in eval mode.

    Args:
        image_shape: (H, W, 3) of the camera, px.
        config: an `image_encoder_config`.
    Raises:
        ValueError: at construction, a camera too small for the network's kernels and strides (naming the
            smallest crop it takes); in `forward`, images of another shape or dtype (naming both shapes).
    """

    def __init__(self, image_shape: tuple[int, int, int], config: Mapping):
        super().__init__()
        config = image_encoder_config(config)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.crop = crop_size(self.image_shape[:2], config["crop_ratio"])
        make_trunk = small_cnn_trunk if config["type"] == "small_cnn" else resnet18_trunk
        trunk, channels = make_trunk()
        self.trunk = trunk
        self.pool = SpatialSoftmax(channels, config["num_keypoints"])
        self.head = nn.Linear(self.pool.out_dim, config["feature_dim"])
        self.out_dim = config["feature_dim"]
        if not _fits(make_trunk, self.crop):  # fail at construction, not at the first batch
            side = next((n for n in range(1, 1025) if _fits(make_trunk, (n, n))), None)
            raise ValueError(f"camera images of {self.image_shape[0]} x {self.image_shape[1]} px (a {self.crop[0]} x "
                             f"{self.crop[1]} crop) are too small for the {config['type']} image encoder, which needs "
                             f"a crop of at least {side} x {side} px; record or import larger frames (image_size= "
                             "at import resizes them)")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, {', '.join(map(str, self.image_shape))}), got "
                             f"{images.dtype} {tuple(images.shape)}")
        x = normalize_images(crop_images(images, self.crop, random=self.training))
        return self.head(self.pool(self.trunk(x)))


def _fits(make_trunk, size: tuple[int, int]) -> bool:
    """Whether the trunk `make_trunk()` builds takes a (1, 3, *size) image (built and run on the meta device:
    shapes only, no memory, no compute)."""
    try:
        with torch.device("meta"), torch.no_grad():
            make_trunk()[0](torch.zeros(1, 3, *size))
        return True
    except RuntimeError:
        return False


def build_image_encoders(features: Mapping, config: Mapping | None) -> dict[str, nn.Module]:
    """{rgb key: `ImageEncoder`} for the rgb features of `features` ({key: ObsFeature}); with `shared`, one
    encoder object serves every camera.

    Raises:
        ValueError: `shared` with cameras of different shapes, or an invalid config.
    """
    config = image_encoder_config(config)
    cameras = {k: f.shape for k, f in features.items() if f.type == "rgb"}
    if not cameras:
        return {}
    if config["shared"]:
        shapes = set(cameras.values())
        if len(shapes) > 1:
            raise ValueError(f"image_encoder.shared needs cameras of one shape, got {cameras}")
        encoder = ImageEncoder(next(iter(shapes)), config)
        return dict.fromkeys(cameras, encoder)
    return {key: ImageEncoder(shape, config) for key, shape in cameras.items()}


