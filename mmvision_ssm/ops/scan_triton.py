"""Fused selective-scan kernels in Triton (forward and backward), plain and cross (4-direction).

Imported only when the ``triton`` backend runs. One program owns one batch element and a block of
BLOCK_D channels; it walks the sequence in chunks of BLOCK_L tokens, runs the recurrence inside a
chunk with ``tl.associative_scan`` (one 2-D scan per state index) and carries the fp32 state
between chunks in registers. The forward writes the state at every chunk start (b, K, d, chunks, n),
so the backward recomputes h chunk by chunk while it runs the adjoint recurrence backwards.

Cross (VMamba) mode: K = 4 directions, each traversing the (h, w) map in its own order straight
from the spatial layout (no cross-scan copies). Two launch forms (``_pick_config`` chooses):
fused -- the four directions in the same program, summed in an fp32 scratch the program itself
owns (x and the scratch stay in L2); split -- one direction per program (grid axis 2), summed
into a zeroed fp32 scratch with atomics: 4x the programs, which is what small batches at high
resolution need (each program's walk over its sequence is serial, so few programs leave the
GPU idle). When even that leaves the GPU short of programs (a batch of 1-2 on the largest maps),
the chunk-parallel form runs one chunk per program in three passes: chunk summaries, a scan over
the chunks (``_chunk_carry_kernel``) for the state entering each chunk, then the outputs -- and
the same for the adjoint in the backward. Measurements: docs/benchmarks.md.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .common import as_grouped, cast, cdiv, next_pow2, sm_count
from .dispatch import opaque_to_compile
from .triton_launch import FastLaunch

# optional manual override for benchmarks and checks: dict(BLOCK_D=..., BLOCK_L=...,
# num_warps=..., bwd_num_warps=..., atomic=..., split=..., chunk_par=..., states=...,
# gluon=False or a layout dict for scan_gluon_cross); see _pick_config
CONFIG_OVERRIDE = {}

try:  # Gluon (triton.experimental.gluon; scan_gluon_cross.SUPPORTED gates the version): the
    # cross op's tokens-in-registers kernels
    from . import scan_gluon_cross
except ImportError:  # an older Triton: the kernels below run every shape
    scan_gluon_cross = None


@triton.jit
def _combine(a1, x1, a2, x2):
    # (a1, x1) then (a2, x2): h -> a2 * (a1 * h + x1) + x2
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _pixel(t, k: tl.constexpr, HH, WW, L, K: tl.constexpr):
    """Memory position of token t of direction k (identity for the plain scan)."""
    if K > 1:
        if k >= 2:
            t = L - 1 - t
        if k % 2 == 1:
            t = (t % HH) * WW + t // HH
    return t


@triton.jit
def _pixel_rt(t, k, HH, WW, L):
    """:func:`_pixel` for a direction k known only at run time (one direction per program)."""
    t = tl.where(k >= 2, L - 1 - t, t)
    return tl.where(k % 2 == 1, (t % HH) * WW + t // HH, t)


@triton.jit
def _softplus(x):
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _load_dt(dt_ptr, off, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt after the bias and the softplus, 0 where masked (a padding token leaves h as it is:
    a = 1, x = 0)."""
    dt = tl.load(dt_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += bias
    if SOFTPLUS:
        dt = _softplus(dt)
    return tl.where(mask, dt, 0.0)


@triton.jit
def _dt_pair(dt_pre, dtn, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """The backward's dt at t and at t + 1 (for a_{t+1}) after the bias and the softplus, and
    the pre-softplus dt at t (for the softplus derivative): (dt_pre, dt, dt_next)."""
    if HAS_BIAS:
        dt_pre += bias
        dtn += bias
    dt = dt_pre
    if SOFTPLUS:
        dt = _softplus(dt_pre)
        dtn = _softplus(dtn)
    return dt_pre, dt, dtn


@triton.jit
def _pick_state(x, sel):
    """Column n of a (BLOCK_D, N) tile as a (BLOCK_D,) vector (``sel``: nidx[None, :] == n)."""
    return tl.sum(tl.where(sel, x, 0.0), 1)


@triton.jit
def _state_row(ptr, base, n, s_n, p, s_p, tmask):
    """State n's B or C at the tokens' pixels ``p`` (fp32, 0 past the end); ``base`` is the
    offset of the program's (batch, group) slice."""
    return tl.load(ptr + base + n * s_n + p * s_p, mask=tmask, other=0.0).to(tl.float32)


@triton.jit
def _state_chunk(dt, du, A_k, carry, sel, B_ptr, base, n, s_n, p, s_p, tmask):
    """State n over the program's tokens from the chunk-start ``carry``:
    h_t = exp(dt_t A_n) h_{t-1} + du_t B_n(t), a (BLOCK_D, BLOCK_L) fp32 tile (the forward's
    outputs and the backward's recomputed pre-gate output both need it)."""
    An, h0 = _pick_state(A_k, sel), _pick_state(carry, sel)
    Bn = _state_row(B_ptr, base, n, s_n, p, s_p, tmask)
    a_s, x_s = tl.associative_scan((tl.exp(dt * An[:, None]), du * Bn[None, :]), 1, _combine)
    return x_s + a_s * h0[:, None]


@triton.jit
def _chunk_range(NCHUNK, MODE: tl.constexpr):
    """The chunks [c_lo, c_hi) a program walks -- all of them (MODE 0) or the single chunk of a
    chunk-parallel program, whose grid axis 2 is direction * NCHUNK + chunk -- and the
    direction index left on axis 2."""
    c_lo = 0
    c_hi = NCHUNK
    pid2 = tl.program_id(2)
    if MODE != 0:
        c_lo = pid2 % NCHUNK
        c_hi = c_lo + 1
        pid2 = pid2 // NCHUNK
    return c_lo, c_hi, pid2


@triton.jit
def _store_direction_sum(out_ptr, out_off, acc_ptr, acc_off, val, mask, k, K: tl.constexpr,
                         SPLIT_K: tl.constexpr):
    """Store ``val`` (fp32) of direction k, summed over the K directions: the plain scan (K = 1)
    writes it out; directions in different programs add it into the fp32 scratch with atomics;
    directions walked in turn by one program accumulate in the scratch, and the last one writes
    the sum out. (The forward's y and the backward's gradient of u.)"""
    if K == 1:
        tl.store(out_ptr + out_off, val.to(out_ptr.dtype.element_ty), mask=mask)
    elif SPLIT_K:
        tl.atomic_add(acc_ptr + acc_off, val, mask=mask, sem='relaxed')
    else:
        if k == 0:
            tl.store(acc_ptr + acc_off, val, mask=mask)
        elif k < K - 1:
            tl.store(acc_ptr + acc_off, tl.load(acc_ptr + acc_off, mask=mask, other=0.0) + val,
                     mask=mask)
        else:
            val = tl.load(acc_ptr + acc_off, mask=mask, other=0.0) + val
            tl.store(out_ptr + out_off, val.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scan_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr,
        y_ptr, acc_ptr, st_ptr, last_ptr, sumP_ptr, sumS_ptr,
        L, HH, WW, CH, HD, NCHUNK,
        su_b, su_c, su_p, sdt_b, sdt_k, sdt_c, sdt_p,
        sB_b, sB_g, sB_n, sB_p, sC_b, sC_g, sC_n, sC_p,
        sz_b, sz_c, sz_p, sy_b, sy_c, sy_p, sa_b, sa_c, sa_p,
        N: tl.constexpr, K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
        SOFTPLUS: tl.constexpr, STORE_LAST: tl.constexpr, SPLIT_K: tl.constexpr,
        KLOOP: tl.constexpr, MODE: tl.constexpr):
    """MODE 0: walk all chunks, carrying the state (and saving each chunk's start state).
    Chunk-parallel (one chunk per program, grid axis 2 = direction * NCHUNK + chunk):
    MODE 1 writes each chunk's summary from a zero start -- the product of its decays (sumP)
    and its end state (sumS) -- for :func:`_chunk_carry_kernel`; MODE 2 reads the start state
    that kernel wrote into ``st_ptr`` and computes the outputs."""
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = c < CH
    nidx = tl.arange(0, N)
    j = tl.arange(0, BLOCK_L)
    c_lo, c_hi, pid2 = _chunk_range(NCHUNK, MODE)
    for kk in tl.static_range(KLOOP):
        if SPLIT_K:  # one direction per program (grid axis 2); KLOOP == 1
            k = pid2
        else:  # all K directions in this program, unrolled
            k = kk
        if K == 1:
            grp = (pid_d * BLOCK_D) // HD  # BLOCK_D divides HD: one B/C group per program
        else:
            grp = k
        bc_B, bc_C = b * sB_b + grp * sB_g, b * sC_b + grp * sC_g  # this (batch, group)'s B/C
        arow = k * CH + c
        A_k = tl.load(A_ptr + arow[:, None] * N + nidx[None, :], mask=cmask[:, None], other=0.0)
        A_k = A_k.to(tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + arow, mask=cmask, other=0.0).to(tl.float32)
        bias = tl.zeros((BLOCK_D,), dtype=tl.float32)  # (unused without a bias)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + arow, mask=cmask, other=0.0).to(tl.float32)
        st_off = ((b * K + k) * CH + c[:, None]) * NCHUNK * N + nidx[None, :]
        st_base = st_ptr + st_off
        if MODE == 2:
            h_carry = tl.load(st_base + c_lo * N, mask=cmask[:, None], other=0.0)
        else:
            h_carry = tl.zeros((BLOCK_D, N), dtype=tl.float32)
        for ci in range(c_lo, c_hi):
            t = ci * BLOCK_L + j
            tmask = t < L
            if SPLIT_K:
                p = _pixel_rt(t, k, HH, WW, L)
            else:
                p = _pixel(t, k, HH, WW, L, K)
            m2 = cmask[:, None] & tmask[None, :]
            u = tl.load(u_ptr + b * su_b + c[:, None] * su_c + p[None, :] * su_p, mask=m2,
                        other=0.0).to(tl.float32)
            dt = _load_dt(dt_ptr, b * sdt_b + k * sdt_k + c[:, None] * sdt_c + p[None, :] * sdt_p,
                          m2, bias[:, None], HAS_BIAS, SOFTPLUS)
            du = dt * u
            if MODE == 0:
                tl.store(st_base + ci * N, h_carry, mask=cmask[:, None])
            if MODE == 1:  # the chunk's summary: its decay product and its end state from 0
                prod = tl.zeros((BLOCK_D, N), dtype=tl.float32)
                end = tl.zeros((BLOCK_D, N), dtype=tl.float32)
                is_end = j[None, :] == BLOCK_L - 1
                for n in tl.static_range(N):
                    sel = nidx[None, :] == n
                    An = _pick_state(A_k, sel)
                    Bn = _state_row(B_ptr, bc_B, n, sB_n, p, sB_p, tmask)
                    a_s, x_s = tl.associative_scan((tl.exp(dt * An[:, None]), du * Bn[None, :]),
                                                   1, _combine)
                    prod = tl.where(sel, tl.sum(tl.where(is_end, a_s, 0.0), 1)[:, None], prod)
                    end = tl.where(sel, tl.sum(tl.where(is_end, x_s, 0.0), 1)[:, None], end)
                tl.store(sumP_ptr + st_off + ci * N, prod, mask=cmask[:, None])
                tl.store(sumS_ptr + st_off + ci * N, end, mask=cmask[:, None])
            else:
                y = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
                new_carry = tl.zeros((BLOCK_D, N), dtype=tl.float32)
                for n in tl.static_range(N):
                    sel = nidx[None, :] == n
                    h = _state_chunk(dt, du, A_k, h_carry, sel, B_ptr, bc_B, n, sB_n, p, sB_p,
                                     tmask)
                    y += h * _state_row(C_ptr, bc_C, n, sC_n, p, sC_p, tmask)[None, :]
                    last = tl.sum(tl.where(j[None, :] == BLOCK_L - 1, h, 0.0), 1)
                    new_carry = tl.where(sel, last[:, None], new_carry)
                h_carry = new_carry
                if HAS_D:
                    y += Dv[:, None] * u
                if HAS_Z:
                    z = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + p[None, :] * sz_p, mask=m2,
                                other=0.0).to(tl.float32)
                    y = y * z * tl.sigmoid(z)
                _store_direction_sum(y_ptr, b * sy_b + c[:, None] * sy_c + p[None, :] * sy_p,
                                     acc_ptr, b * sa_b + c[:, None] * sa_c + p[None, :] * sa_p,
                                     y, m2, k, K, SPLIT_K)
        if STORE_LAST and MODE != 1:  # (chunk-parallel: the last chunk's program, MODE 2)
            tl.store(last_ptr + (b * CH + c[:, None]) * N + nidx[None, :], h_carry,
                     mask=cmask[:, None] & (c_hi == NCHUNK))
        if K > 1 and not SPLIT_K:
            tl.debug_barrier()  # the next direction reads scratch other threads wrote


@triton.jit
def _scan_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, gy_ptr, st_ptr, glast_ptr,
        gu_ptr, gacc_ptr, gdt_ptr, gB_ptr, gC_ptr, gz_ptr, gA_ptr, gD_ptr, gbias_ptr,
        lamc_ptr, sumQ_ptr, sumG_ptr,
        L, HH, WW, CH, HD, NCHUNK, NBLK, NG,
        su_b, su_c, su_p, sdt_b, sdt_k, sdt_c, sdt_p,
        sB_b, sB_g, sB_n, sB_p, sC_b, sC_g, sC_n, sC_p,
        sz_b, sz_c, sz_p, sy_b, sy_c, sy_p, sa_b, sa_c, sa_p,
        N: tl.constexpr, K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
        SOFTPLUS: tl.constexpr, HAS_GLAST: tl.constexpr, GBC_ATOMIC: tl.constexpr,
        SPLIT_K: tl.constexpr, KLOOP: tl.constexpr, MODE: tl.constexpr):
    """Gradients; y-shaped tensors (gy, gz, gu) use the sy_* strides of u's layout, dt-shaped ones
    (gdt) the sdt_* strides. gB/gC are summed with atomics (GBC_ATOMIC) or per-program partial
    sums; gA/gD/gbias (K * CH, N) / (K * CH) are zeroed fp32, summed with atomics.
    MODE 0 walks the chunks backwards carrying the adjoint state. Chunk-parallel (one chunk per
    program, as in the forward): MODE 1 writes each chunk's adjoint summary from a zero carry --
    the product of its decays (sumQ) and its first adjoint state (sumG); MODE 2 reads the carry
    :func:`_chunk_carry_kernel` wrote into ``lamc_ptr`` and computes the gradients."""
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = c < CH
    nidx = tl.arange(0, N)
    j = tl.arange(0, BLOCK_L)
    c_lo, c_hi, pid2 = _chunk_range(NCHUNK, MODE)
    for kk in tl.static_range(KLOOP):
        if SPLIT_K:  # one direction per program (grid axis 2); KLOOP == 1
            k = pid2
        else:  # all K directions in this program, unrolled
            k = kk
        if K == 1:
            grp = (pid_d * BLOCK_D) // HD
        else:
            grp = k
        bc_B, bc_C = b * sB_b + grp * sB_g, b * sC_b + grp * sC_g  # this (batch, group)'s B/C
        arow = k * CH + c
        A_k = tl.load(A_ptr + arow[:, None] * N + nidx[None, :], mask=cmask[:, None], other=0.0)
        A_k = A_k.to(tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + arow, mask=cmask, other=0.0).to(tl.float32)
        bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + arow, mask=cmask, other=0.0).to(tl.float32)
        st_off = ((b * K + k) * CH + c[:, None]) * NCHUNK * N + nidx[None, :]
        st_base = st_ptr + st_off
        if MODE == 2:
            lam_carry = tl.load(lamc_ptr + st_off + c_lo * N, mask=cmask[:, None], other=0.0)
        elif HAS_GLAST and MODE == 0:
            lam_carry = tl.load(glast_ptr + (b * CH + c[:, None]) * N + nidx[None, :],
                                mask=cmask[:, None], other=0.0).to(tl.float32)
        else:
            lam_carry = tl.zeros((BLOCK_D, N), dtype=tl.float32)
        gA_acc = tl.zeros((BLOCK_D, N), dtype=tl.float32)
        gD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        gbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        if GBC_ATOMIC:  # gB/gC (b, NG, N, L), summed over channel blocks with atomics
            gbc_base = (b * NG + grp) * N * L
        else:  # this program's partial-sum rows of gB/gC (b, NBLK, K, N, L)
            gbc_base = ((b * NBLK + pid_d) * K + k) * N * L
        for cc in range(c_lo, c_hi):
            if MODE == 0:
                ci = NCHUNK - 1 - cc
            else:
                ci = cc
            t = ci * BLOCK_L + j
            tmask = t < L
            if SPLIT_K:
                p = _pixel_rt(t, k, HH, WW, L)
                pn = _pixel_rt(t + 1, k, HH, WW, L)
            else:
                p = _pixel(t, k, HH, WW, L, K)
                pn = _pixel(t + 1, k, HH, WW, L, K)
            m2 = cmask[:, None] & tmask[None, :]
            nmask = (t + 1) < L
            mn = cmask[:, None] & nmask[None, :]
            u = tl.load(u_ptr + b * su_b + c[:, None] * su_c + p[None, :] * su_p, mask=m2,
                        other=0.0).to(tl.float32)
            dt_off = b * sdt_b + k * sdt_k + c[:, None] * sdt_c
            dt_pre = tl.load(dt_ptr + dt_off + p[None, :] * sdt_p, mask=m2, other=0.0)
            dt_pre = dt_pre.to(tl.float32)
            dtn = tl.load(dt_ptr + dt_off + pn[None, :] * sdt_p, mask=mn, other=0.0)
            dtn = dtn.to(tl.float32)
            dt_pre, dt, dtn = _dt_pair(dt_pre, dtn, bias[:, None], HAS_BIAS, SOFTPLUS)
            dt = tl.where(m2, dt, 0.0)
            du = dt * u
            y_off = b * sy_b + c[:, None] * sy_c + p[None, :] * sy_p
            gy = tl.load(gy_ptr + y_off, mask=m2, other=0.0).to(tl.float32)
            if MODE == 1:  # the chunk's adjoint summary from a zero carry
                if HAS_Z:
                    z = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + p[None, :] * sz_p,
                                mask=m2, other=0.0).to(tl.float32)
                    gy = gy * z * tl.sigmoid(z)
                prod = tl.zeros((BLOCK_D, N), dtype=tl.float32)
                first = tl.zeros((BLOCK_D, N), dtype=tl.float32)
                is_first = j[None, :] == 0
                for n in tl.static_range(N):
                    sel = nidx[None, :] == n
                    An = _pick_state(A_k, sel)
                    Cn = _state_row(C_ptr, bc_C, n, sC_n, p, sC_p, tmask)
                    a_next = tl.where(mn, tl.exp(dtn * An[:, None]), 1.0)
                    r_a, r_g = tl.associative_scan((a_next, gy * Cn[None, :]), 1, _combine,
                                                   reverse=True)
                    prod = tl.where(sel, tl.sum(tl.where(is_first, r_a, 0.0), 1)[:, None], prod)
                    first = tl.where(sel, tl.sum(tl.where(is_first, r_g, 0.0), 1)[:, None],
                                     first)
                tl.store(sumQ_ptr + st_off + ci * N, prod, mask=cmask[:, None])
                tl.store(sumG_ptr + st_off + ci * N, first, mask=cmask[:, None])
            else:
                h_start = tl.load(st_base + ci * N, mask=cmask[:, None], other=0.0)
                if HAS_Z:  # the gate needs y before gating: recompute it
                    y_pre = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
                    for n in tl.static_range(N):
                        sel = nidx[None, :] == n
                        h = _state_chunk(dt, du, A_k, h_start, sel, B_ptr, bc_B, n, sB_n, p,
                                         sB_p, tmask)
                        y_pre += h * _state_row(C_ptr, bc_C, n, sC_n, p, sC_p, tmask)[None, :]
                    if HAS_D:
                        y_pre += Dv[:, None] * u
                    z = tl.load(z_ptr + b * sz_b + c[:, None] * sz_c + p[None, :] * sz_p, mask=m2,
                                other=0.0).to(tl.float32)
                    sz = tl.sigmoid(z)
                    gz = gy * y_pre * sz * (1.0 + z * (1.0 - sz))
                    tl.store(gz_ptr + b * sz_b + c[:, None] * sz_c + p[None, :] * sz_p,
                             gz.to(gz_ptr.dtype.element_ty), mask=m2)
                    gy = gy * z * sz
                if HAS_D:
                    gD_acc += tl.sum(gy * u, 1)
                    gu = gy * Dv[:, None]
                else:
                    gu = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
                g_du = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
                gdt = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
                new_lam = tl.zeros((BLOCK_D, N), dtype=tl.float32)
                for n in tl.static_range(N):
                    sel = nidx[None, :] == n
                    An, h0 = _pick_state(A_k, sel), _pick_state(h_start, sel)
                    lam0 = _pick_state(lam_carry, sel)
                    Bn = _state_row(B_ptr, bc_B, n, sB_n, p, sB_p, tmask)
                    Cn = _state_row(C_ptr, bc_C, n, sC_n, p, sC_p, tmask)
                    x = du * Bn[None, :]
                    a_s, x_s = tl.associative_scan((tl.exp(dt * An[:, None]), x), 1, _combine)
                    h = x_s + a_s * h0[:, None]
                    # adjoint: lam_t = gy_t C_t + a_{t+1} lam_{t+1}  (a = 1 past the end)
                    a_next = tl.where(mn, tl.exp(dtn * An[:, None]), 1.0)
                    r_a, r_g = tl.associative_scan((a_next, gy * Cn[None, :]), 1, _combine,
                                                   reverse=True)
                    lam = r_g + r_a * lam0[:, None]
                    first = tl.sum(tl.where(j[None, :] == 0, lam, 0.0), 1)
                    new_lam = tl.where(sel, first[:, None], new_lam)
                    g_loga = lam * (h - x)  # = lam_t * a_t * h_{t-1}
                    gdt += g_loga * An[:, None]
                    gA_acc = tl.where(sel, gA_acc + tl.sum(g_loga * dt, 1)[:, None], gA_acc)
                    g_du += lam * Bn[None, :]
                    if GBC_ATOMIC:
                        tl.atomic_add(gB_ptr + gbc_base + n * L + p, tl.sum(lam * du, 0),
                                      mask=tmask, sem='relaxed')
                        tl.atomic_add(gC_ptr + gbc_base + n * L + p, tl.sum(gy * h, 0), mask=tmask,
                                      sem='relaxed')
                    else:
                        tl.store(gB_ptr + gbc_base + n * L + p, tl.sum(lam * du, 0), mask=tmask)
                        tl.store(gC_ptr + gbc_base + n * L + p, tl.sum(gy * h, 0), mask=tmask)
                lam_carry = new_lam
                gdt += g_du * u
                gu += g_du * dt
                if SOFTPLUS:
                    gdt = gdt * tl.sigmoid(dt_pre)
                gdt = tl.where(m2, gdt, 0.0)
                gbias_acc += tl.sum(gdt, 1)
                tl.store(gdt_ptr + dt_off + p[None, :] * sdt_p, gdt.to(gdt_ptr.dtype.element_ty),
                         mask=m2)
                _store_direction_sum(gu_ptr, y_off,
                                     gacc_ptr, b * sa_b + c[:, None] * sa_c + p[None, :] * sa_p,
                                     gu, m2, k, K, SPLIT_K)
        # the parameter gradients (K * CH, N) and (K * CH), summed over the batch (and the
        # chunks) here: one zeroed buffer on the host instead of partials and their sums
        if MODE != 1:
            # (the mask spelled out at gA's shape: Triton's interpreter applied the (1, 1) mask
            # of one channel a program to the first state only; compiled kernels were right)
            tl.atomic_add(gA_ptr + arow[:, None] * N + nidx[None, :], gA_acc,
                          mask=cmask[:, None] & (nidx[None, :] < N), sem='relaxed')
            if HAS_D:
                tl.atomic_add(gD_ptr + arow, gD_acc, mask=cmask, sem='relaxed')
            if HAS_BIAS:
                tl.atomic_add(gbias_ptr + arow, gbias_acc, mask=cmask, sem='relaxed')
        if K > 1 and not SPLIT_K:
            tl.debug_barrier()


