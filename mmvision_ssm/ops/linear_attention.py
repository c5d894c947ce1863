"""MLLA's attention core as one autograd Function that keeps a third for backward.

Multi-head linear attention with ELU+1 feature maps and 2-D RoPE on q and k (MLLA, Han et al.
2024), on (B, N, C) tokens, all heads at once:

    q, k   = elu(qk) + 1                       (qk: the q/k Linear's output, (B, N, 2C))
    kv     = (rope(k)^T v) * mask              (B, C, C), block-diagonal per head
    denom  = q . mean_n(k) per head + 1e-6     (B, N, heads), without RoPE (as the official code)
    result = lepe + (rope(q) kv) / denom

Autograd would keep qk, q/k, rope(q), rope(k) and rope(q) kv for the backward: 5 token maps
beyond v. This Function keeps q/k (2 maps; ELU's derivative is a function of its output) and
the small kv and denom, and recomputes the RoPE (elementwise) and rope(q) kv (one (N, C) x
(C, C) GEMM) in the backward. The RoPE tables, head mask and head-sum matrix are constants
(``ctx`` of :func:`mmvision_ssm.models.backbones.mlla.stage_context`).

Everything runs in one dtype: the autocast dtype under autocast, else ``qk``'s; inputs in
another dtype are cast (autograd casts their gradients back). The forward runs the same ops
under the same autocast state as the unfused path, so both give the same values.
"""
from __future__ import annotations

import torch

from .common import cast, op_dtype

__all__ = ['apply_rope', 'rope_linear_attention', 'swap_pairs']


def swap_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...) along the last dim."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as real arithmetic: ``x * cos + swap_pairs(x) * sin`` (``sin`` carries the sign)."""
    return torch.addcmul(x * cos, swap_pairs(x), sin)


def _rope_transposed(g: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     out: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`apply_rope` (swap_pairs is its own transpose), into ``out``."""
    return torch.addcmul(swap_pairs(g * sin), g, cos, out=out)


def _forward(qk, v, lepe, cos, sin, cos_k, sin_k, kv_mask, head_sum):
    """(result, q/k, kv, denom) -- the shared arithmetic of the Function and of the plain path."""
    b, n, c = v.shape
    heads = head_sum.shape[1]
    qk_act = torch.nn.functional.elu(qk).add_(1.0)
    q, k = qk_act.chunk(2, dim=-1)
    kv = torch.matmul(apply_rope(k, cos_k, sin_k).transpose(1, 2), v).mul_(kv_mask)
    denom = torch.matmul(q, k.mean(dim=1).unsqueeze(-1) * head_sum).add_(1e-6)
    out = torch.matmul(apply_rope(q, cos, sin), kv)
    result = torch.addcdiv(lepe.view(b, n, heads, -1), out.view(b, n, heads, -1),
                           denom.unsqueeze(-1))
    return result.view(b, n, c), qk_act, kv, denom


class _RopeLinearAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, qk, v, lepe, cos, sin, cos_k, sin_k, kv_mask, head_sum):
        result, qk_act, kv, denom = _forward(qk, v, lepe, cos, sin, cos_k, sin_k, kv_mask,
                                             head_sum)
        ctx.save_for_backward(qk_act, v, kv, denom, cos, sin, cos_k, sin_k, kv_mask, head_sum)
        return result

    @staticmethod
    def backward(ctx, grad):
        # (a CPU backward runs in the caller's thread, possibly under its autocast: the
        # arithmetic below is in the saved tensors' dtype)
        with torch.autocast(grad.device.type, enabled=False):
            return _RopeLinearAttention._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        qk_act, v, kv, denom, cos, sin, cos_k, sin_k, kv_mask, head_sum = ctx.saved_tensors
        b, n, c = v.shape
        heads = head_sum.shape[1]
        g = cast(grad, qk_act.dtype)
        q, k = qk_act.chunk(2, dim=-1)
        q_rope = apply_rope(q, cos, sin)
        # result = lepe + out / denom, out = rope(q) kv (recomputed)
        g_out = (g.view(b, n, heads, -1) / denom.unsqueeze(-1)).view(b, n, c)
        out = torch.matmul(q_rope, kv)
        g_denom = (g_out * out).view(b, n, heads, -1).sum(-1).div_(denom).neg_()  # (B, N, heads)
        del out
        g_kv = torch.matmul(q_rope.transpose(1, 2), g_out).mul_(kv_mask)           # (B, C, C)
        g_q_rope = torch.matmul(g_out, kv.transpose(1, 2))
        del q_rope, g_out
        k_rope = apply_rope(k, cos_k, sin_k)
        g_v = torch.matmul(k_rope, g_kv)
        del k_rope
        g_k_rope = torch.matmul(v, g_kv.transpose(1, 2))
        # q and k gradients into the two halves of one buffer (qk's layout)
        g_act = torch.empty_like(qk_act)
        g_q, g_k = g_act.chunk(2, dim=-1)
        k_mean = k.mean(dim=1)
        _rope_transposed(g_q_rope, cos, sin, out=g_q)
        g_q.baddbmm_(g_denom, (k_mean.unsqueeze(-1) * head_sum).transpose(1, 2))
        _rope_transposed(g_k_rope, cos_k, sin_k, out=g_k)
        # denom's mean over tokens: d denom / d k_mean, spread evenly over the n tokens
        g_k_mean = (torch.matmul(q.transpose(1, 2), g_denom) * head_sum).sum(-1)     # (B, C)
        g_k.add_(g_k_mean.unsqueeze(1), alpha=1.0 / n)
        # ELU + 1 from its output y: derivative 1 where the input > 0 (y > 1), else exp(input) =
        # y, i.e. min(y, 1)
        g_qk = g_act.mul_(qk_act.clamp(max=1.0))
        return g_qk, g_v, g, None, None, None, None, None, None


def rope_linear_attention(qk: torch.Tensor, v: torch.Tensor, lepe: torch.Tensor,
                          ctx: tuple, fused: bool = True) -> torch.Tensor:
    """``lepe + linear_attention(elu(qk) + 1, v)`` on (B, N, ·) tokens (see the module
    docstring); ``ctx`` = ``(cos, sin, cos_k, sin_k, kv_mask, head_sum)``. With autograd and
    ``fused`` it keeps only q/k, kv and the normaliser for the backward (``fused=False``: the
    same ops recorded by autograd). Returns (B, N, C) in qk's dtype (under autocast, the
    autocast dtype)."""
    if not (fused and torch.is_grad_enabled()
            and (qk.requires_grad or v.requires_grad or lepe.requires_grad)):
        return _forward(qk, v, lepe, *ctx)[0]  # recorded by autograd if it records at all
    if any(t.requires_grad for t in ctx):
        raise ValueError('rope_linear_attention: the RoPE tables and head masks (ctx) are '
                         'constants; got one that requires grad')
    dtype = op_dtype(qk)
    # one dtype for everything, as autocast would run the ops (casts only where needed: each
    # call costs host time, and these steps are host-bound on slow machines)
    args = [cast(t, dtype) for t in (qk, v, lepe, *ctx)]
    return _RopeLinearAttention.apply(*args)
