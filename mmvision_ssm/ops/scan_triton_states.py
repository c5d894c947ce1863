"""Triton kernels for the plain selective scan with several states per channel (d_state N >= 2,
MambaVision's 8-16), forward and backward.

Why a second pair of kernels: the general kernels in :mod:`.scan_triton` walk the N states one
after the other, each with its own 1-D ``tl.associative_scan`` over the chunk and its own loads
of B and C -- N serial scans per chunk, which made MambaVision's n = 16 scan 0.43x mamba-ssm
(docs/benchmarks.md, run H). Here one program owns BLOCK_C channels of one batch element (one
B/C group) and scans a (BLOCK_C, N, BLOCK_L) tile in a single associative scan along the
tokens: the states run in parallel, B and C arrive as one 2-D load each, shared by the
program's channels (the kernels are L1-bound: run CI), the output is a reduction over the state
axis, and the backward sums its channels' gB / gC before the atomics.
Same layout contract and saved state as the general kernels (chunk-start states, fp32), so the
backward recomputes h chunk by chunk and runs the adjoint recurrence backwards in time. Triton
lays the tile's tokens across a warp's lanes, where a scan with ``reverse=True`` lowered to three
times the lane shuffles of a forward one (flips around it; offline PTX, most of the backward's
shuffles): the backward loads the adjoint's inputs last token to first, scans forward and flips
the one result back (n 16 f+b 0.346 -> 0.289 ms, run CN).
Long sequences with few programs (MambaVision's detection windows: 12544 tokens at a batch of
2 were 320 programs walking 784 chunks each) run segment-parallel: a summary pass gives each
segment's map of the state (forward) or of the adjoint (backward), and each program folds the
maps of the segments before it (after it, backward) into the state entering its own segment,
then walks the segment as above (f+b 1.67 -> 0.38 ms there, runs CR-CU).
"""
import torch
import triton
import triton.language as tl

from .common import cdiv
from .scan_triton import _combine, _dt_pair, _load_dt  # shared with the general kernels
from .triton_launch import FastLaunch