@triton.jit
def _chunk_carry_kernel(P_ptr, S_ptr, init_ptr, out_ptr, NCHUNK, N: tl.constexpr,
                        BLOCK_C: tl.constexpr, REVERSE: tl.constexpr, HAS_INIT: tl.constexpr):
    """Chunk-parallel scans, middle pass: the state entering each chunk, from the chunk summaries
    (P, S) of one row (batch, direction, channel) of the (rows, NCHUNK, N) buffers: the
    recurrence over chunks, h_out = P * h_in + S, run as one associative scan per block of
    BLOCK_C chunks. Forward (the state): out[0] = 0, out[i] = h after chunk i - 1. Reverse (the
    adjoint): out[NCHUNK - 1] = init (the last state's gradient, (rows, N), or 0), out[i] = the
    adjoint entering chunk i + 1 from the end."""
    row = tl.program_id(0).to(tl.int64)
    base = row * NCHUNK * N
    nidx = tl.arange(0, N)
    rows = tl.arange(0, BLOCK_C)
    carry = tl.zeros((N,), dtype=tl.float32)
    if HAS_INIT:
        carry = tl.load(init_ptr + row * N + nidx).to(tl.float32)
    if REVERSE:
        tl.store(out_ptr + base + (NCHUNK - 1) * N + nidx, carry)
    else:
        tl.store(out_ptr + base + nidx, carry)
    for blk in range(tl.cdiv(NCHUNK, BLOCK_C)):
        if REVERSE:
            ci = NCHUNK - 1 - (blk * BLOCK_C + rows)  # reversed: row 0 is the latest chunk
        else:
            ci = blk * BLOCK_C + rows
        valid = (ci >= 0) & (ci < NCHUNK)
        off = base + ci[:, None] * N + nidx[None, :]
        P = tl.load(P_ptr + off, mask=valid[:, None], other=1.0)  # padding: the identity
        S = tl.load(S_ptr + off, mask=valid[:, None], other=0.0)
        Pc, Sc = tl.associative_scan((P, S), 0, _combine)
        h = Pc * carry[None, :] + Sc  # the state leaving chunk ci (the adjoint entering it)
        if REVERSE:
            nxt = ci - 1
        else:
            nxt = ci + 1
        ok = valid & (nxt >= 0) & (nxt < NCHUNK)
        tl.store(out_ptr + base + nxt[:, None] * N + nidx[None, :], h, mask=ok[:, None])
        carry = tl.sum(tl.where(rows[:, None] == BLOCK_C - 1, h, 0.0), 0)


