"""Choosing the torch device."""

from __future__ import annotations

import torch

from robolearn.errors import UserError


def pick_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; otherwise the named device.

    Raises:
        UserError: a CUDA device was asked for but CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available; use device=auto or device=cpu")
    return device