@triton.jit
def _program_setup(A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, HD, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
                   N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
                   HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """This program's BLOCK_C channels c (one B/C group: BLOCK_C divides HD) and batch b, the
    state/token index vectors, the channels' A rows (BLOCK_C, N), D and dt bias (BLOCK_C,; fp32,
    0 when absent), and the (N, 1) B/C row pointers of their group."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(1).to(tl.int64)
    grp = (tl.program_id(0) * BLOCK_C) // HD
    nidx = tl.arange(0, N)
    A_c = tl.load(A_ptr + c[:, None] * N + nidx[None, :]).to(tl.float32)
    Dv = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + c).to(tl.float32)
    bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c).to(tl.float32)
    B_base = B_ptr + b * sB_b + grp * sB_g + nidx[:, None] * sB_n
    C_base = C_ptr + b * sC_b + grp * sC_g + nidx[:, None] * sC_n
    return c, b, nidx, tl.arange(0, BLOCK_L), A_c, Dv, bias, B_base, C_base


@triton.jit
def _segment(NCHUNK, CPS):
    """This program's segment (grid axis 2) and its chunks [c_lo, c_hi)."""
    seg = tl.program_id(2)
    c_lo = seg * CPS
    return seg, c_lo, tl.minimum(NCHUNK, c_lo + CPS)


@triton.jit
def _states_fwd_summary_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, bias_ptr, sumP_ptr, sumS_ptr, L, CH, HD, SEG_L, NSEG,
        su_b, su_c, su_p, sdt_b, sdt_c, sdt_p, sB_b, sB_g, sB_n, sB_p,
        N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr):
    """Segment-parallel forward, first pass: each segment's map h_out = P h_in + S of the
    state, (b, CH, NSEG, N) fp32 -- P = exp(A sum(dt)), S = the state it leaves from h_in = 0.
    No scan: a tile's tokens reach its end through exp(A * (dt summed after them)) <= 1, one
    cumulative sum of dt and one reduction over the tokens (C, y and the states untouched)."""
    c, b, nidx, j, A_c, _, bias, B_base, _ = _program_setup(
        A_ptr, A_ptr, bias_ptr, B_ptr, B_ptr, HD, sB_b, sB_g, sB_n, sB_b, sB_g, sB_n,
        N, BLOCK_C, BLOCK_L, False, HAS_BIAS)
    seg = tl.program_id(2)
    s0 = seg * SEG_L
    h = tl.zeros((BLOCK_C, N), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t0 in range(s0, tl.minimum(L, s0 + SEG_L), BLOCK_L):
        t = t0 + j
        mc = (c[:, None] < CH) & (t < L)[None, :]
        dt = _load_dt(dt_ptr, b * sdt_b + c[:, None] * sdt_c + t[None, :] * sdt_p, mc,
                      bias[:, None], HAS_BIAS, SOFTPLUS)
        u = tl.load(u_ptr + b * su_b + c[:, None] * su_c + t[None, :] * su_p, mask=mc,
                    other=0.0).to(tl.float32)
        Bt = tl.load(B_base + t[None, :] * sB_p, mask=(nidx[:, None] < N) & (t < L)[None, :],
                     other=0.0).to(tl.float32)
        tot = tl.sum(dt, 1)
        after = tot[:, None] - tl.cumsum(dt, 1)  # dt summed over the tile's later tokens
        x = (dt * u)[:, None, :] * Bt[None, :, :]
        h = h * tl.exp(A_c * tot[:, None]) + tl.sum(
            tl.exp(A_c[:, :, None] * after[:, None, :]) * x, 2)
        dt_sum += tot
    off = ((b * CH + c[:, None]) * NSEG + seg) * N + nidx[None, :]
    tl.store(sumP_ptr + off, tl.exp(A_c * dt_sum[:, None]))
    tl.store(sumS_ptr + off, h)


@triton.jit
def _states_bwd_summary_kernel(
        dt_ptr, A_ptr, C_ptr, bias_ptr, z_ptr, gy_ptr, sumQ_ptr, sumG_ptr, L, CH, HD, SEG_L,
        NSEG, sdt_b, sdt_c, sdt_p, sC_b, sC_g, sC_n, sC_p, sz_b, sz_c, sz_p, sy_b, sy_c, sy_p,
        N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr,
        HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Segment-parallel backward, first pass: each segment's map of the adjoint, lam_s0 =
    Q lam_s1 + G (lam_t = C_t gy_t + a_{t+1} lam_{t+1}; s1 the next segment's first token):
    Q = exp(A * sum(dt over s0 + 1 .. s1)) (a = 1 past the end), G = lam_s0 from lam_s1 = 0.
    The tiles run last to first; like the forward summary, without a scan."""
    c, b, nidx, j, A_c, _, bias, _, C_base = _program_setup(
        A_ptr, A_ptr, bias_ptr, C_ptr, C_ptr, HD, sC_b, sC_g, sC_n, sC_b, sC_g, sC_n,
        N, BLOCK_C, BLOCK_L, False, HAS_BIAS)
    seg = tl.program_id(2)
    s0 = seg * SEG_L
    s1 = tl.minimum(L, s0 + SEG_L)
    dt_off = b * sdt_b + c * sdt_c
    # dt at the token after the tile (for its a): first the next segment's first token
    dt_next = _load_dt(dt_ptr, dt_off + s1 * sdt_p, (c < CH) & (s1 < L), bias, HAS_BIAS,
                       SOFTPLUS)
    lam = tl.zeros((BLOCK_C, N), dtype=tl.float32)
    q_log = tl.zeros((BLOCK_C,), dtype=tl.float32)
    ntile = tl.cdiv(s1 - s0, BLOCK_L)
    for k in range(ntile):
        t = s0 + (ntile - 1 - k) * BLOCK_L + j
        tmask = t < s1
        mc = (c[:, None] < CH) & tmask[None, :]
        dt = _load_dt(dt_ptr, dt_off[:, None] + t[None, :] * sdt_p, mc, bias[:, None],
                      HAS_BIAS, SOFTPLUS)
        gy = tl.load(gy_ptr + b * sy_b + c[:, None] * sy_c + t[None, :] * sy_p, mask=mc,
                     other=0.0).to(tl.float32)
        if HAS_Z:  # the gradient reaching the pre-gate output
            z = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + t[None, :] * sz_p, mask=mc,
                        other=0.0).to(tl.float32)
            gy = gy * z * tl.sigmoid(z)
        Ct = tl.load(C_base + t[None, :] * sC_p, mask=(nidx[:, None] < N) & tmask[None, :],
                     other=0.0).to(tl.float32)
        first = tl.sum(tl.where(j[None, :] == 0, dt, 0.0), 1)
        # a_{t0+1} ... a_t = exp(A * (dt summed over t0 + 1 .. t)); the whole tile and the
        # token after it: span
        since = tl.cumsum(dt, 1) - first[:, None]
        span = tl.sum(dt, 1) - first + dt_next
        lam = lam * tl.exp(A_c * span[:, None]) + tl.sum(
            tl.exp(A_c[:, :, None] * since[:, None, :]) * (gy[:, None, :] * Ct[None, :, :]), 2)
        q_log += span
        dt_next = first
    off = ((b * CH + c[:, None]) * NSEG + seg) * N + nidx[None, :]
    tl.store(sumQ_ptr + off, tl.exp(A_c * q_log[:, None]))
    tl.store(sumG_ptr + off, lam)


@triton.jit
def _states_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, st_ptr, last_ptr,
        sumP_ptr, sumS_ptr, L, CH, HD, NCHUNK, CPS, NSEG,
        su_b, su_c, su_p, sdt_b, sdt_c, sdt_p, sB_b, sB_g, sB_n, sB_p, sC_b, sC_g, sC_n, sC_p,
        sz_b, sz_c, sz_p, sy_b, sy_c, sy_p,
        N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, HAS_D: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
        STORE_LAST: tl.constexpr, HAS_H0: tl.constexpr):
    """(BLOCK_C, N, BLOCK_L) tiles: the channels share one load of the chunk's B and C. The
    program walks the CPS chunks of its segment (grid axis 2) from the state entering it: 0
    for the first, else (HAS_H0) the earlier segments' maps h -> P h + S (b, CH, NSEG, N)
    applied in order (a few dozen segments: cheaper than a launch of its own)."""
    c, b, nidx, j, A_c, Dv, bias, B_base, C_base = _program_setup(
        A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, HD, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
        N, BLOCK_C, BLOCK_L, HAS_D, HAS_BIAS)
    u_base = u_ptr + b * su_b + c[:, None] * su_c
    dt_base = dt_ptr + b * sdt_b + c[:, None] * sdt_c
    st_base = st_ptr + (b * CH + c[:, None]) * NCHUNK * N + nidx[None, :]
    seg, c_lo, c_hi = _segment(NCHUNK, CPS)
    h = tl.zeros((BLOCK_C, N), dtype=tl.float32)
    if HAS_H0:
        seg_base = (b * CH + c[:, None]) * NSEG * N + nidx[None, :]
        for k in range(seg):
            h = tl.load(sumP_ptr + seg_base + k * N) * h + tl.load(sumS_ptr + seg_base + k * N)
    for ci in range(c_lo, c_hi):
        t = ci * BLOCK_L + j
        tmask = t < L
        m2 = (nidx[:, None] < N) & tmask[None, :]
        mc = (c[:, None] < CH) & tmask[None, :]
        u = tl.load(u_base + t[None, :] * su_p, mask=mc, other=0.0).to(tl.float32)
        dt = _load_dt(dt_base, t[None, :] * sdt_p, mc, bias[:, None], HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_base + t[None, :] * sB_p, mask=m2, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[None, :] * sC_p, mask=m2, other=0.0).to(tl.float32)
        tl.store(st_base + ci * N, h)
        a = tl.exp(dt[:, None, :] * A_c[:, :, None])
        x = (dt * u)[:, None, :] * Bt[None, :, :]
        a_s, x_s = tl.associative_scan((a, x), 2, _combine)
        hs = x_s + a_s * h[:, :, None]
        y = tl.sum(hs * Ct[None, :, :], 1)
        h = tl.sum(tl.where(j[None, None, :] == BLOCK_L - 1, hs, 0.0), 2)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + t[None, :] * sz_p, mask=mc,
                        other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + b * sy_b + c[:, None] * sy_c + t[None, :] * sy_p,
                 y.to(y_ptr.dtype.element_ty), mask=mc)
    if STORE_LAST:
        if seg == NSEG - 1:
            tl.store(last_ptr + (b * CH + c[:, None]) * N + nidx[None, :], h)


@triton.jit
def _states_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, gy_ptr, st_ptr, glast_ptr,
        gu_ptr, gdt_ptr, gB_ptr, gC_ptr, gz_ptr, gA_ptr, gD_ptr, gbias_ptr, sumQ_ptr, sumG_ptr,
        L, CH, HD, NCHUNK, NG, CPS, NSEG,
        su_b, su_c, su_p, sdt_b, sdt_c, sdt_p, sB_b, sB_g, sB_n, sB_p, sC_b, sC_g, sC_n, sC_p,
        sz_b, sz_c, sz_p, sy_b, sy_c, sy_p,
        N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, HAS_D: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_GLAST: tl.constexpr, HAS_LAM0: tl.constexpr):
    """gu/gz/gdt in u's and dt's layouts; gB/gC (b, NG, N, L) fp32, summed over the program's
    BLOCK_C channels in registers, then over the programs with atomics (BLOCK_C times fewer);
    gA (CH, N), gD and gbias (CH) zeroed fp32, summed over the batch likewise. The program
    walks its segment's chunks last to first from the adjoint entering it from the end: the
    last state's gradient (or 0) through the later segments' maps lam -> Q lam + G
    (b, CH, NSEG, N; HAS_LAM0), last to first."""
    c, b, nidx, j, A_c, Dv, bias, B_base, C_base = _program_setup(
        A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, HD, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
        N, BLOCK_C, BLOCK_L, HAS_D, HAS_BIAS)
    u_base = u_ptr + b * su_b + c[:, None] * su_c
    dt_off = b * sdt_b + c[:, None] * sdt_c  # dt and gdt share a layout
    dt_base = dt_ptr + dt_off
    y_base = b * sy_b + c[:, None] * sy_c
    gbc_base = (b * NG + (tl.program_id(0) * BLOCK_C) // HD) * N * L + nidx[:, None] * L
    st_base = st_ptr + (b * CH + c[:, None]) * NCHUNK * N + nidx[None, :]
    seg, c_lo, c_hi = _segment(NCHUNK, CPS)
    if HAS_GLAST:
        lam = tl.load(glast_ptr + (b * CH + c[:, None]) * N + nidx[None, :]).to(tl.float32)
    else:
        lam = tl.zeros((BLOCK_C, N), dtype=tl.float32)
    if HAS_LAM0:
        seg_base = (b * CH + c[:, None]) * NSEG * N + nidx[None, :]
        for k in range(NSEG - 1 - seg):
            off = seg_base + (NSEG - 1 - k) * N
            lam = tl.load(sumQ_ptr + off) * lam + tl.load(sumG_ptr + off)
    # per token: the sum over the tokens (across lanes) once, after the loop
    gA_acc = tl.zeros((BLOCK_C, N, BLOCK_L), dtype=tl.float32)
    gD_acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=tl.float32)
    gbias_acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=tl.float32)
    for cc in range(c_hi - c_lo):
        ci = c_hi - 1 - cc
        t = ci * BLOCK_L + j
        tr = ci * BLOCK_L + (BLOCK_L - 1 - j)  # the chunk's tokens last to first
        tmask = t < L
        rmask = tr < L
        nmask = (tr + 1) < L
        m2 = (nidx[:, None] < N) & tmask[None, :]
        mc = (c[:, None] < CH) & tmask[None, :]
        mcr = (c[:, None] < CH) & rmask[None, :]
        mcn = (c[:, None] < CH) & nmask[None, :]
        u = tl.load(u_base + t[None, :] * su_p, mask=mc, other=0.0).to(tl.float32)
        dt_pre = tl.load(dt_base + t[None, :] * sdt_p, mask=mc, other=0.0).to(tl.float32)
        dtn = tl.load(dt_base + (tr[None, :] + 1) * sdt_p, mask=mcn, other=0.0).to(tl.float32)
        dt_pre, dt, dtn = _dt_pair(dt_pre, dtn, bias[:, None], HAS_BIAS, SOFTPLUS)
        dt = tl.where(mc, dt, 0.0)
        du = dt * u
        Bt = tl.load(B_base + t[None, :] * sB_p, mask=m2, other=0.0).to(tl.float32)
        h0 = tl.load(st_base + ci * N)
        x = du[:, None, :] * Bt[None, :, :]
        a_s, x_s = tl.associative_scan((tl.exp(dt[:, None, :] * A_c[:, :, None]), x), 2,
                                       _combine)
        hs = x_s + a_s * h0[:, :, None]
        gy = tl.load(gy_ptr + y_base + t[None, :] * sy_p, mask=mc, other=0.0).to(tl.float32)
        # the adjoint runs last token to first: its inputs are loaded in that order, so that
        # it is a forward scan along the lanes (a reverse scan costs three times the shuffles)
        gy_r = tl.load(gy_ptr + y_base + tr[None, :] * sy_p, mask=mcr, other=0.0).to(tl.float32)
        Ct_r = tl.load(C_base + tr[None, :] * sC_p, mask=(nidx[:, None] < N) & rmask[None, :],
                       other=0.0).to(tl.float32)
        if HAS_Z:  # the gate needs y before gating
            Ct = tl.load(C_base + t[None, :] * sC_p, mask=m2, other=0.0).to(tl.float32)
            y_pre = tl.sum(hs * Ct[None, :, :], 1)
            if HAS_D:
                y_pre += Dv[:, None] * u
            z_off = b * sz_b + c[:, None] * sz_c + t[None, :] * sz_p
            z = tl.load(z_ptr + z_off, mask=mc, other=0.0).to(tl.float32)
            sz = tl.sigmoid(z)
            gz = gy * y_pre * sz * (1.0 + z * (1.0 - sz))
            tl.store(gz_ptr + z_off, gz.to(gz_ptr.dtype.element_ty), mask=mc)
            gy = gy * z * sz
            z_r = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + tr[None, :] * sz_p, mask=mcr,
                          other=0.0).to(tl.float32)
            gy_r = gy_r * z_r * tl.sigmoid(z_r)
        # adjoint: lam_t = gy_t C_t + a_{t+1} lam_{t+1}  (a = 1 past the end)
        a_next = tl.where(mcn[:, None, :], tl.exp(dtn[:, None, :] * A_c[:, :, None]), 1.0)
        r_a, r_g = tl.associative_scan((a_next, gy_r[:, None, :] * Ct_r[None, :, :]), 2,
                                       _combine)
        lamt_r = r_g + r_a * lam[:, :, None]
        lam = tl.sum(tl.where(j[None, None, :] == BLOCK_L - 1, lamt_r, 0.0), 2)
        lamt = tl.flip(lamt_r, 2)  # back to first-to-last order
        g_loga = lamt * (hs - x)  # = lam_t * a_t * h_{t-1}
        gA_acc += g_loga * dt[:, None, :]
        g_du = tl.sum(lamt * Bt[None, :, :], 1)
        gdt = tl.sum(g_loga * A_c[:, :, None], 1) + g_du * u
        gu = g_du * dt
        if HAS_D:
            gD_acc += gy * u
            gu += gy * Dv[:, None]
        tl.atomic_add(gB_ptr + gbc_base + t[None, :], tl.sum(lamt * du[:, None, :], 0),
                      mask=m2, sem='relaxed')
        tl.atomic_add(gC_ptr + gbc_base + t[None, :], tl.sum(gy[:, None, :] * hs, 0), mask=m2,
                      sem='relaxed')
        if SOFTPLUS:
            gdt = gdt * tl.sigmoid(dt_pre)
        gdt = tl.where(mc, gdt, 0.0)
        gbias_acc += gdt
        tl.store(gdt_ptr + dt_off + t[None, :] * sdt_p, gdt.to(gdt_ptr.dtype.element_ty),
                 mask=mc)
        tl.store(gu_ptr + y_base + t[None, :] * sy_p, gu.to(gu_ptr.dtype.element_ty), mask=mc)
    # summed over the batch here: one zeroed buffer on the host instead of partials and sums
    tl.atomic_add(gA_ptr + c[:, None] * N + nidx[None, :], tl.sum(gA_acc, 2), sem='relaxed')
    if HAS_D:
        tl.atomic_add(gD_ptr + c, tl.sum(gD_acc, 1), sem='relaxed')
    if HAS_BIAS:
        tl.atomic_add(gbias_ptr + c, tl.sum(gbias_acc, 1), sem='relaxed')


# launched through FastLaunch: less host time per launch than the JIT's entry point
_states_fwd_launch = FastLaunch(_states_fwd_kernel)
_states_bwd_launch = FastLaunch(_states_bwd_kernel)
_fwd_summary_launch = FastLaunch(_states_fwd_summary_kernel)
_bwd_summary_launch = FastLaunch(_states_bwd_summary_kernel)

#: tokens a tile of the segment summaries (no scan there: longer tiles than the full kernels')
SUMMARY_BLOCK_L = 64


def _segments(cfg, nchunk):
    """(chunks a segment, segments, tokens a summary tile) of the launch: one segment of all
    the chunks unless ``cfg['seg']`` (chunks a segment) splits the sequence."""
    cps = cfg.get('seg') or nchunk
    if cps >= nchunk:
        return nchunk, 1, 0
    seg_l = cps * cfg['BLOCK_L']
    return cps, cdiv(nchunk, cps), min(SUMMARY_BLOCK_L, seg_l & -seg_l)  # a power of two


def launch_fwd(u3, dt3, A, B4, C4, D, bias, z3, y3, states, last, L, CH, HD, softplus, cfg):
    """u3/dt3/z3/y3: (b, CH, L) views; B4/C4 (b, G, N, L); states (b, 1, CH, chunks, N).
    Segment-parallel (``cfg['seg']``): the segments' summaries, then every segment in full
    from the state entering it."""
    bsz, N = u3.shape[0], A.shape[1]
    bc = cfg['BLOCK_D']
    cps, nseg, sum_l = _segments(cfg, states.shape[3])
    dummy = sumP = sumS = states
    if nseg > 1:
        sumP, sumS = torch.empty(2, bsz * CH, nseg, N, device=u3.device,
                                 dtype=torch.float32).unbind(0)
        _fwd_summary_launch[(CH // bc, bsz, nseg)](
            u3, dt3, A, B4, bias if bias is not None else dummy, sumP, sumS,
            L, CH, HD, cps * cfg['BLOCK_L'], nseg,
            *u3.stride(), *dt3.stride(), *B4.stride(),
            N=N, BLOCK_C=bc, BLOCK_L=sum_l, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
            num_warps=cfg['num_warps'])
    _states_fwd_launch[(CH // bc, bsz, nseg)](
        u3, dt3, A, B4, C4, D if D is not None else dummy, bias if bias is not None else dummy,
        z3 if z3 is not None else dummy, y3, states, last if last is not None else dummy,
        sumP, sumS,
        L, CH, HD, states.shape[3], cps, nseg,
        *u3.stride(), *dt3.stride(), *B4.stride(), *C4.stride(),
        *(z3.stride() if z3 is not None else (0, 0, 0)), *y3.stride(),
        N=N, BLOCK_C=bc, BLOCK_L=cfg['BLOCK_L'], HAS_D=D is not None,
        HAS_BIAS=bias is not None, HAS_Z=z3 is not None, SOFTPLUS=softplus,
        STORE_LAST=last is not None, HAS_H0=nseg > 1,
        num_warps=cfg['num_warps'])


def launch_bwd(u3, dt3, A, B4, C4, D, bias, z3, gy3, states, glast, L, CH, HD, softplus, cfg,
               gu3, gdt3, gz3, gB, gC, gA, gD, gbias):
    """Gradients into the given zeroed fp32 buffers: gB/gC (b, G, N, L), gA (CH, N), gD and
    gbias (CH). Segment-parallel like :func:`launch_fwd`, the adjoint's segments last to
    first."""
    bsz, N = u3.shape[0], A.shape[1]
    bc = cfg['BLOCK_D']
    cps, nseg, sum_l = _segments(cfg, states.shape[3])
    dummy = sumQ = sumG = gA
    if nseg > 1:
        sumQ, sumG = torch.empty(2, bsz * CH, nseg, N, device=u3.device,
                                 dtype=torch.float32).unbind(0)
        _bwd_summary_launch[(CH // bc, bsz, nseg)](
            dt3, A, C4, bias if bias is not None else dummy, z3 if z3 is not None else dummy,
            gy3, sumQ, sumG, L, CH, HD, cps * cfg['BLOCK_L'], nseg,
            *dt3.stride(), *C4.stride(), *(z3.stride() if z3 is not None else (0, 0, 0)),
            *gy3.stride(),
            N=N, BLOCK_C=bc, BLOCK_L=sum_l, HAS_BIAS=bias is not None, HAS_Z=z3 is not None,
            SOFTPLUS=softplus, num_warps=cfg['num_warps'])
    _states_bwd_launch[(CH // bc, bsz, nseg)](
        u3, dt3, A, B4, C4, D if D is not None else dummy, bias if bias is not None else dummy,
        z3 if z3 is not None else dummy, gy3, states, glast if glast is not None else dummy,
        gu3, gdt3, gB, gC, gz3 if gz3 is not None else dummy, gA, gD, gbias, sumQ, sumG,
        L, CH, HD, states.shape[3], B4.shape[1], cps, nseg,
        *u3.stride(), *dt3.stride(), *B4.stride(), *C4.stride(),
        *(z3.stride() if z3 is not None else (0, 0, 0)), *gy3.stride(),
        N=N, BLOCK_C=bc, BLOCK_L=cfg['BLOCK_L'], HAS_D=D is not None,
        HAS_BIAS=bias is not None, HAS_Z=z3 is not None, SOFTPLUS=softplus,
        HAS_GLAST=glast is not None, HAS_LAM0=nseg > 1,
        num_warps=cfg['num_warps'])