# launched through FastLaunch: less host time per launch than the JIT's entry point
_scan_fwd_launch = FastLaunch(_scan_fwd_kernel)
_scan_bwd_launch = FastLaunch(_scan_bwd_kernel)
_chunk_carry_launch = FastLaunch(_chunk_carry_kernel)


#: the channels-first cross op splits its directions when it would launch fewer programs than
#: this per SM (each program walks its sequence serially: too few programs and the GPU idles --
#: VMamba at 1344x800 batch 2 launched 24 programs of 4 x 67 200 tokens each)
MIN_PROGRAMS_PER_SM = 2
#: channels-last cross op: the fewest programs per SM at which BLOCK_D channels per program are
#: used (else BLOCK_D halves): 8 channels need 2.5/SM (512^2 b8 stage 1: 384 programs on
#: 132 SMs, 8 channels 0.42 / 2.04 ms vs 4 channels 0.65 / 2.21), 4 need 1/SM
CL_PROGRAMS_PER_SM = {8: 2.5, 4: 1.0}


#: states-parallel kernels (N >= 2), any length: 16-token chunks in one warp, one channel a
#: program. GPU time, f+b, after the backward's adjoint became a forward scan over reversed
#: loads (run CO sweep, H100, bf16): MambaVision-T stage 3 (b64, 196 tokens) n 8 0.173 ms
#: (mamba-ssm 0.191), b8 x 160 channels x 4096 tokens n 16 0.972 ms, where the former long
#: tiles ((N, 256) over 4 warps, spilling in the backward) took 1.703 ms with the former kernels
#: and 3.117 with these. Longer chunks, more warps or more channels a program were slower.
STATES_TILE = dict(BLOCK_D=1, BLOCK_L=16, num_warps=1)
#: ... except two channels of one B/C group a program (they share the chunk's B/C loads and
#: pre-sum their gB/gC before the atomics) from this many states, when that still leaves
#: STATES_PAIR_PROGRAMS_PER_SM programs per SM: n 16 at MambaVision-T stage 3 0.292 against
#: 0.340 ms with one channel; at b8 x 4096 tokens (4.8 programs per SM) 1.177 against 0.972
STATES_PAIR_MIN_N = 16
STATES_PAIR_PROGRAMS_PER_SM = 16
#: long sequences with few programs (MambaVision's detection and segmentation windows,
#: 3136-12544 tokens at a batch of 2) run segment-parallel: each program one segment of
#: STATES_SEG_CHUNKS chunks (more for sequences of over STATES_SEG_MAX segments: each program
#: folds the summaries of the segments before it) from the state entering it -- when one
#: program per sequence would leave fewer than STATES_SEG_PROGRAMS_PER_SM programs per SM.
#: Segments take two channels a program when that still leaves
#: STATES_SEG_PAIR_PROGRAMS_PER_SM programs per SM. Run CR sweep (H100, GPU time,
#: f+b ms, n 8; one program per sequence / segments of 4, 8, 16, 32, 64, 128 chunks / 16 with
#: two channels): b2 x 160 x 12544 1.688 / 0.452 0.428 0.419 0.431 0.482 0.480 / 0.380 (59
#: pair programs per SM), b2 x 320 x 3136 0.391 / ... 0.230 ... / 0.210 (32 per SM), b2 x 160 x
#: 4096 0.476 / ... 0.160 ... / 0.209 (19 per SM), b8 x 160 x 4096 0.667 / ... 0.542 ... /
#: 0.482; n 16 there 0.984 / ... 1.003 ... / 0.896
STATES_SEG_CHUNKS = 16
STATES_SEG_MAX = 64
STATES_SEG_PROGRAMS_PER_SM = 32
STATES_SEG_PAIR_PROGRAMS_PER_SM = 24


