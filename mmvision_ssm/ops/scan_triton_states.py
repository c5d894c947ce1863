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
"""
import triton
import triton.language as tl

from .scan_triton import _combine, _dt_pair, _softplus  # shared with the general kernels
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
def _states_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, y_ptr, st_ptr, last_ptr,
        L, CH, HD, NCHUNK,
        su_b, su_c, su_p, sdt_b, sdt_c, sdt_p, sB_b, sB_g, sB_n, sB_p, sC_b, sC_g, sC_n, sC_p,
        sz_b, sz_c, sz_p, sy_b, sy_c, sy_p,
        N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, HAS_D: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
        STORE_LAST: tl.constexpr):
    """(BLOCK_C, N, BLOCK_L) tiles: the channels share one load of the chunk's B and C."""
    c, b, nidx, j, A_c, Dv, bias, B_base, C_base = _program_setup(
        A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, HD, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
        N, BLOCK_C, BLOCK_L, HAS_D, HAS_BIAS)
    u_base = u_ptr + b * su_b + c[:, None] * su_c
    dt_base = dt_ptr + b * sdt_b + c[:, None] * sdt_c
    st_base = st_ptr + (b * CH + c[:, None]) * NCHUNK * N + nidx[None, :]
    h = tl.zeros((BLOCK_C, N), dtype=tl.float32)
    for ci in range(NCHUNK):
        t = ci * BLOCK_L + j
        tmask = t < L
        m2 = (nidx[:, None] < N) & tmask[None, :]
        mc = (c[:, None] < CH) & tmask[None, :]
        u = tl.load(u_base + t[None, :] * su_p, mask=mc, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t[None, :] * sdt_p, mask=mc, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(mc, dt, 0.0)  # padding tokens: a = 1, x = 0 (h passes through)
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
        tl.store(last_ptr + (b * CH + c[:, None]) * N + nidx[None, :], h)


@triton.jit
def _states_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, gy_ptr, st_ptr, glast_ptr,
        gu_ptr, gdt_ptr, gB_ptr, gC_ptr, gz_ptr, gA_ptr, gD_ptr, gbias_ptr,
        L, CH, HD, NCHUNK, NG,
        su_b, su_c, su_p, sdt_b, sdt_c, sdt_p, sB_b, sB_g, sB_n, sB_p, sC_b, sC_g, sC_n, sC_p,
        sz_b, sz_c, sz_p, sy_b, sy_c, sy_p,
        N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, HAS_D: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_GLAST: tl.constexpr):
    """gu/gz/gdt in u's and dt's layouts; gB/gC (b, NG, N, L) fp32, summed over the program's
    BLOCK_C channels in registers, then over the programs with atomics (BLOCK_C times fewer);
    gA (CH, N), gD and gbias (CH) zeroed fp32, summed over the batch likewise."""
    c, b, nidx, j, A_c, Dv, bias, B_base, C_base = _program_setup(
        A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, HD, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
        N, BLOCK_C, BLOCK_L, HAS_D, HAS_BIAS)
    u_base = u_ptr + b * su_b + c[:, None] * su_c
    dt_off = b * sdt_b + c[:, None] * sdt_c  # dt and gdt share a layout
    dt_base = dt_ptr + dt_off
    y_base = b * sy_b + c[:, None] * sy_c
    gbc_base = (b * NG + (tl.program_id(0) * BLOCK_C) // HD) * N * L + nidx[:, None] * L
    st_base = st_ptr + (b * CH + c[:, None]) * NCHUNK * N + nidx[None, :]
    if HAS_GLAST:
        lam = tl.load(glast_ptr + (b * CH + c[:, None]) * N + nidx[None, :]).to(tl.float32)
    else:
        lam = tl.zeros((BLOCK_C, N), dtype=tl.float32)
    # per token: the sum over the tokens (across lanes) once, after the loop
    gA_acc = tl.zeros((BLOCK_C, N, BLOCK_L), dtype=tl.float32)
    gD_acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=tl.float32)
    gbias_acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=tl.float32)
    for cc in range(NCHUNK):
        ci = NCHUNK - 1 - cc
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


def launch_fwd(u3, dt3, A, B4, C4, D, bias, z3, y3, states, last, L, CH, HD, softplus, cfg):
    """u3/dt3/z3/y3: (b, CH, L) views; B4/C4 (b, G, N, L); states (b, 1, CH, chunks, N)."""
    bsz, N = u3.shape[0], A.shape[1]
    dummy = states
    _states_fwd_launch[(CH // cfg['BLOCK_D'], bsz)](
        u3, dt3, A, B4, C4, D if D is not None else dummy, bias if bias is not None else dummy,
        z3 if z3 is not None else dummy, y3, states, last if last is not None else dummy,
        L, CH, HD, states.shape[3],
        *u3.stride(), *dt3.stride(), *B4.stride(), *C4.stride(),
        *(z3.stride() if z3 is not None else (0, 0, 0)), *y3.stride(),
        N=N, BLOCK_C=cfg['BLOCK_D'], BLOCK_L=cfg['BLOCK_L'], HAS_D=D is not None,
        HAS_BIAS=bias is not None, HAS_Z=z3 is not None, SOFTPLUS=softplus,
        STORE_LAST=last is not None,
        num_warps=cfg['num_warps'])


def launch_bwd(u3, dt3, A, B4, C4, D, bias, z3, gy3, states, glast, L, CH, HD, softplus, cfg,
               gu3, gdt3, gz3, gB, gC, gA, gD, gbias):
    """Gradients into the given zeroed fp32 buffers: gB/gC (b, G, N, L), gA (CH, N), gD and
    gbias (CH)."""
    bsz, N = u3.shape[0], A.shape[1]
    dummy = gA
    _states_bwd_launch[(CH // cfg['BLOCK_D'], bsz)](
        u3, dt3, A, B4, C4, D if D is not None else dummy, bias if bias is not None else dummy,
        z3 if z3 is not None else dummy, gy3, states, glast if glast is not None else dummy,
        gu3, gdt3, gB, gC, gz3 if gz3 is not None else dummy, gA, gD, gbias,
        L, CH, HD, states.shape[3], B4.shape[1],
        *u3.stride(), *dt3.stride(), *B4.stride(), *C4.stride(),
        *(z3.stride() if z3 is not None else (0, 0, 0)), *gy3.stride(),
        N=N, BLOCK_C=cfg['BLOCK_D'], BLOCK_L=cfg['BLOCK_L'], HAS_D=D is not None,
        HAS_BIAS=bias is not None, HAS_Z=z3 is not None, SOFTPLUS=softplus,
        HAS_GLAST=glast is not None,
        num_warps=cfg['num_warps'])
