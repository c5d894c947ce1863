"""VMamba's cross scan (d_state 1, channels-last maps) in Gluon: tokens in registers.

Why a second implementation of :mod:`scan_triton`'s cross kernels: Triton lays a channels-last
(channels, tokens) tile out as several channels per thread with tokens across lanes (the load's
contiguity decides), so every scan and every sum over tokens is warp shuffles for each channel
(Nsight Compute: the backward issue-bound at ~290 instructions per element, docs/benchmarks.md
run BB). Gluon states the layout: each thread owns SPT_L consecutive tokens of one channel, so a
scan is SPT_L sequential steps in registers and only the per-thread totals cross lanes and warps.

Same contract as ``scan_triton``'s split, chunk-serial form (one direction per program, grid
(channel blocks, batch, 4); outputs and input gradients summed over directions into an fp32
scratch with atomics; the forward saves the state entering every chunk). Used by
:func:`scan_triton._launch_fwd` / ``_launch_bwd`` when :func:`applies`; Gluon has no CPU
interpreter, so these kernels are checked on a GPU by ``tools/gpu_check_ops.py``.
"""

import os

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .common import cdiv
from .triton_launch import FastLaunch

#: the (channels, tokens) tile of a program: SPT_D x SPT_L elements a thread (tokens
#: consecutive), TPW_D of a warp's 32 lanes along channels, WPC_D of NUM_WARPS warps along
#: channels. 32 channels across the lanes (64-byte rows of a bf16 channels-last token) and 8
#: tokens a thread, the scans in registers and across the 4 warps: the fastest of the layouts
#: swept (run BF, H100: VMamba-T 224^2 b64 stage 1 forward+backward 1.63 ms against 2.79 for
#: the Triton kernels; ~166 registers, 3 programs per SM)
LAYOUT = dict(SPT_D=1, SPT_L=8, TPW_D=32, WPC_D=1, NUM_WARPS=4)
#: fewer programs than this per SM (32 channels a program leave small batches at large maps
#: with few): 8 warps, 64-token chunks (run BJ, H200: 1344x800 b2 stage 4, 192 programs,
#: forward+backward 0.87 ms against 1.18 for the Triton kernels; 512^2 b8 stage 2 1.32 / 1.45)
FEW_PROGRAMS_PER_SM = 2
FEW_PROGRAMS_LAYOUT = dict(LAYOUT, NUM_WARPS=8)
#: fewer than this per SM: not these kernels (each program walks its chunks serially, so the
#: GPU would idle: 1344x800 b2 stage 2 has 48 programs of 263 chunks each; the Triton kernels
#: then take 4 channels a program or the chunk-parallel form)
MIN_PROGRAMS_PER_SM = 1
#: the fp32 division in :func:`_pixel` is exact below this many tokens
MAX_TOKENS = 1 << 22
#: Gluon is experimental and its API moves between releases: the Triton versions these
#: kernels were run (3.6, GPU) or compiled (3.8, tests/test_ops_gluon_cross.py) with and later
SUPPORTED = tuple(int(v) for v in triton.__version__.split('.')[:2]) >= (3, 6)