#: chunk-parallel kernels (one chunk per program: summaries, a scan over the chunks, outputs)
#: when the chunk-serial form would launch fewer programs than this per SM -- small batches at
#: the largest maps, where each program would otherwise walk hundreds of chunks one by one.
#: Measured (H100, cross op, bf16; docs/benchmarks.md runs X3, X5), VMamba-T stage 1 at 1.5
#: serial programs/SM: f+b 2.54 ms against 5.35 for the best serial form at 2048x1024 b1, 2.66
#: against 3.19 at 1344x800 b2; from 2.9 programs/SM (1344x800 b2 stage 2, 512^2 b8 stage 1)
#: the serial form was as fast or faster (the chunk-parallel form reads the inputs twice: once
#: for the chunk summaries)
CHUNK_PAR_PROGRAMS_PER_SM = 2
#: the chunk-parallel launch: its programs are many anyway, so more channels per program
#: (longer contiguous runs of a channels-last token) and short chunks
CHUNK_PAR_BLOCKS = dict(BLOCK_D=16, BLOCK_L=64)
#: chunks per block of the middle pass's scan over chunks
CARRY_BLOCK_C = 256


#: SMs assumed under Triton's CPU interpreter (an H100/H200-sized GPU: the tests check the rule)
INTERPRETER_SMS = 132


