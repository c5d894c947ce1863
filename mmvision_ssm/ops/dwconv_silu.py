"""``silu(depthwise_conv3x3(x))`` on a channels-last (B, H, W, C) map, keeping only ``x``.

Autograd keeps the conv's input and output (SiLU's input) for the backward; this Function keeps
the input only and recomputes the convolution in the backward -- one depthwise pass, cheap
next to the map it saves. The input is typically a view of a projection the backward keeps
anyway (MLLA's in_proj output), so the Function's saved bytes are free.

Under autocast the conv runs in the autocast dtype (as ``F.conv2d`` would), otherwise in the
input's dtype; the weight and bias gradients come back in their dtypes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import cast, op_dtype

__all__ = ['dwconv_silu']


def _conv(x_nchw, weight, bias, padding):
    return F.conv2d(x_nchw, weight, bias, padding=padding, groups=weight.shape[0])


class _DwconvSilu(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dtype):
        xc = cast(x, dtype).permute(0, 3, 1, 2)
        wc = cast(weight, dtype)
        bc = cast(bias, dtype)
        out = F.silu(_conv(xc, wc, bc, padding))
        ctx.save_for_backward(xc, wc, bc)
        ctx.meta = (x.dtype, weight.dtype, None if bias is None else bias.dtype, padding)
        return out.permute(0, 2, 3, 1)

    @staticmethod
    def backward(ctx, grad_out):
        xc, wc, bc = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype, pad = ctx.meta
        pre = _conv(xc, wc, bc, pad)                              # recomputed
        g_pre = torch.ops.aten.silu_backward(cast(grad_out.permute(0, 3, 1, 2), pre.dtype), pre)
        del pre
        need = ctx.needs_input_grad
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g_pre, xc, wc, None if bc is None else [bc.shape[0]], [1, 1], [pad, pad], [1, 1],
            False, [0, 0], wc.shape[0], [need[0], need[1], bc is not None and need[2]])
        return (None if gx is None else cast(gx.permute(0, 2, 3, 1), x_dtype),
                cast(gw, w_dtype), cast(gb, b_dtype), None, None)


def dwconv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: int = 1) -> torch.Tensor:
    """``silu(conv2d(x, weight, bias, padding=padding, groups=C))`` for a depthwise (C, 1, k, k)
    ``weight`` (stride 1), on and to (B, H, W, C) maps; with autograd it keeps only ``x`` (the
    module docstring)."""
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.silu(_conv(x.permute(0, 3, 1, 2), weight, bias, padding)).permute(0, 2, 3, 1)
    dtype = op_dtype(x)
    with torch.autocast(x.device.type, enabled=False):  # the Function casts explicitly
        return _DwconvSilu.apply(x, weight, bias, padding, dtype)
