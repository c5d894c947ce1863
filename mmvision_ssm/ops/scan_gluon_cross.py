"""VMamba's cross scan (d_state 1, channels-last maps) in Gluon: tokens in registers.

Why a second implementation of :mod:`scan_triton`'s cross kernels: Triton lays a channels-last
(channels, tokens) tile out as several channels per thread with tokens across lanes (the load's
contiguity decides), so every scan and every sum over tokens is warp shuffles for each channel
(Nsight Compute: the backward issue-bound at ~290 instructions per element, docs/benchmarks.md
run BB). Gluon states the layout: each thread owns SPT_L consecutive tokens of one or two
channels, so a scan is SPT_L sequential steps in registers and only the per-thread totals cross
lanes and warps.

Per element the kernels spend little beyond the math (the forward's loop went from 95 to 54
sm_90 SASS instructions per element, counted offline; docs/benchmarks.md): softplus without a
log call (:func:`_softplus`), exponentials as single ``ex2`` instructions, batch and direction
in 64-bit scalar bases with 32-bit offsets per element, two channels a thread (4-byte loads,
per-token work shared). The
chunks of a direction are walked serially, so each chunk's loads are issued a chunk ahead where
a map has several (``PREFETCH``).

Same contract as ``scan_triton``'s split, chunk-serial form (one direction per program; outputs
and input gradients summed over directions into an fp32 scratch with atomics; the forward saves
the state entering every chunk of the backward's tile, whatever its own). Used by
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
#: channels; PREFETCH: each chunk's loads issued a chunk ahead. These keys are the backward's
#: tile, whose chunks are also the saved states'; the same keys prefixed FWD_ are the
#: forward's. K_FIRST: the grid's fastest axis is the direction, so a map's four direction
#: programs run together (x and the fp32 sums meet in L2). The best of the layouts swept on GPU
#: time (runs CY and DC, H100, VMamba-T's stages at 224^2 b64 and b128, 512^2 b8; see
#: docs/benchmarks.md), with :func:`pick_layout`'s two exceptions:
#:
#: * forward: 2 channels a thread (4-byte loads) across 16 lanes, 8 tokens a thread, 2 lanes
#:   and 4 warps along tokens (a 32 x 64 tile), the scans in registers, across a lane pair and
#:   the warps;
#: * backward: 2 channels a thread across 4 lanes, the 4 warps along channels too, 4 tokens a
#:   thread across 8 lanes (32 x 32): no scan or sum over tokens crosses a warp, so its
#:   barriers go (32 a chunk in the forward's layout), and at 168 registers 3 programs fit an
#:   SM with the prefetch (run DC: stage 1 b64 forward+backward 1.11 against 1.28 ms)
LAYOUT = dict(SPT_D=2, SPT_L=4, TPW_D=4, WPC_D=4, NUM_WARPS=4, PREFETCH=True,
              FWD_SPT_D=2, FWD_SPT_L=8, FWD_TPW_D=16, FWD_WPC_D=1, FWD_NUM_WARPS=4,
              FWD_PREFETCH=True, K_FIRST=True)
_TILE_KEYS = ('SPT_D', 'SPT_L', 'TPW_D', 'WPC_D', 'NUM_WARPS', 'PREFETCH')
#: maps of at least this many tokens, with at least LONG_MAP_PROGRAMS_PER_SM programs per SM:
#: the forward takes 8 warps (128-token chunks, half the serial steps; run CY: stage 1 b64
#: 0.35 against 0.42 ms, b128 0.68 against 0.82; with fewer programs, 512^2 b8 stage 2 with
#: 1.5 per SM, 4 warps stay faster)
LONG_MAP = 2048
LONG_MAP_PROGRAMS_PER_SM = 2
#: the forward prefetches only maps of more than this many of its chunks (a one-chunk map, as
#: at stage 4, would only load an empty chunk more: 0.065 against 0.050 ms there, run CY)
PREFETCH_MIN_CHUNKS = 4
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
    """(BLOCK_D, BLOCK_L) of a layout dict like :data:`LAYOUT`: the backward's tile, whose
    BLOCK_L is also the chunk of the saved states."""
    warps_l = layout['NUM_WARPS'] // layout['WPC_D']
    return (layout['SPT_D'] * layout['TPW_D'] * layout['WPC_D'],
            layout['SPT_L'] * (32 // layout['TPW_D']) * warps_l)


def fwd_layout(layout):
    """The forward's tile keys (the FWD_ entries, unprefixed) of a layout dict."""
    return {key: layout['FWD_' + key] for key in _TILE_KEYS}


