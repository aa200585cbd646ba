"""The inference fast path of the temporal U-Net (`ConditionalUnet1D`) for a fixed denoising schedule.

A sampling loop calls the denoiser `num_inference_steps` times with the same observation and the same
weights, so everything that does not depend on the noisy sample x_t is done once:

- FiLM conditioning (Perez et al. 2018). Each residual block's scale and bias is Linear(Mish([e_t, c])), with
  e_t the diffusion-step embedding and c the observation features. Mish acts element-wise, so this splits
  into W_e Mish(e_t) + b, computed for every step of the schedule when the fast path is built, plus
  W_c Mish(c), computed for all blocks in one matrix product per decision (`obs_film`), shared by every
  denoising step and every candidate chunk.
- Weights. On CPU, temporal convolutions with large weights run as one matrix product of the unfolded input
  (B*T, C*k) with the weight seen as (O, C*k), against weights pre-packed once into oneDNN's blocked layout:
  at batch 1 the U-Net streams all its weights per step, and the packed product reads them near the memory
  bandwidth (~25 GB/s against ~10 GB/s for MKL's plain product of these shapes on our CPU; the reference-sized
  U-Net samples a chunk in 0.34x of the eager loop's time, bench/policy_speed.py).

The result equals `ConditionalUnet1D.forward` to float tolerance (tests/test_fast_inference.py). `FastUnetCache`
refreshes the view (or, with packed weights, rebuilds it) whenever a parameter changes in place (optimizer steps,
EMA updates, `load_state_dict`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.policies.mish import mish
from robolearn.policies.unet1d import ConditionalUnet1D, Conv1dBlock, FiLMResidualBlock

#: oneDNN weight packing (the kernels torch.compile's CPU backend uses for frozen linear layers)
_CAN_PACK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
#: convolutions with at least this many weights run as packed matrix products on CPU; smaller ones are
#: faster as plain `conv1d` (the call overhead dominates)
PACK_MIN_WEIGHTS = 1 << 17


class _Conv:
    """A stride-1, same-padding Conv1d (B, C, T) -> (B, O, T) on CPU as one matrix product of the unfolded input,
    against a pre-packed weight where the weight is large (`PACK_MIN_WEIGHTS`); elsewhere the module itself."""

    def __init__(self, conv: nn.Conv1d, rows_hint: int, pack: bool):
        self.conv = conv
        w = conv.weight.detach()
        self.as_matmul = (w.device.type == "cpu" and conv.stride == (1,) and conv.dilation == (1,)
                          and conv.groups == 1 and conv.padding == (w.shape[2] // 2,))
        if self.as_matmul:
            out_ch, in_ch, k = w.shape
            self.weight = w.reshape(out_ch, in_ch * k)  # a view: reads the module's current weights
            self.bias = None if conv.bias is None else conv.bias.detach()
            self.k, self.out_ch = k, out_ch
            self.packed = pack and _CAN_PACK and w.dtype == torch.float32 and w.numel() >= PACK_MIN_WEIGHTS
            if self.packed:  # a copy in oneDNN's blocked layout (`FastUnetCache` rebuilds it after changes)
                self.weight = torch.ops.mkldnn._reorder_linear_weight(self.weight, rows_hint)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.as_matmul:
            return self.conv(x)
        batch, channels, length = x.shape
        if self.k == 1:
            cols = x.transpose(1, 2).reshape(batch * length, channels)
        else:
            pad = self.k // 2
            cols = F.pad(x, (pad, pad)).unfold(2, self.k, 1)  # (B, C, T, k)
            cols = cols.transpose(1, 2).reshape(batch * length, channels * self.k)
        if self.packed:
            y = torch.ops.mkldnn._linear_pointwise(cols, self.weight, self.bias, "none", [], "")
        else:
            y = F.linear(cols, self.weight, self.bias)
        return y.view(batch, length, self.out_ch).transpose(1, 2)


class _ConvBlock:
    """`Conv1dBlock`: conv -> GroupNorm -> Mish, (B, C, T) -> (B, O, T)."""

    def __init__(self, block: Conv1dBlock, rows_hint: int, pack: bool):
        self.conv = _Conv(block[0], rows_hint, pack)
        self.norm = block[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        return mish(F.group_norm(self.conv(x), n.num_groups, n.weight, n.bias, n.eps))


class FastUnet1D:
    """Inference-only view of a `ConditionalUnet1D` for the timesteps of one sampler.

    Args:
        unet: the network (its weights are read, never changed; build a new view after they change).
        timesteps: (S,) the sampler's diffusion steps, noisiest first.
        rows_hint: expected B * horizon of the calls (oneDNN picks its weight layout for it; any batch works).

        pack: pre-pack large CPU weights for oneDNN (off for torch.compile, which packs by itself).

    Use: obs = view.obs_film(cond) once per decision, then view(x, view.film(obs, i)) for denoising step i.
    Shapes: cond (B, cond_dim); obs and film (B, F), F = 2 * the channels of every residual block;
    x (B, T, Da) -> eps (B, T, Da).
    """

    @torch.no_grad()
    def __init__(self, unet: ConditionalUnet1D, timesteps: torch.Tensor, rows_hint: int = 16, pack: bool = True):
        self.unet, self.timesteps = unet, timesteps
        blocks = [b for level in unet.down for b in level[:2]] + list(unet.mid) + [b for level in unet.up
                                                                                 for b in level[:2]]
        self._film_linears = [b.film[1] for b in blocks]
        offsets, start = [], 0
        for lin in self._film_linears:
            offsets.append(start)
            start += lin.out_features
        self._blocks = {id(b): (self._res_block(b, rows_hint, pack), off) for b, off in zip(blocks, offsets)}
        self._final = (_ConvBlock(unet.final[0], rows_hint, pack), _Conv(unet.final[1], rows_hint, pack))
        convs = [c for (b1, b2, res, _), _ in self._blocks.values() for c in (b1.conv, b2.conv, res)]
        #: True when some weights are packed copies (then a weight change needs a new view, not `refresh`)
        self.packed = any(getattr(c, "packed", False) for c in [*convs, self._final[0].conv, self._final[1]])
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the FiLM terms derived from the weights (`step_film`, `obs_weight`) after an in-place change.

        Everything `__call__` reads is the network's own parameters (or views of them) unless `packed`, so an
        unpacked view, and a compiled `__call__` of it, stays valid across in-place weight changes after this."""
        unet, film_linears = self.unet, self._film_linears
        step_dim = unet.step_encoder[-1].out_features
        step_emb = mish(unet.step_encoder(self.timesteps.to(unet.step_encoder[-1].weight.device)))  # (S, E)
        # per step and block: W_e Mish(e_t) + b; the observation part's weights stacked for one product
        self.step_film = torch.cat([F.linear(step_emb, lin.weight[:, :step_dim], lin.bias) for lin in film_linears],
                                   dim=1)  # (S, F)
        self.obs_weight = torch.cat([lin.weight[:, step_dim:] for lin in film_linears], dim=0)  # (F, cond_dim)

    @staticmethod
    def _res_block(block: FiLMResidualBlock, rows_hint: int, pack: bool):
        residual = block.residual if isinstance(block.residual, nn.Identity) else _Conv(block.residual, rows_hint, pack)
        return (_ConvBlock(block.block1, rows_hint, pack), _ConvBlock(block.block2, rows_hint, pack), residual,
                block.block1[0].out_channels)

    def obs_film(self, cond: torch.Tensor) -> torch.Tensor:
        """The observation part of every block's FiLM: (B, cond_dim) -> (B, F)."""
        return F.linear(mish(cond), self.obs_weight)

    def _res(self, block: FiLMResidualBlock, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        (conv1, conv2, residual, channels), off = self._blocks[id(block)]
        scale = film[:, off:off + channels, None]
        bias = film[:, off + channels:off + 2 * channels, None]
        return conv2(torch.addcmul(bias, conv1(x), scale)) + residual(x)

    def film(self, obs_film: torch.Tensor, step: int) -> torch.Tensor:
        """Every block's FiLM at denoising step `step` (index into the timesteps): (B, F)."""
        return obs_film + self.step_film[step]

    def __call__(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """eps prediction (B, T, Da) for x (B, T, Da) at the step whose `film` (B, F) is given."""
        u = self.unet
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, downsample in u.down:
            h = self._res(res2, self._res(res1, h, film), film)
            skips.append(h)
            h = downsample(h)
        for res in u.mid:
            h = self._res(res, h, film)
        for res1, res2, upsample in u.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(self._res(res2, self._res(res1, h, film), film))
        block, out = self._final
        return out(block(h)).transpose(1, 2)


class FastUnetCache:
    """The `FastUnet1D` of a network for a schedule, kept current when the network's weights change.

    A change is seen by the parameters' in-place version counters (optimizer steps, EMA updates and
    `load_state_dict` all bump them), so a cached view never uses stale weights: an unpacked view is refreshed
    in place (`FastUnet1D.refresh`, and its compiled `__call__` stays valid), a packed one is built again, as
    is any view after the parameter tensors themselves or the timesteps change.
    """

    def __init__(self, pack: bool = True):
        self.pack = pack
        self._key = None
        self._versions = None
        self._view: FastUnet1D | None = None
        self._params: tuple[int, list] = (0, [])
        self._compiled: tuple[FastUnet1D | None, Callable | None] = (None, None)

    def get(self, unet: ConditionalUnet1D, timesteps: torch.Tensor, rows_hint: int = 16) -> FastUnet1D:
        if self._params[0] != id(unet):
            self._params = (id(unet), list(unet.parameters()))
        params = self._params[1]
        key = (id(unet), tuple(timesteps.tolist()), tuple(p.data_ptr() for p in params))
        versions = tuple(p._version for p in params)
        if key != self._key or (versions != self._versions and self._view.packed):
            self._view, self._key = FastUnet1D(unet, timesteps, rows_hint, self.pack), key
        elif versions != self._versions:
            self._view.refresh()
        self._versions = versions
        return self._view

    def compiled(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`torch.compile` of the last view's `__call__` (on CUDA with mode "reduce-overhead": CUDA graphs, recorded
        per batch size). It reads the parameters at every call, so it stays valid while the view does: across
        in-place weight changes of an unpacked view (DPPO's rollouts: compiled once per run); a new view
        compiles again."""
        view = self._view
        if view is None:
            raise RuntimeError("FastUnetCache.compiled before get: there is no view to compile")
        if self._compiled[0] is not view:
            mode = "reduce-overhead" if view.step_film.device.type == "cuda" else "default"
            self._compiled = (view, torch.compile(view.__call__, mode=mode, dynamic=False))
        return self._compiled[1]

    def __deepcopy__(self, memo) -> FastUnetCache:
        return FastUnetCache(self.pack)  # a copied policy builds its own view (packed weights do not copy)