def _pick_config(N, HD, L, K=1, channels_contiguous=False, bsz=None, device=None, CH=None):
    """Launch configuration: BLOCK_D (a power of two dividing HD), BLOCK_L, num_warps, whether
    gB/gC are reduced over channel blocks with atomics (else per-block rows summed after), and
    for the cross op (K = 4) ``split``: one direction per program, the four summed with fp32
    atomics, instead of one program walking all four.

    The defaults are the fastest forward+backward configurations of the sweeps recorded in
    docs/benchmarks.md: few channels per program and long chunks keep the most programs in
    flight, which is what this latency-bound loop over chunks needs.
    Cross op on channels-last maps (VMamba), any length: directions split, 8 channels per
    program (16-byte rows of bf16) when that still gives ``CL_PROGRAMS_PER_SM`` programs per
    SM, else 4, else 2 (run E sweep, H100: at 224^2 b128 8 channels cut stage 1 to 1.15 / 4.98 ms
    fwd / f+b from 1.60 / 6.34 with 4, and stage 3 (196 tokens) to 0.31 / 1.50 from 0.88 / 2.46
    with the former fused 2-channel form; 1344x800 b2 keeps 4).
    Channels-first cross op: directions split only when the fused form has too few programs.
    ``chunk_par``: when even that leaves fewer than ``CHUNK_PAR_PROGRAMS_PER_SM`` programs per
    SM over several chunks, the chunk-parallel kernels (``CHUNK_PAR_BLOCKS``; split directions).
    """
    split = False
    if K == 1 and N >= 2 and CONFIG_OVERRIDE.get('states', True):
        # several states (MambaVision): the states-parallel kernels (scan_triton_states.py),
        # BLOCK_D channels of one batch element per program, (BLOCK_D, N, BLOCK_L) tiles
        cfg = dict(STATES_TILE, states=True, atomic=True, split=False, seg=0)
        if bsz is not None:
            cfg.update(_states_launch(N, L, bsz, CH or HD, sm_count(device, INTERPRETER_SMS)))
        cfg.update({k: v for k, v in CONFIG_OVERRIDE.items()
                    if k in ('BLOCK_D', 'BLOCK_L', 'num_warps', 'seg')})
        while HD % cfg['BLOCK_D']:  # a program's channels share one B/C group
            cfg['BLOCK_D'] //= 2
        return cfg
    if K > 1 and channels_contiguous:  # cross op on channels-last maps: coalesce over d
        cfg = dict(BLOCK_D=8, BLOCK_L=min(256, max(16, next_pow2(L))), num_warps=4,
                   atomic=True)
        split = True
    elif L <= 1024:  # short sequences (MambaVision windows): a single chunk
        cfg = dict(BLOCK_D=2 if N <= 8 else 1, BLOCK_L=max(16, next_pow2(L)),
                   num_warps=4, atomic=True)
    else:
        cfg = dict(BLOCK_D=1, BLOCK_L=512 if N <= 4 else 256, num_warps=2 if N <= 4 else 4,
                   atomic=True)
    bd = cfg['BLOCK_D']
    while HD % bd:
        bd //= 2
    if K > 1 and bsz is not None:
        sms = sm_count(device, INTERPRETER_SMS)
        if channels_contiguous:
            while bd > 2 and bsz * cdiv(HD, bd) * K < CL_PROGRAMS_PER_SM[bd] * sms:
                bd //= 2
        elif bsz * cdiv(HD, bd) < MIN_PROGRAMS_PER_SM * sms:
            split = True
    cfg['BLOCK_D'], cfg['split'] = bd, split
    # 'states' only chooses between the two kernel families above: forced True where the
    # states-parallel kernels do not apply (one state, or the cross op's four directions) it
    # must not send these shapes to them (they ran there with wrong results)
    cfg.update({k: v for k, v in CONFIG_OVERRIDE.items() if k not in ('states', 'gluon')})
    bd = cfg['BLOCK_D']
    while HD % bd:
        bd //= 2
    cfg['BLOCK_D'] = bd
    cfg['split'] = bool(cfg['split']) and K > 1
    nchunk = cdiv(L, cfg['BLOCK_L'])
    chunk_par = cfg.get('chunk_par')
    if chunk_par is None:
        chunk_par = False
        if bsz is not None and nchunk > 1:
            programs = bsz * cdiv(CH or HD, cfg['BLOCK_D']) * (K if cfg['split'] else 1)
            chunk_par = programs < CHUNK_PAR_PROGRAMS_PER_SM * sm_count(device, INTERPRETER_SMS)
    cfg['chunk_par'] = bool(chunk_par) and nchunk > 1
    # 'gluon': False, or a (partial) layout dict; an override without it means the Triton
    # kernels' tiles, so those kernels
    gluon = CONFIG_OVERRIDE.get('gluon')
    use_gluon = gluon is not False and (gluon is not None or not CONFIG_OVERRIDE)
    layout = None
    if (use_gluon and K > 1 and channels_contiguous and not cfg['chunk_par']
            and scan_gluon_cross is not None
            and scan_gluon_cross.applies(N, L, CH or HD, device)):
        # VMamba's cross op (d_state 1, channels-last) at the shapes the chunk-serial split
        # form runs, unless too few programs: the Gluon kernels (docs/benchmarks.md, runs BE-BK,
        # CW-DE)
        layout = scan_gluon_cross.pick_layout(bsz, CH or HD, L,
                                              sm_count(device, INTERPRETER_SMS),
                                              gluon if isinstance(gluon, dict) else None)
    if layout is not None:
        cfg['gluon'] = layout
        cfg['BLOCK_D'], cfg['BLOCK_L'] = scan_gluon_cross.tile(layout)
        cfg['split'], cfg['atomic'] = True, True
    if cfg['chunk_par']:
        for key, val in CHUNK_PAR_BLOCKS.items():
            if key not in CONFIG_OVERRIDE:
                cfg[key] = val
        while HD % cfg['BLOCK_D']:
            cfg['BLOCK_D'] //= 2
        if K > 1:
            cfg['split'] = True  # chunks of a direction run in parallel: the directions must too
    return cfg


