"""LayerNorm -> Linear -> GELU -> Linear as one autograd Function that keeps half for backward.

The pre-norm MLP is the largest activation consumer of every block in these backbones: autograd
keeps the norm's input, the normalised tokens (fc1's input), fc1's output (GELU's input) and
GELU's output (fc2's input) -- 1 + 1 + r + r token maps for an MLP ratio r (10 maps at r = 4,
about a third of an MLLA block's saved bytes). This Function keeps only the norm's input, its
row statistics and fc1's output (1 + r maps) and recomputes the normalised tokens and the GELU
in the backward: two elementwise passes, against the four GEMMs the MLP costs anyway.

:func:`norm_linear` is the same for a norm whose only consumer is one Linear (MLLA's norm1 ->
in_proj): it keeps the norm's input and statistics, not the normalised tokens.

Numerics are those of the unfused modules under autocast: the norm is computed in float32 from
the input, the GEMMs run in the autocast dtype (float32 without autocast), and the gradients
come back in each input's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import cast, op_dtype
from .layer_norm import layer_norm_rows, layer_norm_rows_backward

__all__ = ['norm_linear', 'norm_mlp']


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _norm_rows(x, norm_w, norm_b, eps, dtype, min_triton):
    """(x's rows as a contiguous (M, C) tensor, the normalised rows in ``dtype``, mean, rstd):
    what both Functions' forwards start with and keep (but the normalised rows)."""
    x2 = _flat(x)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    return (x2, *layer_norm_rows(x2, norm_w, norm_b, eps, dtype, min_triton))


def _norm_input_grads(g_xn, x2, norm_w, norm_b, mean, rstd, min_triton, shape):
    """(d x in ``shape``, d norm weight, d norm bias) from the gradient of the normalised rows."""
    gx, gnw, gnb = layer_norm_rows_backward(g_xn, x2, norm_w, norm_b, mean, rstd, min_triton)
    return gx.view(shape), gnw, gnb


class _NormMlp(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, norm_w, norm_b, eps, w1, b1, w2, b2, approximate, dtype, min_triton):
        x2, xn, mean, rstd = _norm_rows(x, norm_w, norm_b, eps, dtype, min_triton)
        w1c, w2c = cast(w1, dtype), cast(w2, dtype)
        h = F.linear(xn, w1c, cast(b1, dtype))
        out = F.linear(F.gelu(h, approximate=approximate), w2c, cast(b2, dtype))
        ctx.save_for_backward(x2, mean, rstd, norm_w, norm_b, w1c, h, w2c)
        ctx.meta = (x.shape, eps, approximate, dtype, b1 is not None, b2 is not None,
                    w1.dtype, w2.dtype, min_triton)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2, mean, rstd, norm_w, norm_b, w1c, h, w2c = ctx.saved_tensors
        shape, eps, approximate, dtype, has_b1, has_b2, w1_dtype, w2_dtype, min_triton = ctx.meta
        go = cast(_flat(grad_out), dtype)
        need = ctx.needs_input_grad
        # recomputed: GELU's output (fc2's input) and the normalised tokens (fc1's input)
        g = F.gelu(h, approximate=approximate)
        gw2 = cast(go.t() @ g, w2_dtype) if need[6] else None
        gb2 = cast(go.sum(0), w2_dtype) if has_b2 and need[7] else None
        del g
        gh = torch.ops.aten.gelu_backward(go @ w2c, h, approximate=approximate)
        gb1 = cast(gh.sum(0), w1_dtype) if has_b1 and need[5] else None
        gx = gnw = gnb = gw1 = None
        if need[4]:
            xn = layer_norm_rows(x2, norm_w, norm_b, eps, dtype, min_triton)[0]
            gw1 = cast(gh.t() @ xn, w1_dtype)
            del xn
        if need[0] or need[1] or need[2]:
            gx, gnw, gnb = _norm_input_grads(gh @ w1c, x2, norm_w, norm_b, mean, rstd,
                                             min_triton, shape)
        return gx, gnw, gnb, None, gw1, gb1, gw2, gb2, None, None, None


def norm_mlp(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor | None,
             eps: float, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor | None,
             fc2_weight: torch.Tensor, fc2_bias: torch.Tensor | None,
             approximate: str = 'none', min_triton_numel: int | None = None) -> torch.Tensor:
    """``fc2(gelu(fc1(layer_norm(x))))`` over the last dim of ``x``, keeping only ``x``, the
    norm's statistics and fc1's output for the backward (see the module docstring).

    Under autocast the GEMMs run in the autocast dtype and the result has that dtype, as the
    unfused ``nn.Linear`` would; otherwise everything runs in ``x``'s dtype.
    ``min_triton_numel``: the norm's ``min_triton_numel_grad`` (``ops.layer_norm``).
    """
    dev = x.device.type
    dtype = op_dtype(x)
    with torch.autocast(dev, enabled=False):  # the Function casts explicitly
        return _NormMlp.apply(x, norm_weight, norm_bias, eps, fc1_weight, fc1_bias,
                              fc2_weight, fc2_bias, approximate, dtype, min_triton_numel)


class _NormLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, norm_w, norm_b, eps, w, b, dtype, min_triton):
        x2, xn, mean, rstd = _norm_rows(x, norm_w, norm_b, eps, dtype, min_triton)
        wc = cast(w, dtype)
        out = F.linear(xn, wc, cast(b, dtype))
        ctx.save_for_backward(x2, mean, rstd, norm_w, norm_b, wc)
        ctx.meta = (x.shape, eps, dtype, b is not None, w.dtype, min_triton)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2, mean, rstd, norm_w, norm_b, wc = ctx.saved_tensors
        shape, eps, dtype, has_b, w_dtype, min_triton = ctx.meta
        go = cast(_flat(grad_out), dtype)
        need = ctx.needs_input_grad
        gw = gb = gx = gnw = gnb = None
        if need[4]:
            xn = layer_norm_rows(x2, norm_w, norm_b, eps, dtype, min_triton)[0]  # recomputed
            gw = cast(go.t() @ xn, w_dtype)
            del xn
        if has_b and need[5]:
            gb = cast(go.sum(0), w_dtype)
        if need[0] or need[1] or need[2]:
            gx, gnw, gnb = _norm_input_grads(go @ wc, x2, norm_w, norm_b, mean, rstd,
                                             min_triton, shape)
        return gx, gnw, gnb, None, gw, gb, None, None


def norm_linear(x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor | None,
                eps: float, weight: torch.Tensor, bias: torch.Tensor | None,
                min_triton_numel: int | None = None) -> torch.Tensor:
    """``linear(layer_norm(x))`` over the last dim of ``x``, keeping only ``x`` and the norm's
    statistics for the backward (the normalised tokens are recomputed there). Dtypes as
    :func:`norm_mlp`."""
    dev = x.device.type
    dtype = op_dtype(x)
    with torch.autocast(dev, enabled=False):  # the Function casts explicitly
        return _NormLinear.apply(x, norm_weight, norm_bias, eps, weight, bias, dtype,
                                 min_triton_numel)
