"""Triton LayerNorm kernels (forward and backward) for many short rows.

One program normalises BLOCK_M rows at once (a (BLOCK_M, BLOCK_C) tile, BLOCK_C = the row width
rounded up to a power of two), so rows of 96-768 channels still fill whole warps. The backward
walks a strided set of row blocks per program and keeps the weight/bias gradient partial sums
in registers; the host adds the per-program partials (a few hundred rows of C floats).
"""
import torch
import triton
import triton.language as tl

from .common import cdiv, next_pow2, sm_count
from .triton_launch import FastLaunch

#: elements per program tile (rows x padded width)
TILE = 4096


@triton.jit
def _normalize(x, m2, cols, cmask, C, W, Bias, eps, HAS_BIAS: tl.constexpr):
    """(y, mean, rstd) of the fp32 rows of a (rows, BLOCK_C) tile (``m2``: valid entries)."""
    mean = tl.sum(x, 1) / C
    xc = tl.where(m2, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / C + eps)
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(Bias + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return y, mean, rstd


@triton.jit
def _ln_fwd_kernel(X, XBias, W, Bias, Y, Mean, Rstd, M, C, eps, HAS_XBIAS: tl.constexpr,
                   HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """XBias (HAS_XBIAS): a per-channel bias added to the input first (the preceding conv's)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    rmask, cmask = rows < M, cols < C
    m2 = rmask[:, None] & cmask[None, :]
    off = rows[:, None] * C + cols[None, :]
    x = tl.load(X + off, mask=m2, other=0.0).to(tl.float32)
    if HAS_XBIAS:
        x += tl.load(XBias + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    y, mean, rstd = _normalize(x, m2, cols, cmask, C, W, Bias, eps, HAS_BIAS)
    tl.store(Y + off, y.to(Y.dtype.element_ty), mask=m2)
    tl.store(Mean + rows, mean, mask=rmask)
    tl.store(Rstd + rows, rstd, mask=rmask)


@triton.jit
def _ln_fwd_nchw_kernel(X, W, Bias, Y, HW, C, eps,
                        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """The forward without statistics, written as a contiguous (b, C, h, w) map: a program
    normalises BLOCK_M pixels of one image (grid axis 1), so its stores run along the pixels
    of each channel plane (the copy a channels-last output would need afterwards is the
    store itself)."""
    img = tl.program_id(1).to(tl.int64)
    pix = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    pmask, cmask = pix < HW, cols < C
    m2 = pmask[:, None] & cmask[None, :]
    x = tl.load(X + (img * HW + pix[:, None]) * C + cols[None, :], mask=m2,
                other=0.0).to(tl.float32)
    y, _, _ = _normalize(x, m2, cols, cmask, C, W, Bias, eps, HAS_BIAS)
    tl.store(Y + img * C * HW + cols[None, :] * HW + pix[:, None], y.to(Y.dtype.element_ty),
             mask=m2)


@triton.jit
def _ln_bwd_kernel(X, W, DY, Mean, Rstd, DX, DWB, M, C, ITERS,
                   BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_C,), dtype=tl.float32)
    db = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for it in range(ITERS):
        rows = (it * nprog + pid).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        m2 = rmask[:, None] & cmask[None, :]
        off = rows[:, None] * C + cols[None, :]
        x = tl.load(X + off, mask=m2, other=0.0).to(tl.float32)
        dy = tl.load(DY + off, mask=m2, other=0.0).to(tl.float32)
        mean = tl.load(Mean + rows, mask=rmask, other=0.0)
        rstd = tl.load(Rstd + rows, mask=rmask, other=0.0)
        xhat = tl.where(m2, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = dy * w[None, :]
        c1 = tl.sum(wdy * xhat, 1) / C
        c2 = tl.sum(wdy, 1) / C
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(DX + off, dx.to(DX.dtype.element_ty), mask=m2)
        dw += tl.sum(dy * xhat, 0)
        db += tl.sum(dy, 0)
    # one (2, programs, C) buffer for both partial sums: one allocation and one sum on the host
    tl.store(DWB + pid * C + cols, dw, mask=cmask)
    tl.store(DWB + (nprog + pid) * C + cols, db, mask=cmask)


# launched through FastLaunch: less host time per launch than the JIT's entry point
_ln_fwd_launch = FastLaunch(_ln_fwd_kernel)
_ln_fwd_nchw_launch = FastLaunch(_ln_fwd_nchw_kernel)
_ln_bwd_launch = FastLaunch(_ln_bwd_kernel)


def _blocks(C):
    block_c = next_pow2(C)
    block_m = max(1, min(64, TILE // block_c))
    warps = 4 if block_c * block_m <= 4096 else 8
    return block_m, block_c, warps


def ln_forward(x, weight, bias, eps, out_dtype, input_bias=None):
    """(y, mean, rstd) of the rows of the contiguous ``x`` (..., C) -- plus ``input_bias`` (C,)
    when given -- y in ``out_dtype`` and x's shape, the statistics fp32 (one per row)."""
    C = x.shape[-1]
    M = x.numel() // C
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    mean, rstd = torch.empty(2, M, device=x.device, dtype=torch.float32)  # one allocation
    block_m, block_c, warps = _blocks(C)
    _ln_fwd_launch[(cdiv(M, block_m),)](
        x, input_bias if input_bias is not None else weight, weight,
        bias if bias is not None else weight, y, mean, rstd, M, C, eps,
        HAS_XBIAS=input_bias is not None, HAS_BIAS=bias is not None, BLOCK_M=block_m,
        BLOCK_C=block_c, num_warps=warps)
    return y, mean, rstd


def ln_forward_nchw(x, weight, bias, eps, out_dtype):
    """LayerNorm of the channels-last map ``x`` (b, h, w, C), contiguous, returned as a
    contiguous (b, C, h, w) map in ``out_dtype`` (no autograd)."""
    b, h, w, C = x.shape
    y = torch.empty((b, C, h, w), device=x.device, dtype=out_dtype)
    block_m, block_c, _ = _blocks(C)
    block_m = max(block_m, 16)  # >= 16 pixels per channel plane: stores of whole sectors
    warps = 4 if block_c * block_m <= 4096 else 8
    _ln_fwd_nchw_launch[(cdiv(h * w, block_m), b)](
        x, weight, bias if bias is not None else weight, y, h * w, C, eps,
        HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps)
    return y


def ln_backward(dy, x, weight, mean, rstd, need_weight_grads=True):
    """(dx, dweight, dbias) for :func:`ln_forward`; dx in x's dtype and shape, the others in
    fp32 (None when not needed). ``dy`` and ``x`` must be contiguous."""
    C = x.shape[-1]
    M = x.numel() // C
    dx = torch.empty_like(x)
    block_m, block_c, warps = _blocks(C)
    nblocks = cdiv(M, block_m)
    # 4 programs per SM (4 SMs under Triton's CPU interpreter: few, fast tests)
    grid = max(1, min(nblocks, 4 * sm_count(x.device, 4)))
    partials = torch.empty((2, grid, C), device=x.device, dtype=torch.float32)
    _ln_bwd_launch[(grid,)](x, weight, dy, mean, rstd, dx, partials, M, C, cdiv(nblocks, grid),
                            BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps)
    if not need_weight_grads:
        return dx, None, None
    dw, db = partials.sum(1)
    return dx, dw, db


class _LayerNormTriton(torch.autograd.Function):
    """Few host operations on purpose: training steps of these backbones are host-bound on
    slow CPUs, and every tensor operation here is paid once per norm and step (on the device
    machines an allocation costs ~5-9 us of host time, a reduction 10-15 us, the
    launch itself 17-19 us; docs/benchmarks.md, runs AB-AE)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        x = x.contiguous()
        y, mean, rstd = ln_forward(x, weight, bias, eps, out_dtype)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        _, need_w, need_b, _, _ = ctx.needs_input_grad
        need_b = need_b and ctx.has_bias
        dx, dw, db = ln_backward(dy.contiguous(), x, weight, mean, rstd, need_w or need_b)
        if need_w and dw.dtype != weight.dtype:
            dw = dw.to(weight.dtype)
        if need_b and db.dtype != weight.dtype:
            db = db.to(weight.dtype)
        return dx, dw if need_w else None, db if need_b else None, None, None


def layer_norm_triton(x, weight, bias, eps, out_dtype):
    return _LayerNormTriton.apply(x, weight, bias, eps, out_dtype)