def _kernel_args(layout, fwd):
    lay = fwd_layout(layout) if fwd else {key: layout[key] for key in _TILE_KEYS}
    return dict(lay, K_FIRST=layout['K_FIRST'], num_warps=lay['NUM_WARPS'])


def _grid(layout, fwd, CH, bsz):
    nblk = cdiv(CH, tile(fwd_layout(layout) if fwd else layout)[0])
    return (4, nblk, bsz) if layout['K_FIRST'] else (nblk, bsz, 4)


def check_layout_keys(override):
    """A ValueError naming the keys of a partial layout dict that :data:`LAYOUT` lacks (they
    would reach no kernel, so a forced layout would silently be the default)."""
    unknown = sorted(set(override) - set(LAYOUT))
    if unknown:
        raise ValueError(f'Gluon layout: unknown keys {unknown}; the keys are {sorted(LAYOUT)}')


def pick_layout(bsz, CH, L, sms, override=None):
    """:data:`LAYOUT` adjusted to the map (:data:`LONG_MAP`, :data:`PREFETCH_MIN_CHUNKS`), or
    None when the grid would be too short of programs for these kernels; ``override`` (a
    partial layout dict, :func:`check_layout_keys`) replaces entries and is always taken."""
    programs = bsz * cdiv(CH, tile(LAYOUT)[0]) * 4 if bsz is not None else None
    if override is not None:
        check_layout_keys(override)
        return dict(LAYOUT, **override)
    if programs is not None and programs < MIN_PROGRAMS_PER_SM * sms:
        return None
    layout = dict(LAYOUT)
    if L >= LONG_MAP and (programs is None or programs >= LONG_MAP_PROGRAMS_PER_SM * sms):
        layout['FWD_NUM_WARPS'] = 8
    if L <= PREFETCH_MIN_CHUNKS * tile(fwd_layout(layout))[1]:
        layout['FWD_PREFETCH'] = False
    return layout


#: ``MMVISION_SSM_GLUON=0`` keeps the cross op on the Triton kernels (Gluon is experimental:
#: a way around a Triton release whose Gluon misbehaves, without editing code)
ENV_VAR = 'MMVISION_SSM_GLUON'


def applies(n, L, CH, device):
    """Whether these kernels can run the cross op: d_state 1, a CUDA device (Gluon has no CPU
    interpreter), a map small enough for the fp32 pixel arithmetic and for 32-bit offsets
    within one map (the batch and direction go in 64-bit bases; dt's (L, 4, CH) is the
    largest), and not switched off by ``$MMVISION_SSM_GLUON``."""
    return (SUPPORTED and n == 1 and device is not None and device.type == 'cuda'
            and L < MAX_TOKENS and L * 4 * CH < 2 ** 31
            and os.environ.get('TRITON_INTERPRET', '0') in ('', '0')
            and os.environ.get(ENV_VAR, '1') != '0')


def _common_args(u3, dt4, B4, C4, L, HH, WW, CH, nchunk):
    return (L, HH, WW, 1.0 / HH, CH, nchunk, u3.stride(0), u3.stride(2), dt4.stride(0),
            dt4.stride(1), dt4.stride(3), B4.stride(0), B4.stride(1), B4.stride(3),
            C4.stride(0), C4.stride(1), C4.stride(3))


def launch_fwd(u3, dt4, A, B4, C4, D, bias, acc3, states, L, HH, WW, CH, softplus, layout):
    """Forward into the zeroed fp32 ``acc3`` (b, CH, L) and the ``states`` (b, 4, CH, nchunk,
    1) entering each chunk of the backward's tile; all maps channels-last (channel stride 1)."""
    _cross_fwd_launch[_grid(layout, True, CH, u3.shape[0])](
        u3, dt4, A, B4, C4, D if D is not None else A, bias if bias is not None else A, acc3,
        states, *_common_args(u3, dt4, B4, C4, L, HH, WW, CH, states.shape[3]),
        acc3.stride(0), acc3.stride(2), **_kernel_args(layout, True), STATE_L=tile(layout)[1],
        HAS_D=D is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus)


