"""Chunked selective scan in plain PyTorch: fast on CPU, correct on any device.

The scan is the first-order linear recurrence h_t = a_t * h_{t-1} + x_t per (batch, channel, state)
with a_t = exp(dt_t * A). It is evaluated by a two-level (square-root) decomposition over time:

1. split L into chunks of T ~ sqrt(L) tokens; run the recurrence inside every chunk at once
   (T vectorised steps over all chunks), keeping the running product P_t of a inside the chunk;
2. carry the state across chunks (L/T small steps over the chunk ends);
3. add P_t * carry to every token of a chunk (one vectorised pass).

Only products and sums of the a_t appear -- no exp of cumulative sums, no division -- so it is as
stable as the sequential recurrence itself: nothing overflows or underflows at L = 64k.
Total work is O(L) with O(sqrt(L)) Python steps. The backward is the same scan run in reverse
(the adjoint recurrence), written by hand so no per-step graph is stored.
"""
import math

import torch
import torch.nn.functional as F

from .common import as_grouped, check_scan_inputs, compute_dtype


def _flush_exp(log_a):
    """exp(log_a) with log_a clamped above the denormal range: denormal operands make CPU
    multiplies ~100x slower, and factors below exp(-80) (float32) contribute nothing measurable
    next to the O(1) inputs added at every step."""
    return torch.exp(log_a.clamp_min(math.log(torch.finfo(log_a.dtype).tiny) + 8))


def linear_scan(log_a, x, reverse=False):
    """h_t = exp(log_a_t) * h_{t-1} + x_t along dim 0 of (L, M) tensors (h_{-1} = 0), no autograd.

    With ``reverse=True`` the recurrence runs from the end: h_t = a_t * h_{t+1} + x_t.
    The decay comes in log space so that the in-chunk products are exp(cumsum(log_a)).
    """
    L, M = x.shape
    if L == 0:
        return x.clone()
    T = max(1, math.isqrt(L - 1) + 1)  # ceil(sqrt(L))
    nc = -(-L // T)
    pad = nc * T - L
    if pad:  # padding tokens (a=1, x=0) come after the sequence in both directions: harmless
        log_a = F.pad(log_a, (0, 0, 0, pad))
        x = F.pad(x, (0, 0, 0, pad))
    log_a = log_a.reshape(nc, T, M)
    a = _flush_exp(log_a)
    h = x.reshape(nc, T, M).clone()
    if reverse:  # P_t = prod_{s >= t} a_s inside the chunk
        P = _flush_exp(log_a.flip(1).cumsum(1).flip(1))
        for t in range(T - 2, -1, -1):
            h[:, t].addcmul_(a[:, t], h[:, t + 1])
    else:  # P_t = prod_{s <= t} a_s inside the chunk
        P = _flush_exp(log_a.cumsum(1))
        for t in range(1, T):
            h[:, t].addcmul_(a[:, t], h[:, t - 1])
    # state entering each chunk, from the neighbouring chunk's boundary token
    edge = 0 if reverse else T - 1
    carry = h.new_zeros(nc, M)
    s = h.new_zeros(M)
    for c in (range(nc - 1, -1, -1) if reverse else range(nc)):
        carry[c] = s
        s = torch.addcmul(h[c, edge], P[c, edge], s)
    h.addcmul_(P, carry.unsqueeze(1))
    return h.reshape(nc * T, M)[:L]


class LinearScan(torch.autograd.Function):
    """Autograd wrapper of :func:`linear_scan` (forward direction) for (L, M) tensors."""

    @staticmethod
    def forward(ctx, log_a, x):
        h = linear_scan(log_a, x)
        ctx.save_for_backward(log_a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        log_a, h = ctx.saved_tensors
        # adjoint: lam_t = grad_h_t + a_{t+1} * lam_{t+1};  d h_t / d log_a_t = a_t * h_{t-1}
        log_a_next = torch.cat([log_a[1:], log_a.new_zeros(1, log_a.shape[1])])
        lam = linear_scan(log_a_next, grad_h.contiguous(), reverse=True)
        grad_log_a = torch.zeros_like(log_a)
        grad_log_a[1:] = lam[1:] * h[:-1] * _flush_exp(log_a[1:])
        return grad_log_a, lam


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                         delta_softplus=False, return_last_state=False):
    b, d, l, n, g = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = compute_dtype(dtype_in)
    hd = d // g
    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uc = u.to(ct)
    # time-major (l, b, g, d//g, n): every scan step touches one contiguous block
    dt_t = dt.permute(2, 0, 1).reshape(l, b, g, hd, 1)
    log_a = dt_t * A.to(ct).reshape(g, hd, n)
    B_t = as_grouped(B, 'B').to(ct).permute(3, 0, 1, 2).unsqueeze(3)  # (l, b, g, 1, n)
    C_t = as_grouped(C, 'C').to(ct).permute(3, 0, 1, 2).unsqueeze(3)
    x = (dt * uc).permute(2, 0, 1).reshape(l, b, g, hd, 1) * B_t
    h = LinearScan.apply(log_a.reshape(l, -1), x.reshape(l, -1)).view(l, b, g, hd, n)
    y = (h * C_t).sum(-1).reshape(l, b, d).permute(1, 2, 0)
    if D is not None:
        y = y + D.to(ct)[:, None] * uc
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    if return_last_state:
        last = h[-1].reshape(b, d, n) if l else uc.new_zeros(b, d, n)
        return y, last
    return y
