"""Mish (Misra 2019, arXiv 1908.08681, eq. 1), mish(x) = x tanh(softplus(x)), with one exponential per element.

With n = e^x (e^x + 2), tanh(softplus(x)) = tanh(log(1 + e^x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1)
= n / (n + 2), so

    mish(x) = x n / (n + 2),    mish'(x) = t + x (1 - t^2) sigmoid(x),  t = n / (n + 2),  sigmoid(x) = e^x / (1 + e^x).

PyTorch's CPU kernels evaluate exp, log1p and tanh separately (log1p and tanh are slow in its vectorized math):
on our 2 cores its `mish` takes 7.9 ms forward and 9.0 ms backward on a (8000, 64, 1, 8) tensor, the
one-exponential form compiled by `torch.compile` into one loop 1.2 and 1.7 ms. Mish was 26% of a DPPO update's
time (bench/dppo_speed.py). x is clamped at 20 before the exponential (n stays finite; for x > 20,
n / (n + 2) rounds to 1 in float32, as tanh(softplus(x)) does); results equal `torch.nn.functional.mish` to
float32 rounding (relative 4e-7, tests/test_mish.py).

`mish` uses the compiled kernels for large float32 CPU tensors (>= `FAST_MISH_MIN_NUMEL` elements) and
PyTorch's `mish` elsewhere (CUDA, where it is one memory-bound pass; small tensors, where a compiled call's
overhead would dominate). Inside a region being compiled it returns the formula, for the compiler to fuse.
If the kernels cannot be compiled here (no C++ compiler for torch.compile's CPU backend), it warns once and
falls back to PyTorch's `mish`.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

#: smaller CPU tensors use PyTorch's `mish`: a compiled call costs ~25 us however small the tensor; torch's
#: kernel takes 5 us for 1k elements, 17 us for 4k, 64 us for 16k (the compiled one 29 us) on our 2 cores
FAST_MISH_MIN_NUMEL = 1 << 13
#: exp is evaluated on min(x, this): e^(2 x) stays finite in float32
_CLAMP = 20.0


def _mish(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x.clamp(max=_CLAMP))
    n = e * (e + 2)
    return x * n / (n + 2)


def _mish_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x.clamp(max=_CLAMP))
    n = e * (e + 2)
    t = n / (n + 2)
    return grad * (t + x * (1 - t * t) * (e / (1 + e)))


class _Kernels:
    """The compiled forward and backward, made on first use; `None` after a failed compile."""

    forward = backward = None
    failed = False

    @classmethod
    def get(cls):
        if cls.forward is None and not cls.failed:
            cls.forward = torch.compile(_mish, dynamic=True)
            cls.backward = torch.compile(_mish_backward, dynamic=True)
        return None if cls.failed else cls

    @classmethod
    def run(cls, kernel: str, *args: torch.Tensor) -> torch.Tensor | None:
        if cls.failed:
            return None
        try:
            return getattr(cls, kernel)(*args)
        except Exception as exc:  # torch.compile's CPU backend needs a working C++ compiler
            cls.failed = True
            warnings.warn(f"robolearn: compiled Mish unavailable ({type(exc).__name__}: {exc}); "
                          "using torch.nn.functional.mish (slower on CPU)", RuntimeWarning, stacklevel=3)
            return None


class _FastMish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _Kernels.run("forward", x)
        if y is None:
            y = nn.functional.mish(x)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        dx = _Kernels.run("backward", grad, x)
        return torch.ops.aten.mish_backward(grad, x) if dx is None else dx


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish x tanh(softplus(x)) of a tensor of any shape, element-wise, differentiable (see the module docstring
    for which kernel runs)."""
    if torch.compiler.is_compiling():
        return _mish(x) if x.device.type == "cpu" else nn.functional.mish(x)
    if (x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= FAST_MISH_MIN_NUMEL
            and _Kernels.get() is not None):
        return _FastMish.apply(x)
    return nn.functional.mish(x)


class Mish(nn.Mish):
    """`torch.nn.Mish` computed by `mish` (same module, no parameters: state dicts are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)
