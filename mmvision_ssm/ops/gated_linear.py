"""``linear(x * silu(gate))`` as one autograd Function that keeps only ``x`` and ``gate``.

The output gate of MLLA (and of Mamba-style blocks): autograd would keep ``gate`` (SiLU's input),
``silu(gate)`` and ``x`` (the product's inputs) and the product (the Linear's input) -- two token
maps more than the Function, which recomputes ``silu(gate)`` and the product in the backward
(elementwise passes; the Linear's two GEMMs run anyway). ``gate`` is typically a view into a
larger projection that the backward keeps for other consumers, so keeping it costs nothing.

Under autocast the product and the GEMMs run in the autocast dtype (as the unfused ops would),
otherwise in ``x``'s dtype; gradients come back in each input's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import cast, op_dtype

__all__ = ['gated_linear']


class _GatedLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, gate, weight, bias, dtype):
        wc = cast(weight, dtype)
        xd, gd = cast(x, dtype), cast(gate, dtype)
        out = F.linear(xd * F.silu(gd), wc, cast(bias, dtype))
        ctx.save_for_backward(xd, gd, wc)
        ctx.meta = (x.dtype, gate.dtype, weight.dtype, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xd, gd, wc = ctx.saved_tensors
        x_dtype, gate_dtype, w_dtype, has_bias = ctx.meta
        need = ctx.needs_input_grad
        go = cast(grad_out, wc.dtype)
        go2 = go.reshape(-1, go.shape[-1])
        s = F.silu(gd)                                      # recomputed
        gw = gb = gx = ggate = None
        if need[2]:
            gw = cast(go2.t() @ (xd * s).reshape(-1, xd.shape[-1]), w_dtype)
        if has_bias and need[3]:
            gb = cast(go2.sum(0), w_dtype)
        if need[0] or need[1]:
            gp = go @ wc                                    # d loss / d (x * silu(gate))
            if need[1]:
                ggate = cast(torch.ops.aten.silu_backward(gp * xd, gd), gate_dtype)
            if need[0]:
                gx = cast(gp.mul_(s), x_dtype)
        return gx, ggate, gw, gb, None


def gated_linear(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x * F.silu(gate), weight, bias)`` keeping only ``x`` and ``gate`` for the
    backward (see the module docstring). Without autograd, the plain ops."""
    if not (torch.is_grad_enabled() and (x.requires_grad or gate.requires_grad
                                         or weight.requires_grad)):
        return F.linear(x * F.silu(gate), weight, bias)
    dtype = op_dtype(x)
    with torch.autocast(x.device.type, enabled=False):  # the Function casts explicitly
        return _GatedLinear.apply(x, gate, weight, bias, dtype)