def _states_launch(N, L, bsz, CH, sms):
    """Channels a program (BLOCK_D) and chunks a segment (``seg``, 0: one segment) of the
    states-parallel kernels with their default 16-token chunks."""
    nchunk = cdiv(L, STATES_TILE['BLOCK_L'])
    seg = 0
    if bsz * CH < STATES_SEG_PROGRAMS_PER_SM * sms and nchunk > STATES_SEG_CHUNKS:
        seg = max(STATES_SEG_CHUNKS, next_pow2(cdiv(nchunk, STATES_SEG_MAX)))
    pair_programs = bsz * cdiv(CH, 2) * (cdiv(nchunk, seg) if seg else 1)
    pair = pair_programs >= STATES_SEG_PAIR_PROGRAMS_PER_SM * sms if seg else \
        N >= STATES_PAIR_MIN_N and pair_programs >= STATES_PAIR_PROGRAMS_PER_SM * sms
    return dict(BLOCK_D=2 if pair else 1, seg=seg)


_CONFIG_CACHE = {}


def _config_for(u3, dt4, N, HD, K):
    """:func:`_pick_config` for the kernels' views u3 (b, CH, L) and dt4 (b, K, CH, L) (or
    (b, CH, L) for one direction), cached per shape while no override is set (the rule is
    ~60 us of Python per call on the GPU machines' hosts; the returned dict is shared and
    never modified)."""
    bsz, CH, L = u3.shape
    contiguous = dt4.stride(-2) == 1
    if CONFIG_OVERRIDE:
        return _pick_config(N, HD, L, K, contiguous, bsz=bsz, device=u3.device, CH=CH)
    key = (N, HD, L, K, contiguous, bsz, u3.device, CH)
    cfg = _CONFIG_CACHE.get(key)
    if cfg is None:
        if len(_CONFIG_CACHE) > 4096:  # e.g. detection's many image sizes: bounded
            _CONFIG_CACHE.clear()
        cfg = _CONFIG_CACHE[key] = _pick_config(N, HD, L, K, contiguous, bsz=bsz,
                                                device=u3.device, CH=CH)
    return cfg