def launch_bwd(u3, dt4, A, B4, C4, D, bias, gy3, states, gacc, gdt4, gB, gC, gA, gD, gbias,
               L, HH, WW, CH, softplus, layout):
    """Gradients: gu summed into the zeroed fp32 ``gacc``, gdt4 written, gB/gC (b, 4, 1, L)
    zeroed fp32 summed with atomics, gA/gD/gbias (4 * CH) zeroed fp32, likewise."""
    _cross_bwd_launch[_grid(layout, False, CH, u3.shape[0])](
        u3, dt4, A, B4, C4, D if D is not None else A, bias if bias is not None else A, gy3,
        states, gacc, gdt4, gB, gC, gA, gD, gbias,
        *_common_args(u3, dt4, B4, C4, L, HH, WW, CH, states.shape[3]),
        gy3.stride(0), gy3.stride(2), gacc.stride(0), gacc.stride(2),
        **_kernel_args(layout, False), HAS_D=D is not None, HAS_BIAS=bias is not None,
        SOFTPLUS=softplus)


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


#: log2(e): exponentials as ex2
_LOG2E = gl.constexpr(1.4426950408889634)
#: log1p(e) / e on [0, 1]: degree-8 polynomial, near-minimax in relative error (fitted by
#: iteratively reweighted least squares on Chebyshev nodes); with its fp32 Horner evaluation
#: e * q(e) is within 2.1e-7 of log1p(e) relative, everywhere in [0, 1]
_Q0 = gl.constexpr(0.9999999403953552)
_Q1 = gl.constexpr(-0.4999949336051941)
_Q2 = gl.constexpr(0.3331909775733948)
_Q3 = gl.constexpr(-0.24842983484268188)
_Q4 = gl.constexpr(0.1910601109266281)
_Q5 = gl.constexpr(-0.1366325467824936)
_Q6 = gl.constexpr(0.07822605222463608)
_Q7 = gl.constexpr(-0.029505299404263496)
_Q8 = gl.constexpr(0.005232709459960461)


