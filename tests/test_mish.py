"""The one-exponential Mish (robolearn/policies/mish.py) against PyTorch's."""

import pytest
import torch

from robolearn.policies import mish as mish_module
from robolearn.policies.mish import FAST_MISH_MIN_NUMEL, Mish, mish


def _inputs() -> torch.Tensor:
    """Every regime: underflow of e^x, the bulk, the clamp at 20 and beyond float32's exp range."""
    x = torch.cat([torch.linspace(-120.0, 120.0, 40_001), torch.randn(1 << 16) * 3,
                   torch.tensor([0.0, -0.0, 19.999, 20.0, 20.001, 44.5, 89.0, -87.0, -104.0])])
    return x


@pytest.mark.parametrize("layout", ["flat", "channels_last"])
def test_fast_mish_equals_torch_mish_and_its_gradient(layout):
    x = _inputs()
    if layout == "channels_last":  # the U-Net's (B, C, 1, T) activations on CPU
        x = x[: 16 * 64 * 8 * 10].reshape(160, 64, 1, 8).contiguous(memory_format=torch.channels_last)
    assert x.numel() >= FAST_MISH_MIN_NUMEL
    x_ref = x.detach().clone().requires_grad_(True)
    x_fast = x.detach().clone().requires_grad_(True)
    y_ref, y_fast = torch.nn.functional.mish(x_ref), mish(x_fast)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_fast.backward(grad)
    assert not mish_module._Kernels.failed, "the compiled kernels did not run (fell back to torch's mish)"
    assert y_fast.shape == y_ref.shape and y_fast.stride() == y_ref.stride()
    torch.testing.assert_close(y_fast, y_ref, rtol=2e-6, atol=1e-30)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=2e-5, atol=1e-6)


def test_small_tensors_and_other_dtypes_use_torch_mish_exactly():
    x = torch.randn(8, 32)  # below FAST_MISH_MIN_NUMEL
    assert torch.equal(mish(x), torch.nn.functional.mish(x))
    xd = torch.randn(FAST_MISH_MIN_NUMEL, dtype=torch.float64)
    assert torch.equal(mish(xd), torch.nn.functional.mish(xd))


def test_mish_module_has_no_state_and_computes_mish():
    module = Mish()
    assert isinstance(module, torch.nn.Mish) and module.state_dict() == {}
    x = torch.randn(4, FAST_MISH_MIN_NUMEL // 4)
    torch.testing.assert_close(module(x), torch.nn.functional.mish(x), rtol=2e-6, atol=1e-30)


def test_a_failed_compile_falls_back_with_a_warning(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(mish_module._Kernels, "forward", broken)
    monkeypatch.setattr(mish_module._Kernels, "backward", broken)
    monkeypatch.setattr(mish_module._Kernels, "failed", False)
    x = torch.randn(FAST_MISH_MIN_NUMEL, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="compiled Mish unavailable"):
        y = mish(x)
    assert mish_module._Kernels.failed
    torch.testing.assert_close(y, torch.nn.functional.mish(x.detach()))
    y.sum().backward()  # the backward falls back too (the kernels are marked failed)
    torch.testing.assert_close(x.grad, torch.ops.aten.mish_backward(torch.ones_like(x), x.detach()))