def tile(layout):
    """(BLOCK_D, BLOCK_L) of a layout dict like :data:`LAYOUT`."""
    warps_l = layout['NUM_WARPS'] // layout['WPC_D']
    return (layout['SPT_D'] * layout['TPW_D'] * layout['WPC_D'],
            layout['SPT_L'] * (32 // layout['TPW_D']) * warps_l)


def pick_layout(bsz, CH, sms, override=None):
    """:data:`LAYOUT`, :data:`FEW_PROGRAMS_LAYOUT` when the grid would be short of programs,
    or None when it would be too short for these kernels; ``override`` (a partial layout
    dict) replaces entries and is always taken."""
    programs = bsz * cdiv(CH, tile(LAYOUT)[0]) * 4 if bsz is not None else None
    if override is not None:
        return dict(LAYOUT, **override)
    if programs is not None and programs < MIN_PROGRAMS_PER_SM * sms:
        return None
    if programs is not None and programs < FEW_PROGRAMS_PER_SM * sms:
        return dict(FEW_PROGRAMS_LAYOUT)
    return dict(LAYOUT)


#: ``MMVISION_SSM_GLUON=0`` keeps the cross op on the Triton kernels (Gluon is experimental:
#: a way around a Triton release whose Gluon misbehaves, without editing code)
ENV_VAR = 'MMVISION_SSM_GLUON'


def applies(n, L, device):
    """Whether these kernels can run the cross op: d_state 1, a CUDA device (Gluon has no CPU
    interpreter), a map small enough for the fp32 pixel arithmetic, and not switched off by
    ``$MMVISION_SSM_GLUON``."""
    return (SUPPORTED and n == 1 and device is not None and device.type == 'cuda'
            and L < MAX_TOKENS and os.environ.get('TRITON_INTERPRET', '0') in ('', '0')
            and os.environ.get(ENV_VAR, '1') != '0')


def _common_args(u3, dt4, B4, C4, L, HH, WW, CH, nchunk):
    return (L, HH, WW, 1.0 / HH, CH, nchunk, u3.stride(0), u3.stride(2), dt4.stride(0),
            dt4.stride(1), dt4.stride(3), B4.stride(0), B4.stride(1), B4.stride(3),
            C4.stride(0), C4.stride(1), C4.stride(3))


def launch_fwd(u3, dt4, A, B4, C4, D, bias, acc3, states, L, HH, WW, CH, softplus, layout):
    """Forward into the zeroed fp32 ``acc3`` (b, CH, L) and the chunk-start ``states``
    (b, 4, CH, nchunk, 1); all maps channels-last (channel stride 1)."""
    bd, _ = tile(layout)
    grid = (cdiv(CH, bd), u3.shape[0], 4)
    _cross_fwd_launch[grid](
        u3, dt4, A, B4, C4, D if D is not None else A, bias if bias is not None else A, acc3,
        states, *_common_args(u3, dt4, B4, C4, L, HH, WW, CH, states.shape[3]),
        acc3.stride(0), acc3.stride(2), **layout, HAS_D=D is not None,
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, num_warps=layout['NUM_WARPS'])


def launch_bwd(u3, dt4, A, B4, C4, D, bias, gy3, states, gacc, gdt4, gB, gC, gA, gD, gbias,
               L, HH, WW, CH, softplus, layout):
    """Gradients: gu summed into the zeroed fp32 ``gacc``, gdt4 written, gB/gC (b, 4, 1, L)
    zeroed fp32 summed with atomics, gA/gD/gbias (4 * CH) zeroed fp32, likewise."""
    bd, _ = tile(layout)
    grid = (cdiv(CH, bd), u3.shape[0], 4)
    _cross_bwd_launch[grid](
        u3, dt4, A, B4, C4, D if D is not None else A, bias if bias is not None else A, gy3,
        states, gacc, gdt4, gB, gC, gA, gD, gbias,
        *_common_args(u3, dt4, B4, C4, L, HH, WW, CH, states.shape[3]),
        gy3.stride(0), gy3.stride(2), gacc.stride(0), gacc.stride(2), **layout,
        HAS_D=D is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus,
        num_warps=layout['NUM_WARPS'])


# (Gluon kernels call only @gluon.jit functions, hence these twins of scan_triton's helpers.
# The two kernels' set-up lines are repeated on purpose: factoring them and the chunk loads
# into helpers changed ptxas's register allocation and the backward ran up to 15 % slower,
# docs/benchmarks.md run BM.)


@gluon.jit
def _combine(a1, x1, a2, x2):
    # (a1, x1) then (a2, x2): h -> a2 * (a1 * h + x1) + x2
    return a1 * a2, a2 * x1 + x2


@gluon.jit
def _pixel(t, k, HH, WW, L, inv_hh):
    """Pixel (row-major) of token t of direction k: rows, columns, and both reversed. With one
    channel per thread every token's pixel is per-element work, so the column order divides
    by the map's height in fp32 (exact for L < 2**22, see ``applies``) rather than with an
    integer division (~20 instructions)."""
    t = gl.where(k >= 2, L - 1 - t, t)
    if k % 2 == 1:
        q = ((t.to(gl.float32) + 0.5) * inv_hh).to(gl.int32)
        t = (t - q * HH) * WW + q
    return t


@gluon.jit
def _softplus(x):
    return gl.where(x <= 20.0, gl.log(1.0 + gl.exp(x)), x)


@gluon.jit
def _cross_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, acc_ptr, st_ptr,
        L, HH, WW, inv_hh, CH, NCHUNK,
        su_b, su_p, sdt_b, sdt_k, sdt_p, sB_b, sB_g, sB_p, sC_b, sC_g, sC_p, sa_b, sa_p,
        SPT_D: gl.constexpr, SPT_L: gl.constexpr, TPW_D: gl.constexpr, WPC_D: gl.constexpr,
        NUM_WARPS: gl.constexpr,
        HAS_D: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr):
    LAY: gl.constexpr = gl.BlockedLayout([SPT_D, SPT_L], [TPW_D, 32 // TPW_D],
                                         [WPC_D, NUM_WARPS // WPC_D], [0, 1])
    BLOCK_D: gl.constexpr = SPT_D * TPW_D * WPC_D
    BLOCK_L: gl.constexpr = SPT_L * (32 // TPW_D) * (NUM_WARPS // WPC_D)
    k = gl.program_id(2)
    b = gl.program_id(1).to(gl.int64)
    c = gl.program_id(0) * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(1, LAY))
    cmask = c < CH
    j = gl.arange(0, BLOCK_L, layout=gl.SliceLayout(0, LAY))
    arow = k * CH + c
    A_k = gl.load(A_ptr + arow, mask=cmask, other=0.0)
    Dv = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    bias = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    if HAS_D:
        Dv = gl.load(D_ptr + arow, mask=cmask, other=0.0)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + arow, mask=cmask, other=0.0)
    st_base = st_ptr + ((b * 4 + k) * CH + c) * NCHUNK
    h_carry = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    for ci in range(0, NCHUNK):
        t = ci * BLOCK_L + j
        tmask = t < L
        p = _pixel(t, k, HH, WW, L, inv_hh)
        m2 = cmask[:, None] & tmask[None, :]
        u = gl.load(u_ptr + b * su_b + c[:, None] + p[None, :] * su_p, mask=m2, other=0.0)
        u = u.to(gl.float32)
        dt = gl.load(dt_ptr + b * sdt_b + k * sdt_k + c[:, None] + p[None, :] * sdt_p,
                     mask=m2, other=0.0).to(gl.float32)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = gl.where(m2, dt, 0.0)  # padding tokens: a = 1, x = 0
        Bn = gl.load(B_ptr + b * sB_b + k * sB_g + p * sB_p, mask=tmask, other=0.0)
        Cn = gl.load(C_ptr + b * sC_b + k * sC_g + p * sC_p, mask=tmask, other=0.0)
        gl.store(st_base + ci, h_carry, mask=cmask)
        a_s, x_s = gl.associative_scan((gl.exp(dt * A_k[:, None]),
                                        dt * u * Bn.to(gl.float32)[None, :]), 1, _combine)
        h = x_s + a_s * h_carry[:, None]
        h_carry = gl.sum(gl.where(j[None, :] == BLOCK_L - 1, h, 0.0), 1)
        y = h * Cn.to(gl.float32)[None, :]
        if HAS_D:
            y += Dv[:, None] * u
        gl.atomic_add(acc_ptr + b * sa_b + c[:, None] + p[None, :] * sa_p, y, mask=m2,
                      sem='relaxed')


@gluon.jit
def _cross_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, gy_ptr, st_ptr,
        gacc_ptr, gdt_ptr, gB_ptr, gC_ptr, gA_ptr, gD_ptr, gbias_ptr,
        L, HH, WW, inv_hh, CH, NCHUNK,
        su_b, su_p, sdt_b, sdt_k, sdt_p, sB_b, sB_g, sB_p, sC_b, sC_g, sC_p, sy_b, sy_p,
        sa_b, sa_p,
        SPT_D: gl.constexpr, SPT_L: gl.constexpr, TPW_D: gl.constexpr, WPC_D: gl.constexpr,
        NUM_WARPS: gl.constexpr,
        HAS_D: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr):
    """Walks its direction's chunks backwards: recomputes h from the chunk's saved start state,
    runs the adjoint lam_t = gy_t C_t + a_{t+1} lam_{t+1} as a reverse scan, and emits every
    gradient. gB/gC (b, 4, L) fp32 are summed over channel blocks with atomics, gA/gD/gbias
    (4 * CH) over the batch."""
    LAY: gl.constexpr = gl.BlockedLayout([SPT_D, SPT_L], [TPW_D, 32 // TPW_D],
                                         [WPC_D, NUM_WARPS // WPC_D], [0, 1])
    BLOCK_D: gl.constexpr = SPT_D * TPW_D * WPC_D
    BLOCK_L: gl.constexpr = SPT_L * (32 // TPW_D) * (NUM_WARPS // WPC_D)
    VEC: gl.constexpr = gl.SliceLayout(1, LAY)
    k = gl.program_id(2)
    b = gl.program_id(1).to(gl.int64)
    c = gl.program_id(0) * BLOCK_D + gl.arange(0, BLOCK_D, layout=VEC)
    cmask = c < CH
    j = gl.arange(0, BLOCK_L, layout=gl.SliceLayout(0, LAY))
    arow = k * CH + c
    A_k = gl.load(A_ptr + arow, mask=cmask, other=0.0)
    Dv = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    bias = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    if HAS_D:
        Dv = gl.load(D_ptr + arow, mask=cmask, other=0.0)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + arow, mask=cmask, other=0.0)
    st_base = st_ptr + ((b * 4 + k) * CH + c) * NCHUNK
    gbc = (b * 4 + k) * L
    lam_carry = gl.zeros([BLOCK_D], gl.float32, layout=VEC)
    a_after = gl.full([BLOCK_D], 1.0, gl.float32, layout=VEC)  # a past the end: 1
    gA_acc = gl.zeros([BLOCK_D], gl.float32, layout=VEC)
    gD_acc = gl.zeros([BLOCK_D], gl.float32, layout=VEC)
    gbias_acc = gl.zeros([BLOCK_D], gl.float32, layout=VEC)
    zero_i = gl.zeros([BLOCK_D, BLOCK_L], gl.int32, layout=LAY)
    # register shuffles through shared memory (gl.gather): the next token, and the tile's
    # token order reversed -- Triton's own reverse scan flips with 5 butterfly levels per value
    nxt = zero_i + gl.minimum(j + 1, BLOCK_L - 1)[None, :]
    rev = zero_i + (BLOCK_L - 1 - j)[None, :]
    first = j[None, :] == 0
    last = j[None, :] == BLOCK_L - 1
    for cc in range(0, NCHUNK):
        ci = NCHUNK - 1 - cc
        t = ci * BLOCK_L + j
        tmask = t < L
        p = _pixel(t, k, HH, WW, L, inv_hh)
        m2 = cmask[:, None] & tmask[None, :]
        u = gl.load(u_ptr + b * su_b + c[:, None] + p[None, :] * su_p, mask=m2, other=0.0)
        u = u.to(gl.float32)
        dt_off = b * sdt_b + k * sdt_k + c[:, None] + p[None, :] * sdt_p
        dt_pre = gl.load(dt_ptr + dt_off, mask=m2, other=0.0).to(gl.float32)
        if HAS_BIAS:
            dt_pre += bias[:, None]
        dt = dt_pre
        if SOFTPLUS:
            dt = _softplus(dt_pre)
        dt = gl.where(m2, dt, 0.0)  # padding: a = 1, x = 0
        du = dt * u
        gy = gl.load(gy_ptr + b * sy_b + c[:, None] + p[None, :] * sy_p, mask=m2, other=0.0)
        gy = gy.to(gl.float32)
        Bn = gl.load(B_ptr + b * sB_b + k * sB_g + p * sB_p, mask=tmask, other=0.0)
        Bn = Bn.to(gl.float32)[None, :]
        Cn = gl.load(C_ptr + b * sC_b + k * sC_g + p * sC_p, mask=tmask, other=0.0)
        Cn = Cn.to(gl.float32)[None, :]
        h0 = gl.load(st_base + ci, mask=cmask, other=0.0)
        a = gl.exp(dt * A_k[:, None])
        x = du * Bn
        a_s, x_s = gl.associative_scan((a, x), 1, _combine)
        h = x_s + a_s * h0[:, None]
        # adjoint: lam_t = gy_t C_t + a_{t+1} lam_{t+1}, a forward scan over the reversed
        # tile; a_{t+1} of the chunk's last token is the first a of the chunk walked before
        a_next = gl.where(last, a_after[:, None], gl.gather(a, nxt, 1))
        a_after = gl.sum(gl.where(first, a, 0.0), 1)
        r_a, r_g = gl.associative_scan((gl.gather(a_next, rev, 1), gl.gather(gy * Cn, rev, 1)),
                                       1, _combine)
        lam_r = r_g + r_a * lam_carry[:, None]
        lam_carry = gl.sum(gl.where(last, lam_r, 0.0), 1)  # lam at the chunk's first token
        lam = gl.gather(lam_r, rev, 1)
        g_loga = lam * (h - x)  # = lam_t * a_t * h_{t-1}
        gA_acc += gl.sum(g_loga * dt, 1)
        g_du = lam * Bn
        gl.atomic_add(gB_ptr + gbc + p, gl.sum(lam * du, 0), mask=tmask, sem='relaxed')
        gl.atomic_add(gC_ptr + gbc + p, gl.sum(gy * h, 0), mask=tmask, sem='relaxed')
        gu = g_du * dt
        if HAS_D:
            gD_acc += gl.sum(gy * u, 1)
            gu += gy * Dv[:, None]
        gdt = g_loga * A_k[:, None] + g_du * u
        if SOFTPLUS:
            gdt = gdt / (1.0 + gl.exp(-dt_pre))
        gdt = gl.where(m2, gdt, 0.0)
        gbias_acc += gl.sum(gdt, 1)
        gl.store(gdt_ptr + dt_off, gdt.to(gdt_ptr.dtype.element_ty), mask=m2)
        gl.atomic_add(gacc_ptr + b * sa_b + c[:, None] + p[None, :] * sa_p, gu, mask=m2,
                      sem='relaxed')
    # summed over the batch here: one zeroed buffer on the host instead of partials and sums
    gl.atomic_add(gA_ptr + arow, gA_acc, mask=cmask, sem='relaxed')
    if HAS_D:
        gl.atomic_add(gD_ptr + arow, gD_acc, mask=cmask, sem='relaxed')
    if HAS_BIAS:
        gl.atomic_add(gbias_ptr + arow, gbias_acc, mask=cmask, sem='relaxed')


# launched through FastLaunch: less host time per launch than the JIT's entry point
_cross_fwd_launch = FastLaunch(_cross_fwd_kernel)
_cross_bwd_launch = FastLaunch(_cross_bwd_kernel)
