"""Chunked selective scan in plain PyTorch: fast on CPU, correct on any device.

The scan is the first-order linear recurrence h_t = a_t * h_{t-1} + x_t per (batch, channel,
state) with a_t = exp(dt_t * A). One autograd Function (:class:`SelectiveScanTorch`) computes
the forward and a hand-written backward (the adjoint recurrence lam_t = g_t + a_{t+1} lam_{t+1},
run in reverse), so no per-op graph is stored; every op writes into a preallocated buffer.

Memory. On CPU, first-touching fresh memory costs more than the arithmetic (every large
allocation is mapped anew: ~1.4 us per 4 KiB page here, ~3.5 ms for a 10 MB tensor against
~0.3 ms for one elementwise pass over it). So the temporaries live in per-thread scratch buffers
kept between calls (:func:`release_scratch` frees them), and the forward keeps only dt (when it
comes out of the softplus) for the backward: the backward recomputes a, dt*u and the states h,
which is cheaper than first-touching memory to keep them.

Layout. The recurrence steps along time, so each step should touch contiguous memory: the
(b, d, l) inputs are copied once into a blocked time-major layout (b, g, d/g/Mi, L, Mi) -- and the
state into (b, g, d/g/Mi, L, n, Mi) -- where Mi (at most BLOCK_CHANNELS) channels of one B/C
group form a block: the copy is a batched transpose of (Mi, L) tiles, and every time step reads
and writes runs of n*Mi contiguous numbers.

Scan. Time is split into nc chunks of T tokens (two-level, square-root decomposition):

1. inside every chunk at once, T vectorised steps h[t] += a[t] * h[t-1] (the local scan);
2. the state entering each chunk: nc small steps over the chunk ends, with the product of a
   chunk's a computed as exp2 of the sum of their log2 (one reduction);
3. what that state adds to the chunk decays like the state itself, delta_t = a_t delta_{t-1}:
   T more vectorised steps, then h += delta (one pass).

Only products of the a_t appear (a_t = exp(dt_t A) in (0, 1] for a decaying state) -- never an
exp of a positive sum, never a division -- so the scan is as stable as the sequential
recurrence: nothing overflows at any length, and the factors a_t and the chunk products stay
out of the denormal range because their exponents are clamped 8 binades above it (denormal
operands can make CPU multiplies ~100x slower; factors below 2^-118 contribute nothing
measurable next to the O(1) inputs). The
chunk length is picked per call from a cost model (Python steps against extra passes over
memory); short sequences with a large state run as a single chunk (T = L, no carry).

Cheap elementwise math: exp is computed as exp2 with log2(e) folded into A (ATen's vectorised
exp2 is ~4x faster than exp on CPU), and softplus as max(x, 0) + log1p(exp(-|x|)) where log1p(e)
is log(1 + e) corrected by the exact rounding error of 1 + e (ATen's CPU log1p is not
vectorised; this is ~6x faster; relative error a few ulp times (4 + |x|), from rounding
x * log2(e)).
"""
import math
import threading

import torch
from torch.autograd.function import once_differentiable

from .common import as_grouped, cdiv, check_scan_inputs, compute_dtype

LOG2E = 1.4426950408889634
# channels per block of the time-major layout (see _channel_block)
BLOCK_CHANNELS = 96
# CPU scratch buffers larger than this are not kept between calls (bounds the idle memory)
SCRATCH_MAX_NUMEL = 1 << 23
# cost model of the chunk choice, in units of one pass over one state element
STEP_COST = 30000        # one Python-level tensor op (dispatch + launch)
CHUNK_EXTRA_PASSES = 4   # the carry's decay steps, h += delta, the chunk sums of log2(a)
# softplus(x) is x above this (the semantics of F.softplus and mamba-ssm's kernels)
SOFTPLUS_THRESHOLD = 20.0


def _exp2_floor(dtype):
    """Lowest exponent kept (base 2): 8 binades above the smallest normal number."""
    return math.log2(torch.finfo(dtype).tiny) + 8