@gluon.jit
def _ex2(x):
    """2^x as one MUFU instruction (``ex2.approx.ftz``): gl.exp's non-flushing form adds a
    range test and two scalings per element. Results below 2^-126 flush to 0."""
    return gl.inline_asm_elementwise('ex2.approx.ftz.f32 $0, $1;', '=f,f', [x],
                                     dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _softplus(x):
    """(log(1 + e^x), e^-|x|) = max(x, 0) + log1p(e^-|x|), the log1p by :data:`_Q0`.. (no log call:
    libdevice's logf is ~25 instructions, and a fast log2 of 1 + e loses e's relative
    precision where VMamba's dt lives, e^x ~ 1e-3..1e-1). NaN stays NaN through e.
    e^-|x| is returned for the sigmoid (:func:`_sigmoid`)."""
    e = _ex2(gl.abs(x) * -_LOG2E)
    q = _Q8 * e + _Q7
    q = q * e + _Q6
    q = q * e + _Q5
    q = q * e + _Q4
    q = q * e + _Q3
    q = q * e + _Q2
    q = q * e + _Q1
    q = q * e + _Q0
    return gl.maximum(x, 0.0) + e * q, e


@gluon.jit
def _sigmoid(x, e):
    """1 / (1 + e^-x) from e = e^-|x| (:func:`_softplus`'s): no second exponential."""
    return gl.fdiv(gl.where(x >= 0.0, 1.0, e), 1.0 + e)


@gluon.jit
def _program_ids(K_FIRST: gl.constexpr):
    """(direction, channel block, batch as int64) of this program in :func:`_grid`'s order."""
    if K_FIRST:
        return gl.program_id(0), gl.program_id(1), gl.program_id(2).to(gl.int64)
    return gl.program_id(2), gl.program_id(0), gl.program_id(1).to(gl.int64)


@gluon.jit
def _cross_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, acc_ptr, st_ptr,
        L, HH, WW, inv_hh, CH, NCHUNK,
        su_b, su_p, sdt_b, sdt_k, sdt_p, sB_b, sB_g, sB_p, sC_b, sC_g, sC_p, sa_b, sa_p,
        SPT_D: gl.constexpr, SPT_L: gl.constexpr, TPW_D: gl.constexpr, WPC_D: gl.constexpr,
        NUM_WARPS: gl.constexpr, PREFETCH: gl.constexpr, K_FIRST: gl.constexpr,
        STATE_L: gl.constexpr,
        HAS_D: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr):
    """Walks its direction's chunks forward; the state after every STATE_L-th token is saved
    for the backward (``NCHUNK`` of them, the first 0), whatever this kernel's own tile."""
    LAY: gl.constexpr = gl.BlockedLayout([SPT_D, SPT_L], [TPW_D, 32 // TPW_D],
                                         [WPC_D, NUM_WARPS // WPC_D], [0, 1])
    BLOCK_D: gl.constexpr = SPT_D * TPW_D * WPC_D
    BLOCK_L: gl.constexpr = SPT_L * (32 // TPW_D) * (NUM_WARPS // WPC_D)
    k, cblk, b = _program_ids(K_FIRST)
    c = cblk * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(1, LAY))
    cmask = c < CH
    j = gl.arange(0, BLOCK_L, layout=gl.SliceLayout(0, LAY))
    arow = k * CH + c
    # A in log2 units: a = 2^(dt * A * log2 e) as one multiply and one ex2
    A2 = gl.load(A_ptr + arow, mask=cmask, other=0.0) * _LOG2E
    Dv = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    bias = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    if HAS_D:
        Dv = gl.load(D_ptr + arow, mask=cmask, other=0.0)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + arow, mask=cmask, other=0.0)
    # the batch and direction in scalar (64-bit) bases; per element only 32-bit offsets
    # (:func:`applies` checks that a map's offsets fit)
    u_b = u_ptr + b * su_b
    dt_b = dt_ptr + b * sdt_b + k * sdt_k
    B_b = B_ptr + b * sB_b + k * sB_g
    C_b = C_ptr + b * sC_b + k * sC_g
    acc_b = acc_ptr + b * sa_b
    st_base = st_ptr + ((b * 4 + k) * CH + c) * NCHUNK
    h_carry = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    gl.store(st_base, h_carry, mask=cmask)  # the state entering the first chunk
    # PREFETCH: each chunk's loads are issued one chunk ahead (the chunks are walked serially,
    # and a program otherwise waits out a memory round trip per chunk)
    if PREFETCH:
        p_n, tmask_n, u_n, dt_n, B_n, C_n = _fwd_chunk_loads(
            0, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_b, B_b, C_b, su_p, sdt_p, sB_p, sC_p,
            BLOCK_L)
    for ci in range(0, (L + BLOCK_L - 1) // BLOCK_L):
        if PREFETCH:
            p, tmask, u, dt, Bn, Cn = p_n, tmask_n, u_n, dt_n, B_n, C_n
            p_n, tmask_n, u_n, dt_n, B_n, C_n = _fwd_chunk_loads(
                ci + 1, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_b, B_b, C_b, su_p, sdt_p,
                sB_p, sC_p, BLOCK_L)
        else:
            p, tmask, u, dt, Bn, Cn = _fwd_chunk_loads(
                ci, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_b, B_b, C_b, su_p, sdt_p, sB_p,
                sC_p, BLOCK_L)
        t = ci * BLOCK_L + j
        u = u.to(gl.float32)
        dt = dt.to(gl.float32)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt, _ = _softplus(dt)
        # (padding -- tokens past the map's end, channels past CH -- is never stored and no
        # valid token's h depends on it; its loads are 0, so its values stay finite)
        a_s, x_s = gl.associative_scan((_ex2(dt * A2[:, None]),
                                        dt * u * Bn.to(gl.float32)[None, :]), 1, _combine)
        h = x_s + a_s * h_carry[:, None]
        h_carry = gl.sum(gl.where(j[None, :] == BLOCK_L - 1, h, 0.0), 1)
        # the state entering the backward chunk that starts at token t + 1
        t1 = t + 1
        at_state = ((t1 & (STATE_L - 1)) == 0) & (t1 < L)
        gl.store(st_base[:, None] + (t1 // STATE_L)[None, :], h,
                 mask=cmask[:, None] & at_state[None, :])
        y = h * Cn.to(gl.float32)[None, :]
        if HAS_D:
            y += Dv[:, None] * u
        gl.atomic_add(acc_b + (c[:, None] + (p * sa_p)[None, :]), y,
                      mask=cmask[:, None] & tmask[None, :], sem='relaxed')


@gluon.jit
def _fwd_chunk_loads(ci, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_b, B_b, C_b, su_p, sdt_p,
                     sB_p, sC_p, BLOCK_L: gl.constexpr):
    """Chunk ci's pixels, token mask and raw (input-dtype) u, dt, B, C; all masked past the
    map's end, so the chunk after the last is a no-op."""
    t = ci * BLOCK_L + j
    tmask = t < L
    p = _pixel(t, k, HH, WW, L, inv_hh)
    m2 = cmask[:, None] & tmask[None, :]
    u = gl.load(u_b + (c[:, None] + (p * su_p)[None, :]), mask=m2, other=0.0)
    dt = gl.load(dt_b + (c[:, None] + (p * sdt_p)[None, :]), mask=m2, other=0.0)
    Bn = gl.load(B_b + p * sB_p, mask=tmask, other=0.0)
    Cn = gl.load(C_b + p * sC_p, mask=tmask, other=0.0)
    return p, tmask, u, dt, Bn, Cn


@gluon.jit
def _cross_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, gy_ptr, st_ptr,
        gacc_ptr, gdt_ptr, gB_ptr, gC_ptr, gA_ptr, gD_ptr, gbias_ptr,
        L, HH, WW, inv_hh, CH, NCHUNK,
        su_b, su_p, sdt_b, sdt_k, sdt_p, sB_b, sB_g, sB_p, sC_b, sC_g, sC_p, sy_b, sy_p,
        sa_b, sa_p,
        SPT_D: gl.constexpr, SPT_L: gl.constexpr, TPW_D: gl.constexpr, WPC_D: gl.constexpr,
        NUM_WARPS: gl.constexpr, PREFETCH: gl.constexpr, K_FIRST: gl.constexpr,
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
    k, cblk, b = _program_ids(K_FIRST)
    c = cblk * BLOCK_D + gl.arange(0, BLOCK_D, layout=VEC)
    cmask = c < CH
    j = gl.arange(0, BLOCK_L, layout=gl.SliceLayout(0, LAY))
    arow = k * CH + c
    A_k = gl.load(A_ptr + arow, mask=cmask, other=0.0)
    A2 = A_k * _LOG2E  # a = 2^(dt * A2)
    Dv = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    bias = gl.zeros([BLOCK_D], gl.float32, layout=gl.SliceLayout(1, LAY))
    if HAS_D:
        Dv = gl.load(D_ptr + arow, mask=cmask, other=0.0)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + arow, mask=cmask, other=0.0)
    # scalar 64-bit bases, 32-bit offsets per element (as in the forward)
    u_b = u_ptr + b * su_b
    dt_off_b = b * sdt_b + k * sdt_k
    B_b = B_ptr + b * sB_b + k * sB_g
    C_b = C_ptr + b * sC_b + k * sC_g
    gy_b = gy_ptr + b * sy_b
    gacc_b = gacc_ptr + b * sa_b
    gbc = (b * 4 + k) * L
    st_base = st_ptr + ((b * 4 + k) * CH + c) * NCHUNK
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
    # PREFETCH: the next chunk's loads issued one chunk ahead, as in the forward
    if PREFETCH:
        p_n, tmask_n, u_n, dt_n, gy_n, B_n, C_n, h0_n = _bwd_chunk_loads(
            NCHUNK - 1, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_ptr + dt_off_b, gy_b, B_b,
            C_b, st_base, su_p, sdt_p, sy_p, sB_p, sC_p, BLOCK_L)
    for cc in range(0, NCHUNK):
        ci = NCHUNK - 1 - cc
        if PREFETCH:
            p, tmask, u, dt_pre, gy, Bn, Cn, h0 = p_n, tmask_n, u_n, dt_n, gy_n, B_n, C_n, h0_n
            p_n, tmask_n, u_n, dt_n, gy_n, B_n, C_n, h0_n = _bwd_chunk_loads(
                ci - 1, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_ptr + dt_off_b, gy_b, B_b,
                C_b, st_base, su_p, sdt_p, sy_p, sB_p, sC_p, BLOCK_L)
        else:
            p, tmask, u, dt_pre, gy, Bn, Cn, h0 = _bwd_chunk_loads(
                ci, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_ptr + dt_off_b, gy_b, B_b, C_b,
                st_base, su_p, sdt_p, sy_p, sB_p, sC_p, BLOCK_L)
        m2 = cmask[:, None] & tmask[None, :]
        u = u.to(gl.float32)
        dt_off = dt_off_b + (c[:, None] + (p * sdt_p)[None, :])
        dt_pre = dt_pre.to(gl.float32)
        if HAS_BIAS:
            dt_pre += bias[:, None]
        dt = dt_pre
        if SOFTPLUS:
            dt, e_sp = _softplus(dt_pre)
        dt = gl.where(m2, dt, 0.0)  # padding: a = 1, x = 0
        du = dt * u
        gy = gy.to(gl.float32)
        Bn = Bn.to(gl.float32)[None, :]
        Cn = Cn.to(gl.float32)[None, :]
        a = _ex2(dt * A2[:, None])
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
            gdt = gdt * _sigmoid(dt_pre, e_sp)
        gdt = gl.where(m2, gdt, 0.0)
        gbias_acc += gl.sum(gdt, 1)
        gl.store(gdt_ptr + dt_off, gdt.to(gdt_ptr.dtype.element_ty), mask=m2)
        gl.atomic_add(gacc_b + (c[:, None] + (p * sa_p)[None, :]), gu, mask=m2,
                      sem='relaxed')
    # summed over the batch here: one zeroed buffer on the host instead of partials and sums
    gl.atomic_add(gA_ptr + arow, gA_acc, mask=cmask, sem='relaxed')
    if HAS_D:
        gl.atomic_add(gD_ptr + arow, gD_acc, mask=cmask, sem='relaxed')
    if HAS_BIAS:
        gl.atomic_add(gbias_ptr + arow, gbias_acc, mask=cmask, sem='relaxed')


@gluon.jit
def _bwd_chunk_loads(ci, j, c, cmask, k, HH, WW, L, inv_hh, u_b, dt_b, gy_b, B_b, C_b, st_base,
                     su_p, sdt_p, sy_p, sB_p, sC_p, BLOCK_L: gl.constexpr):
    """The backward's :func:`_fwd_chunk_loads`, with gy and the chunk's start state; chunk -1
    (the one after the first) is all masked."""
    t = ci * BLOCK_L + j
    tmask = (t < L) & (t >= 0)
    p = _pixel(t, k, HH, WW, L, inv_hh)
    m2 = cmask[:, None] & tmask[None, :]
    u = gl.load(u_b + (c[:, None] + (p * su_p)[None, :]), mask=m2, other=0.0)
    dt = gl.load(dt_b + (c[:, None] + (p * sdt_p)[None, :]), mask=m2, other=0.0)
    gy = gl.load(gy_b + (c[:, None] + (p * sy_p)[None, :]), mask=m2, other=0.0)
    Bn = gl.load(B_b + p * sB_p, mask=tmask, other=0.0)
    Cn = gl.load(C_b + p * sC_p, mask=tmask, other=0.0)
    h0 = gl.load(st_base + ci, mask=cmask & (ci >= 0), other=0.0)
    return p, tmask, u, dt, gy, Bn, Cn, h0


# launched through FastLaunch: less host time per launch than the JIT's entry point
_cross_fwd_launch = FastLaunch(_cross_fwd_kernel)
_cross_bwd_launch = FastLaunch(_cross_bwd_kernel)