def _strides3(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _dt_strides(dt):
    """The kernels' (b, K, CH, L) strides of dt: a plain scan passes its (b, CH, L) delta as it
    is (K = 1), without a view per call."""
    s = dt.stride()
    return s if len(s) == 4 else (s[0], 0, s[1], s[2])


def _launch_carry(P, S, init, out, reverse):
    """The middle pass of the chunk-parallel kernels: ``out`` (rows, NCHUNK, N) from the chunk
    summaries P, S (same layout) and the optional init (rows, N)."""
    nchunk, N = P.shape[-2], P.shape[-1]
    rows = P.numel() // (nchunk * N)
    _chunk_carry_launch[(rows,)](
        P, S, init if init is not None else P, out, nchunk, N=N,
        BLOCK_C=min(CARRY_BLOCK_C, max(16, next_pow2(nchunk))), REVERSE=reverse,
        HAS_INIT=init is not None, num_warps=4)


def _launch_fwd(u3, dt4, A, B4, C4, D, bias, z3, y3, acc3, L, HH, WW, CH, HD, K, softplus,
                want_last):
    """u3/z3/y3/acc3: (b, CH, L) views; dt4 (b, K, CH, L), or (b, CH, L) when K = 1; B4/C4
    (b, G, N, L) (any strides)."""
    bsz = u3.shape[0]
    N = A.shape[1]
    cfg = _config_for(u3, dt4, N, HD, K)
    bd, bl, split = cfg['BLOCK_D'], cfg['BLOCK_L'], cfg['split']
    if split:  # the directions add into acc3 with atomics
        acc3.zero_()
    nchunk = cdiv(L, bl)
    states = torch.empty(bsz, K, CH, nchunk, N, device=u3.device, dtype=torch.float32)
    last = torch.empty(bsz, CH, N, device=u3.device, dtype=torch.float32) if want_last else states
    if cfg.get('gluon'):
        scan_gluon_cross.launch_fwd(u3, dt4, A, B4, C4, D, bias, acc3, states, L, HH, WW, CH,
                                    softplus, cfg['gluon'])
        y3.copy_(acc3)
        return states, None, cfg
    if cfg.get('states'):
        from . import scan_triton_states
        scan_triton_states.launch_fwd(u3, dt4, A, B4, C4, D, bias, z3, y3, states,
                                      last if want_last else None, L, CH, HD, softplus, cfg)
        return states, (last if want_last else None), cfg
    dummy = states

    def launch(mode, chunks, sumP=dummy, sumS=dummy):
        _scan_fwd_launch[(cdiv(CH, bd), bsz, (K if split else 1) * chunks)](
            u3, dt4, A, B4, C4, D if D is not None else dummy,
            bias if bias is not None else dummy, z3 if z3 is not None else dummy, y3,
            acc3 if acc3 is not None else dummy, states, last, sumP, sumS,
            L, HH, WW, CH, HD, nchunk,
            *_strides3(u3), *_dt_strides(dt4), *B4.stride(), *C4.stride(),
            *(_strides3(z3) if z3 is not None else (0, 0, 0)), *_strides3(y3),
            *(_strides3(acc3) if acc3 is not None else (0, 0, 0)),
            N=N, K=K, BLOCK_D=bd, BLOCK_L=bl, HAS_D=D is not None, HAS_BIAS=bias is not None,
            HAS_Z=z3 is not None, SOFTPLUS=softplus, STORE_LAST=want_last, SPLIT_K=split,
            KLOOP=1 if split else K, MODE=mode, num_warps=cfg['num_warps'])

    if cfg['chunk_par']:  # chunk summaries -> the state entering each chunk -> outputs
        sumP, sumS = torch.empty_like(states), torch.empty_like(states)
        launch(1, nchunk, sumP, sumS)
        _launch_carry(sumP, sumS, None, states, reverse=False)
        launch(2, nchunk)
    else:
        launch(0, 1)
    if split:
        y3.copy_(acc3)
    return states, (last if want_last else None), cfg


def _grad_buffers(bsz, ng, N, L, KCH, atomic, nblk, K, dev):
    """fp32 gradient buffers for the backward kernels: gB, gC, gA (KCH, N), gD, gbias (KCH),
    and gBC, gB and gC stacked: (2, b, ng, N, L) zeroed when the kernels sum them with atomics,
    else per channel block (2, b, nblk, K, N, L), for the caller to sum. One zeroed allocation
    holds gA, gD, gbias (and the atomics' gB, gC) -- on the slow hosts of the GPU machines every
    separate allocation, zero fill and sum cost 10-40 us of the host time that bounds a small
    scan's step."""
    if atomic:
        bgnl = bsz * ng * N * L
        flat = torch.zeros(2 * bgnl + KCH * (N + 2), device=dev, dtype=torch.float32)
        # (split_with_sizes: Tensor.split is a Python wrapper with symbolic-shape checks)
        gB, gC, gA, gD, gbias = flat.split_with_sizes((bgnl, bgnl, KCH * N, KCH, KCH))
        return gB, gC, gA, gD, gbias, flat[:2 * bgnl].view(2, bsz, ng, N, L)
    gBC = torch.empty(2, bsz, nblk, K, N, L, device=dev, dtype=torch.float32)
    gA, gD, gbias = torch.zeros(KCH * (N + 2), device=dev, dtype=torch.float32).split_with_sizes(
        (KCH * N, KCH, KCH))
    return gBC[0], gBC[1], gA, gD, gbias, gBC


def _launch_bwd(u3, dt4, A, B4, C4, D, bias, z3, gy3, states, glast, L, HH, WW, CH, HD, K,
                softplus, cfg, gu3, gdt4, gz3):
    """Gradients: gu3, gdt4, gz3 written; returns gBC (2, b, NG, N, L) -- gB and gC stacked --
    and gA (K * CH, N), gD, gbias (K * CH), all fp32."""
    bsz = u3.shape[0]
    N = A.shape[1]
    bd, bl = cfg['BLOCK_D'], cfg['BLOCK_L']
    nchunk = states.shape[3]
    nblk = cdiv(CH, bd)
    dev = u3.device
    ng = B4.shape[1]
    atomic, split = cfg['atomic'], cfg['split']
    gB, gC, gA, gD, gbias, gBC = _grad_buffers(bsz, ng, N, L, K * CH, atomic, nblk, K, dev)
    # (views and casts of the results come after the launches: the host work before a launch
    # is time the GPU waits in an eager step)
    if cfg.get('states'):
        from . import scan_triton_states
        scan_triton_states.launch_bwd(u3, dt4, A, B4, C4, D, bias, z3, gy3, states, glast,
                                      L, CH, HD, softplus, cfg, gu3, gdt4, gz3, gB, gC,
                                      gA, gD, gbias)
        return gBC, gA.view(K * CH, N), gD, gbias
    gacc = None
    if split:  # fp32 sum of the directions' gu by atomics (zeroed), in gu3's layout
        gacc = torch.zeros(bsz, L, CH, device=dev, dtype=torch.float32).transpose(1, 2) \
            if gu3.stride(1) == 1 else torch.zeros(bsz, CH, L, device=dev, dtype=torch.float32)
    elif K > 1:
        gacc = torch.empty(bsz, CH, L, device=dev, dtype=torch.float32)
    if cfg.get('gluon'):
        scan_gluon_cross.launch_bwd(u3, dt4, A, B4, C4, D, bias, gy3, states, gacc, gdt4, gB,
                                    gC, gA, gD, gbias, L, HH, WW, CH, softplus, cfg['gluon'])
        gu3.copy_(gacc)
        return gBC, gA.view(K * CH, N), gD, gbias
    dummy = gA

    def launch(mode, chunks, lamc=dummy, sumQ=dummy, sumG=dummy):
        _scan_bwd_launch[(nblk, bsz, (K if split else 1) * chunks)](
            u3, dt4, A, B4, C4, D if D is not None else dummy,
            bias if bias is not None else dummy, z3 if z3 is not None else dummy, gy3, states,
            glast if glast is not None else dummy, gu3, gacc if gacc is not None else dummy,
            gdt4, gB, gC, gz3 if gz3 is not None else dummy, gA, gD, gbias, lamc, sumQ, sumG,
            L, HH, WW, CH, HD, nchunk, nblk, ng,
            *_strides3(u3), *_dt_strides(dt4), *B4.stride(), *C4.stride(),
            *(_strides3(z3) if z3 is not None else (0, 0, 0)), *_strides3(gy3),
            *(_strides3(gacc) if gacc is not None else (0, 0, 0)),
            N=N, K=K, BLOCK_D=bd, BLOCK_L=bl, HAS_D=D is not None, HAS_BIAS=bias is not None,
            HAS_Z=z3 is not None, SOFTPLUS=softplus, HAS_GLAST=glast is not None,
            GBC_ATOMIC=atomic, SPLIT_K=split, KLOOP=1 if split else K, MODE=mode,
            num_warps=cfg.get('bwd_num_warps', cfg['num_warps']))

    if cfg['chunk_par']:  # adjoint summaries -> the adjoint entering each chunk -> gradients
        sumQ, sumG, lamc = (torch.empty_like(states) for _ in range(3))
        launch(1, nchunk, sumQ=sumQ, sumG=sumG)
        _launch_carry(sumQ, sumG, glast, lamc, reverse=True)
        launch(2, nchunk, lamc=lamc)
    else:
        launch(0, 1)
    if split:
        gu3.copy_(gacc)
    if not atomic:
        if K == 1:  # plain scan: channel blocks of one group are consecutive
            gBC = gBC.view(2, bsz, ng, nblk // ng, N, L).sum(3)
        else:
            gBC = gBC.sum(2)
    return gBC, gA.view(K * CH, N), gD, gbias


# ----------------------------------------------------------------------------- plain scan


class _SelectiveScanTriton(torch.autograd.Function):
    """Inputs as :func:`mmvision_ssm.ops.selective_scan` checked them. Host time matters here:
    at VMamba's shapes a forward+backward is ~1 ms of GPU work, and on the GPU machines' slow
    hosts each tensor operation around the kernels costs 10-40 us, so this does as few as it can
    (docs/benchmarks.md, runs CB–CH)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        d, l = u.shape[1], u.shape[2]  # noqa: E741
        g = 1 if B.dim() == 3 else B.shape[1]
        u, delta = u.contiguous(), delta.contiguous()
        z = z.contiguous() if z is not None else None
        Bg, Cg = as_grouped(B, 'B').contiguous(), as_grouped(C, 'C').contiguous()
        Af, Df, biasf = _f32(A), _f32(D), _f32(delta_bias)
        y = torch.empty_like(u)
        states, last, cfg = _launch_fwd(u, delta, Af, Bg, Cg, Df, biasf, z, y, None,
                                        l, 1, 1, d, d // g, 1, delta_softplus, return_last_state)
        ctx.save_for_backward(u, delta, Af, Bg, Cg, Df, z, biasf, states)
        ctx.meta = (delta_softplus, cfg, g, B.dim(), A.dtype, B.dtype, C.dtype,
                    None if D is None else D.dtype,
                    None if delta_bias is None else delta_bias.dtype)
        ctx.set_materialize_grads(False)  # an unused last state brings no gradient
        return (y, last) if return_last_state else y

    @staticmethod
    def backward(ctx, gy, glast=None):
        u, delta, Af, Bg, Cg, Df, z, biasf, states = ctx.saved_tensors
        softplus, cfg, g, bdim, a_dt, b_dt, c_dt, d_dt, bias_dt = ctx.meta
        d, l = u.shape[1], u.shape[2]  # noqa: E741
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        glast = glast.float().contiguous() if glast is not None else None
        gu = torch.empty_like(u)
        gdelta = torch.empty_like(delta)
        gz = torch.empty_like(z) if z is not None else None
        gBC, gA, gD, gbias = _launch_bwd(
            u, delta, Af, Bg, Cg, Df, biasf, z, gy, states, glast,
            l, 1, 1, d, d // g, 1, softplus, cfg, gu, gdelta, gz)
        gB, gC = _cast_pair(gBC[:, :, 0] if bdim == 3 else gBC, b_dt, c_dt)
        return (gu, gdelta, cast(gA, a_dt), gB, gC, None if Df is None else cast(gD, d_dt), gz,
                None if biasf is None else cast(gbias, bias_dt), None, None)


def _f32(t):
    """A parameter (A, D, delta_bias) as the kernels read it: contiguous fp32 (None stays)."""
    return None if t is None else cast(t, torch.float32).contiguous()


def _cast_pair(pair, dtype0, dtype1):
    """pair[0] in dtype0 and pair[1] in dtype1, with one cast when the dtypes agree."""
    if dtype0 == dtype1:
        return cast(pair, dtype0).unbind(0)
    return cast(pair[0], dtype0), cast(pair[1], dtype1)


@opaque_to_compile
def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False):
    """The Triton backend of :func:`mmvision_ssm.ops.selective_scan`, which checks the inputs
    (this does not: it runs once per scan call)."""
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      return_last_state)


# ----------------------------------------------------------------------------- cross scan


def _map_view(t, channels_last):
    """The kernels' (b, CH, L) view of a contiguous x-shaped map: (b, h, w, CH) or (b, CH, h, w)."""
    if channels_last:
        bsz, hh, ww, ch = t.shape
        return t.view(bsz, hh * ww, ch).transpose(1, 2)
    bsz, ch, hh, ww = t.shape
    return t.view(bsz, ch, hh * ww)


def _dir_view(t, channels_last):
    """The kernels' (b, 4, c, L) view of a contiguous per-direction map (delta, B, C):
    (b, h, w, 4, c) or (b, 4, c, h, w)."""
    if channels_last:
        bsz, hh, ww, k, c = t.shape
        return t.view(bsz, hh * ww, k, c).permute(0, 2, 3, 1)
    bsz, k, c, hh, ww = t.shape
    return t.view(bsz, k, c, hh * ww)


def cross_states_shape(x, delta, A, B, C, channels_last):
    """Shape of the saved chunk-start states of :func:`cross_forward` (for fake tensors)."""
    x3, dt4 = _map_view(x, channels_last), _dir_view(delta, channels_last)
    bsz, d, L = x3.shape
    n = A.shape[1]
    return (bsz, 4, d, cdiv(L, _config_for(x3, dt4, n, d, 4)['BLOCK_L']), n)


def cross_forward(x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last):
    """The fused cross scan's forward on contiguous inputs as
    :func:`mmvision_ssm.ops.cross_selective_scan` checked them: (y, fp32 chunk-start states)."""
    hh, ww = x.shape[1:3] if channels_last else x.shape[2:]
    x3, dt4 = _map_view(x, channels_last), _dir_view(delta, channels_last)
    B4, C4 = _dir_view(B, channels_last), _dir_view(C, channels_last)
    d, L = x3.shape[1], x3.shape[2]
    y = torch.empty_like(x)
    acc = torch.empty(x.shape, device=x.device, dtype=torch.float32)  # the fp32 scratch
    states, _, _ = _launch_fwd(x3, dt4, _f32(A), B4, C4, _f32(D), _f32(delta_bias), None,
                               _map_view(y, channels_last), _map_view(acc, channels_last),
                               L, hh, ww, d, d, 4, delta_softplus, False)
    return y, states


def cross_backward(gy, x, delta, A, B, C, D, delta_bias, states, delta_softplus, channels_last):
    """Gradients of :func:`cross_forward` (contiguous gy): x, delta, A, B, C, D, delta_bias
    (None for an absent D / delta_bias), each in its input's dtype."""
    hh, ww = x.shape[1:3] if channels_last else x.shape[2:]
    x3, dt4 = _map_view(x, channels_last), _dir_view(delta, channels_last)
    B4, C4 = _dir_view(B, channels_last), _dir_view(C, channels_last)
    d, L, n = x3.shape[1], x3.shape[2], A.shape[1]
    gx, gdelta = torch.empty_like(x), torch.empty_like(delta)
    gx3, gdt4 = _map_view(gx, channels_last), _dir_view(gdelta, channels_last)
    gy3 = _map_view(gy, channels_last)
    gBC, gA, gD, gbias = _launch_bwd(
        x3, dt4, _f32(A), B4, C4, _f32(D), _f32(delta_bias), None, gy3, states, None,
        L, hh, ww, d, d, 4, delta_softplus, _config_for(x3, dt4, n, d, 4), gx3, gdt4, None)
    if channels_last and B.dtype == C.dtype:  # (2, b, 4, n, L) -> (2, b, h, w, 4, n) and the
        # cast in one copy
        gBC = torch.empty((2,) + B.shape, device=x.device, dtype=B.dtype).copy_(
            gBC.permute(0, 1, 4, 2, 3).view((2,) + B.shape))
        gB, gC = gBC.unbind(0)
    elif channels_last:
        gB = torch.empty(B.shape, device=x.device, dtype=B.dtype).copy_(
            gBC[0].permute(0, 3, 1, 2).view(B.shape))
        gC = torch.empty(C.shape, device=x.device, dtype=C.dtype).copy_(
            gBC[1].permute(0, 3, 1, 2).view(C.shape))
    else:
        gB, gC = _cast_pair(gBC.view((2,) + B.shape), B.dtype, C.dtype)
    return (gx, gdelta, cast(gA, A.dtype), gB, gC,
            None if D is None else cast(gD, D.dtype),
            None if delta_bias is None else cast(gbias, delta_bias.dtype))


class _CrossScanTriton(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last):
        x, delta, B, C = x.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
        y, states = cross_forward(x, delta, A, B, C, D, delta_bias, delta_softplus,
                                  channels_last)
        ctx.save_for_backward(x, delta, A, B, C, D, delta_bias, states)
        ctx.meta = (delta_softplus, channels_last)
        return y

    @staticmethod
    def backward(ctx, gy):
        return (*cross_backward(gy.contiguous(), *ctx.saved_tensors, *ctx.meta), None, None)


def _dt_projection(dts, weight):
    """delta (b, h, w, 4, d) = dts (b, h, w, 4 r) @ weight (4 d, 4 r)^T, per pixel, in dts'
    dtype whatever the autocast state: the weight rounded to it, as autocast's linear would
    for bf16 dts (the forward runs under the caller's autocast, the backward outside it: both
    must build the same delta)."""
    with torch.autocast(dts.device.type, enabled=False):
        return F.linear(dts, weight.to(dts.dtype)).unflatten(-1, (4, -1))


class _CrossScanDtProjTriton(torch.autograd.Function):
    """The channels-last cross op with delta = dts @ weight^T made inside: the backward keeps
    dts (4 dt_rank values a pixel) and recomputes delta (4 d values a pixel) with the same GEMM
    instead of keeping it -- VMamba-T keeps 4 maps of d less per block."""

    @staticmethod
    def forward(ctx, x, dts, weight, A, B, C, D, delta_bias, delta_softplus):
        # the weight in dts' dtype: what autocast's linear multiplies bf16 dts with, and what
        # the backward's GEMM uses to rebuild delta bit for bit
        w = weight.to(dts.dtype)
        x, dts, B, C = x.contiguous(), dts.contiguous(), B.contiguous(), C.contiguous()
        y, states = cross_forward(x, _dt_projection(dts, w), A, B, C, D, delta_bias,
                                  delta_softplus, True)
        ctx.save_for_backward(x, dts, w, A, B, C, D, delta_bias, states)
        ctx.meta = (delta_softplus, weight.dtype)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, dts, w, A, B, C, D, delta_bias, states = ctx.saved_tensors
        softplus, w_dtype = ctx.meta
        gx, gdelta, gA, gB, gC, gD, gbias = cross_backward(
            gy.contiguous(), x, _dt_projection(dts, w), A, B, C, D, delta_bias, states,
            softplus, True)
        gdelta = gdelta.flatten(-2)  # (b, h, w, 4 d)
        gdts = gdelta @ w
        gw = (gdelta.flatten(0, -2).t() @ dts.flatten(0, -2)).to(w_dtype)
        return gx, gdts, gw, gA, gB, gC, gD, gbias, None


def cross_selective_scan_dt_proj_triton(x, dts, dt_weight, A, B, C, D=None, delta_bias=None,
                                        delta_softplus=True):
    """:func:`cross_selective_scan_triton` on channels-last maps with delta = dts @ dt_weight^T
    (see :class:`_CrossScanDtProjTriton`); under torch.compile the projection and the cross op's
    custom op are left to the compiler."""
    if torch.compiler.is_compiling():
        return cross_selective_scan_triton(x, _dt_projection(dts, dt_weight), A, B, C, D=D,
                                           delta_bias=delta_bias, delta_softplus=delta_softplus,
                                           channels_last=True)
    return _CrossScanDtProjTriton.apply(x, dts, dt_weight, A, B, C, D, delta_bias,
                                        delta_softplus)


def cross_selective_scan_triton(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                                channels_last=False):
    if torch.compiler.is_compiling():  # one opaque custom op in the graph: no graph break
        from .scan_triton_compile import cross_selective_scan_op
        return cross_selective_scan_op(x, delta, A, B, C, D, delta_bias, delta_softplus,
                                       channels_last)
    return _CrossScanTriton.apply(x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last)