def _channel_block(hd, cap=BLOCK_CHANNELS):
    """The largest divisor of the group width hd not above ``cap`` (hd itself when that divisor
    would be tiny: a few-channel run per step costs more than a wider transpose)."""
    best = max(m for m in range(1, min(hd, cap) + 1) if hd % m == 0)
    return best if best >= min(8, hd) else hd


def _chunking(L, state_numel):
    """(T, nc): chunk length and count for a scan of L steps over ``state_numel`` elements."""
    best = (STEP_COST * L, L, 1)  # one chunk: L steps, no carry, no fix-up
    T = max(1, math.isqrt(L))
    for t in {T, T + 1, 2 * T, max(1, T // 2)}:
        nc = cdiv(L, t)
        if nc == 1:
            continue
        cost = STEP_COST * (2 * t + nc) + CHUNK_EXTRA_PASSES * state_numel
        best = min(best, (cost, t, nc))
    return best[1], best[2]


def scan_chunks_(h, a, chunk_log2_a=None, reverse=False):
    """In place: h (R, nc, T, K) holds x_t on entry and h_t on exit, time along (nc, T).

    Forward: h_t = a_t h_{t-1} + x_t.  Reverse: h_t = a_{t+1} h_{t+1} + x_t (the adjoint).
    ``a`` is (R, nc, T, K); ``chunk_log2_a`` (R, nc, K), the sum of log2(a) over each chunk, is
    needed when nc > 1. No autograd.
    """
    R, nc, T, K = h.shape
    hs, As = _SCRATCH.unbind(h, 2), _SCRATCH.unbind(a, 2)
    if reverse:
        for t in range(T - 2, -1, -1):
            hs[t].addcmul_(As[t + 1], hs[t + 1])
    else:
        for t in range(1, T):
            hs[t].addcmul_(As[t], hs[t - 1])
    if nc == 1:
        return h
    # the state carried into every chunk, over the chunk ends, with the product of a chunk's a
    # as exp2 of the sum of their log2 (<= 0: in (0, 1])
    small = (R, nc, K)
    prod = torch.clamp_min(chunk_log2_a, _exp2_floor(h.dtype),
                           out=_SCRATCH.get('carry_p', small, h.dtype, h.device)).exp2_()
    carry = _SCRATCH.get('carry', small, h.dtype, h.device)
    cs, Ps = _SCRATCH.unbind(carry, 1), _SCRATCH.unbind(prod, 1)
    if reverse:  # carry_c = a_{c+1,0} h_{c+1,0};  carry_{c-1} = a_{c,0} h^local_{c,0} + P_c carry_c
        X = _SCRATCH.unbind(torch.mul(As[0], hs[0], out=_SCRATCH.get('carry_x', small, h.dtype,
                                                                        h.device)), 1)
        cs[nc - 1].zero_()
        for c in range(nc - 1, 0, -1):
            torch.addcmul(X[c], Ps[c], cs[c], out=cs[c - 1])
    else:  # carry_c = h_{c-1,T-1} = h^local_{c-1,T-1} + P_{c-1} carry_{c-1}
        E = _SCRATCH.unbind(hs[T - 1], 1)
        cs[0].zero_()
        for c in range(1, nc):
            torch.addcmul(E[c - 1], Ps[c - 1], cs[c - 1], out=cs[c])
    # what the carry adds to each token decays like the state itself:
    # forward delta_0 = a_0 carry, delta_t = a_t delta_{t-1};  reverse delta_{T-1} = carry,
    # delta_t = a_{t+1} delta_{t+1}. The end chunk (first or last) carries nothing.
    part = slice(0, nc - 1) if reverse else slice(1, nc)
    delta = _SCRATCH.get('P', (R, nc - 1, T, K), h.dtype, h.device)
    ds, As, cpart = _SCRATCH.unbind(delta, 2), _SCRATCH.unbind(a[:, part], 2), carry[:, part]
    if reverse:
        ds[T - 1].copy_(cpart)
        for t in range(T - 2, -1, -1):
            torch.mul(As[t + 1], ds[t + 1], out=ds[t])
    else:
        torch.mul(As[0], cpart, out=ds[0])
        for t in range(1, T):
            torch.mul(As[t], ds[t - 1], out=ds[t])
    h[:, part].add_(delta)
    return h


def linear_scan(log_a, x, reverse=False):
    """h_t = exp(log_a_t) * h_{t-1} + x_t along dim 0 of (L, M) tensors (h_{-1} = 0), no autograd.

    With ``reverse=True`` the recurrence runs from the end: h_t = a_t * h_{t+1} + x_t.
    """
    L, M = x.shape
    if L == 0:
        return x.clone()
    T, nc = _chunking(L, L * M)
    Lp = T * nc
    log2_a = log_a.new_zeros(Lp, M)  # padding (a = 1, x = 0) comes last in both directions
    if reverse:  # scan_chunks_ reads a_{t+1} in reverse: shift by one
        log2_a[1:L] = log_a[:L - 1]
    else:
        log2_a[:L] = log_a
    log2_a.mul_(LOG2E).clamp_min_(_exp2_floor(log2_a.dtype))
    h = x.new_zeros(Lp, M)
    h[:L] = x
    shape = (1, nc, T, M)
    scan_chunks_(h.view(shape), torch.exp2(log2_a).view(shape), log2_a.view(shape).sum(2),
                 reverse)
    return h[:L]


class LinearScan(torch.autograd.Function):
    """Autograd wrapper of :func:`linear_scan` (forward direction) for (L, M) tensors."""

    @staticmethod
    def forward(ctx, log_a, x):
        h = linear_scan(log_a, x)
        ctx.save_for_backward(log_a, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h):
        log_a, h = ctx.saved_tensors
        # adjoint: lam_t = grad_h_t + a_{t+1} * lam_{t+1};  d h_t / d log_a_t = a_t * h_{t-1}
        log_a_next = torch.cat([log_a[1:], log_a.new_zeros(1, log_a.shape[1])])
        lam = linear_scan(log_a_next, grad_h, reverse=True)
        grad_log_a = torch.zeros_like(log_a)
        grad_log_a[1:] = lam[1:] * h[:-1] * torch.exp(log_a[1:])
        return grad_log_a, lam


class _Scratch(threading.local):
    """Per-thread CPU scratch buffers, one per named slot, grown to the largest size seen.

    First-touching fresh memory costs more than the arithmetic here (a fresh 16 MB tensor pays
    ~4000 page faults; glibc maps every large allocation anew), so the temporaries of a call
    live in buffers kept from the previous call. A slot's view never leaves the call that took
    it; :func:`release_scratch` frees them. CUDA tensors use the caching allocator instead."""

    def __init__(self):
        self.bufs = {}
        self.views = {}

    def get(self, slot, shape, dtype, device):
        numel = math.prod(shape)
        if device.type != 'cpu' or numel > SCRATCH_MAX_NUMEL:
            return torch.empty(shape, dtype=dtype, device=device)
        buf = self.bufs.get((slot, dtype))
        if buf is None or buf.numel() < numel:
            self.views.clear()  # they may point into the buffer being replaced
            buf = self.bufs[slot, dtype] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)

    def unbind(self, t, dim):
        """``t.unbind(dim)``, kept for scratch views: the per-step views of a scan cost ~1 us
        each to make, as much as a small step itself."""
        if t.device.type != 'cpu':
            return t.unbind(dim)
        key = (t.data_ptr(), t.shape, t.stride(), t.dtype, dim)
        views = self.views.get(key)
        if views is None:
            views = t.unbind(dim)
            ptr = t.untyped_storage().data_ptr()
            if any(b.untyped_storage().data_ptr() == ptr for b in self.bufs.values()):
                if len(self.views) >= 256:  # many shapes seen: start over
                    self.views.clear()
                self.views[key] = views
        return views


_SCRATCH = _Scratch()


def release_scratch():
    """Free this thread's cached CPU scratch buffers of the torch scan."""
    _SCRATCH.bufs.clear()
    _SCRATCH.views.clear()


def _softplus(x, out, tmp1, tmp2):
    """softplus(x) = max(x, 0) + log1p(exp(-|x|)) into ``out``, without ATen's scalar log1p (see
    the module docstring): with e = exp(-|x|) and w = fl(1 + e), log1p(e) = log(w) - ((w - 1) - e)
    to within a rounding, since (w - 1) - e is exactly the rounding error of 1 + e.

    Above SOFTPLUS_THRESHOLD it returns x itself, as F.softplus, mamba-ssm and the Triton kernels
    do (the dropped log1p(exp(-x)) < 2.1e-9 is below float32's resolution of x, not float64's)."""
    e = torch.abs(x, out=tmp1).mul_(-LOG2E).exp2_()
    w = torch.add(e, 1, out=tmp2)
    torch.log(w, out=out)
    out.sub_(w.sub_(1).sub_(e))
    out.add_(torch.clamp_min(x, 0, out=e))
    return torch.where(x > SOFTPLUS_THRESHOLD, x, out, out=out)


class _Plan:
    """Sizes of one call and the blocked time-major layout (see the module docstring)."""

    def __init__(self, u, A, B):
        b, d, l = u.shape  # noqa: E741
        n = A.shape[1]
        g = as_grouped(B, 'B').shape[1]
        self.b, self.d, self.l, self.n, self.g = b, d, l, n, g
        self.ct = compute_dtype(u.dtype)
        self.device = u.device
        self.mi = _channel_block(d // g)
        self.ho = d // g // self.mi
        self.T, self.nc = _chunking(l, b * d * n * l)
        self.Lp = self.T * self.nc
        self.tm = (b, g, self.ho, self.Lp, self.mi)             # per channel
        self.st = (b, g, self.ho, self.Lp, n, self.mi)          # per channel and state
        self.chunks = (b * g * self.ho, self.nc, self.T, n * self.mi)

    def scratch(self, slot, per_state=False, shape=None):
        shape = shape or (self.st if per_state else self.tm)
        return _SCRATCH.get(slot, shape, self.ct, self.device)

    def mul_sum_state(self, x, y, out):
        """sum over the state of x * y, both broadcast to (b, g, ho, Lp, n, mi), into ``out``."""
        if self.n == 1:
            torch.mul(x, y, out=out.view(self.st))
            return out
        return torch.sum(torch.mul(x, y, out=self.scratch('prod', True)), -2, out=out)

    def to_tm(self, t, out):
        """(b, d, l) -> (b, g, ho, Lp, mi) into ``out``, zero padded, in the compute dtype."""
        b, g, ho, mi, l = self.b, self.g, self.ho, self.mi, self.l
        out[..., :l, :].copy_(t.reshape(b, g, ho, mi, l).transpose(-1, -2))
        if self.Lp > l:
            out[..., l:, :].zero_()
        return out

    def from_tm(self, t, dtype):
        """(b, g, ho, Lp, mi) -> a new (b, d, l) tensor of ``dtype``."""
        b, g, ho, mi, l = self.b, self.g, self.ho, self.mi, self.l
        out = torch.empty(b, self.d, l, dtype=dtype, device=self.device)
        out.view(b, g, ho, mi, l).copy_(t[..., :l, :].transpose(-1, -2))
        return out

    def channel(self, t):
        """A per-channel (d,) parameter as (1, g, ho, 1, mi)."""
        return t.to(self.ct).view(1, self.g, self.ho, 1, self.mi)

    def state_param(self, A):
        """A (d, n) as (1, g, ho, 1, n, mi)."""
        g, ho, mi, n = self.g, self.ho, self.mi, self.n
        return A.to(self.ct).view(g, ho, mi, n).transpose(-1, -2).reshape(
            1, g, ho, 1, n, mi).contiguous()

    def bc(self, t, name):
        """B/C (b, n, l) or (b, g, n, l) -> (b, g, 1, Lp, n, 1), zero padded."""
        out = torch.zeros((self.b, self.g, self.Lp, self.n), dtype=self.ct, device=self.device)
        out[:, :, :self.l].copy_(as_grouped(t, name).transpose(-1, -2))
        return out.view(self.b, self.g, 1, self.Lp, self.n, 1)

    def bc_grad(self, t, like):
        """(b, g, Lp, n) gradient -> the layout and dtype of B/C ``like``."""
        return t[:, :, :self.l].transpose(-1, -2).reshape(like.shape).to(like.dtype)

    def reduce_bl(self, t):
        """Sum over batch and time of (b, g, ho, Lp, [n,] mi) -> (g, ho, [n,] mi)."""
        return t.sum(3).sum(0)  # in this order: one vectorised reduction each

    def reduce_group(self, t):
        """Sum over the channels of each group of (b, g, ho, Lp, n, mi) -> (b, g, Lp, n)."""
        return t.sum(-1).sum(2)


def _pre_activation(p, delta, delta_bias):
    """delta + delta_bias in the blocked layout (scratch)."""
    xpre = p.to_tm(delta, p.scratch('xpre'))
    if delta_bias is not None:
        xpre.add_(p.channel(delta_bias))
    return xpre


def _prepare(p, u, delta, A, delta_bias, delta_softplus, dt=None, dt_out=None):
    """dt (unless given; into ``dt_out`` if given), u, dt*u, log2(a) and a in the blocked
    layout (scratch buffers)."""
    if dt is None:
        xpre = _pre_activation(p, delta, delta_bias)
        dt = xpre
        if delta_softplus:
            dt = _softplus(xpre, dt_out if dt_out is not None else p.scratch('dt'),
                           p.scratch('y'), p.scratch('P'))
    u_t = p.to_tm(u, p.scratch('u'))
    dtu = torch.mul(dt, u_t, out=p.scratch('dtu'))
    a = torch.mul(dt.unsqueeze(-2), p.state_param(A) * LOG2E, out=p.scratch('a', True))
    a.clamp_min_(_exp2_floor(p.ct))
    chunk_log2_a = None
    if p.nc > 1:  # sum of log2(a) over each chunk, for the scan's carries
        chunk_log2_a = torch.sum(a.view(p.chunks), 2, out=_SCRATCH.get(
            'chunk_log2a', (p.chunks[0], p.nc, p.chunks[3]), p.ct, p.device))
    return dt, u_t, dtu, a.exp2_(), chunk_log2_a


def _states(p, dtu, B_t, a, chunk_log2_a):
    """h_t for every token, (b, g, ho, Lp, n, mi) in scratch."""
    h = torch.mul(dtu.unsqueeze(-2), B_t, out=p.scratch('h', True))
    scan_chunks_(h.view(p.chunks), a.view(p.chunks), chunk_log2_a)
    return h


def _outputs(p, h, C_t, u_t, D):
    """y = <h, C> + D u, (b, g, ho, Lp, mi) in scratch."""
    y = p.mul_sum_state(h, C_t, p.scratch('y'))
    if D is not None:
        y.addcmul_(u_t, p.channel(D))
    return y


class SelectiveScanTorch(torch.autograd.Function):
    """The whole selective scan (mamba-ssm semantics) with a hand-written adjoint backward.

    Only dt (when it comes out of the softplus) is kept for the backward; the rest is
    recomputed there, which costs less than first-touching memory to keep it."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                differentiable):
        check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
        p = _Plan(u, A, B)
        keep_dt = delta_softplus and differentiable
        dt_out = torch.empty(p.tm, dtype=p.ct, device=p.device) if keep_dt else None
        dt, u_t, dtu, a, chunk_log2_a = _prepare(p, u, delta, A, delta_bias, delta_softplus,
                                                 dt_out=dt_out)
        h = _states(p, dtu, p.bc(B, 'B'), a, chunk_log2_a)
        out = p.from_tm(_outputs(p, h, p.bc(C, 'C'), u_t, D), p.ct)
        if z is not None:
            zc = z.to(p.ct)
            silu = torch.sigmoid(zc, out=p.scratch('P', shape=out.shape)).mul_(zc)
            out.mul_(silu)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, dt if keep_dt else None)
        ctx.plan, ctx.delta_softplus = p, delta_softplus
        out = out.to(u.dtype)
        if not return_last_state:
            return out
        last = h[:, :, :, p.l - 1].transpose(-1, -2).reshape(p.b, p.d, p.n).clone()
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_last=None):
        u, delta, A, B, C, D, z, delta_bias, dt = ctx.saved_tensors
        p, delta_softplus = ctx.plan, ctx.delta_softplus
        b, d, l, n, g = p.b, p.d, p.l, p.n, p.g  # noqa: E741
        need = ctx.needs_input_grad
        dt, u_t, dtu, a, chunk_log2_a = _prepare(p, u, delta, A, delta_bias, delta_softplus, dt)
        B_t, C_t = p.bc(B, 'B'), p.bc(C, 'C')
        h = _states(p, dtu, B_t, a, chunk_log2_a)
        gy = p.to_tm(grad_out, p.scratch('gy'))
        grad_z = None
        if z is not None:
            # P and lam are free until the reverse scan
            z_t = p.to_tm(z, p.scratch('P'))
            s = torch.sigmoid(z_t, out=p.scratch('lam'))
            if need[6]:  # d out / dz = y * silu'(z), silu' = s (1 + z (1 - s))
                y = _outputs(p, h, C_t, u_t, D)
                t = torch.mul(s, -1, out=p.scratch('gdt')).add_(1)
                t.mul_(z_t).add_(1).mul_(s).mul_(y).mul_(gy)
                grad_z = p.from_tm(t, z.dtype)
            gy.mul_(s.mul_(z_t))
        grad_D = None
        if D is not None and need[5]:
            grad_D = p.reduce_bl(torch.mul(gy, u_t, out=p.scratch('gdt'))).reshape(d).to(D.dtype)
        gy6 = gy.unsqueeze(-2)
        prod = p.scratch('prod', True)
        grad_C = p.reduce_group(torch.mul(gy6, h, out=prod)) if need[4] else None
        lam = torch.mul(gy6, C_t, out=p.scratch('lam', True))
        if grad_last is not None:
            lam[:, :, :, l - 1] += grad_last.to(p.ct).reshape(b, g, p.ho, p.mi, n).transpose(-1, -2)
        scan_chunks_(lam.view(p.chunks), a.view(p.chunks), chunk_log2_a, reverse=True)
        # G = d loss / d (dt A)_t = lam_t * a_t * h_{t-1}
        G = p.scratch('G', True)
        G[:, :, :, 0].zero_()
        if l > 1:
            torch.mul(lam[:, :, :, 1:l], h[:, :, :, :l - 1], out=G[:, :, :, 1:l])
            G[:, :, :, 1:l].mul_(a[:, :, :, 1:l])
        if p.Lp > l:
            G[:, :, :, l:].zero_()
        dt6 = dt.unsqueeze(-2)
        grad_A = None
        if need[2]:
            grad_A = p.reduce_bl(torch.mul(G, dt6, out=prod)).transpose(-1, -2).reshape(d, n)
            grad_A = grad_A.to(A.dtype)
        grad_B = p.reduce_group(torch.mul(lam, dtu.unsqueeze(-2), out=prod)) if need[3] else None
        g_dtu = p.mul_sum_state(lam, B_t, p.scratch('gdtu'))
        g_dt = p.mul_sum_state(G, p.state_param(A), p.scratch('gdt'))
        g_dt.addcmul_(g_dtu, u_t)
        g_u = g_dtu.mul_(dt)
        if D is not None:
            g_u.addcmul_(gy, p.channel(D))
        if delta_softplus:
            xpre = _pre_activation(p, delta, delta_bias)
            g_dt.mul_(torch.sigmoid(xpre, out=xpre))
        grad_bias = None
        if delta_bias is not None and need[7]:
            grad_bias = p.reduce_bl(g_dt).reshape(d).to(delta_bias.dtype)
        return (p.from_tm(g_u, u.dtype) if need[0] else None,
                p.from_tm(g_dt, delta.dtype) if need[1] else None,
                grad_A,
                p.bc_grad(grad_B, B) if grad_B is not None else None,
                p.bc_grad(grad_C, C) if grad_C is not None else None,
                grad_D, grad_z, grad_bias, None, None, None)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                         delta_softplus=False, return_last_state=False):
    """Selective scan (mamba-ssm semantics, see :func:`mmvision_ssm.ops.selective_scan`)."""
    if u.shape[-1] == 0:  # nothing to scan: the reference handles the empty case exactly
        from .scan_ref import selective_scan_ref
        return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus,
                                  return_last_state=return_last_state)
    # needs_input_grad does not see no_grad mode; skip keeping dt when nothing will differentiate
    differentiable = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    return SelectiveScanTorch.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    return_last_state, differentiable)
