"""LayerNorm over the last dim with a chosen output dtype: Triton on CUDA, PyTorch elsewhere.

Why not ``F.layer_norm``: under autocast it runs in float32 and returns float32, so a bf16
channels-last map is first copied to fp32, normalised by ATen's kernel (slow for the small
channel counts of vision backbones: one 96-wide row per thread block) and cast back to bf16 by
the next Linear -- about 5x the bytes of one bf16 pass. The profile of VMamba-T (224^2 b128,
bf16) put 28 % of the inference time there. The Triton kernels read the input once in its own
dtype, compute in fp32 and write the output once in the dtype the caller asks for (the autocast
dtype when a Linear consumes it, float32 when it starts a residual stream). Numerics match
``F.layer_norm`` in float32 (tests/test_ops_layer_norm.py).
"""
import os

import torch
import torch.nn.functional as F

from .common import cast, compute_dtype
from .dispatch import triton_importable

#: rows wider than this go to PyTorch (one row must fit in one Triton block)
MAX_TRITON_WIDTH = 8192
#: When the kernels run. A Triton launch costs ~0.1 ms of host time forward and ~0.3 ms
#: backward on the device machines' CPUs (ATen's LayerNorm: 0.02 / 0.2 ms), and small batches
#: and training steps are host-bound there. So inputs of at least MIN_TRITON_NUMEL elements
#: use the kernels without autograd (where one saves ~0.1-0.6 ms of GPU time per call), and of
#: at least MIN_TRITON_NUMEL_GRAD with autograd (fwd+bwd saves ~0.6 ms at 19M elements);
#: smaller ones go to ATen (docs/benchmarks.md, runs E-G). Callers whose training is GPU-bound
#: at smaller sizes pass their own thresholds: with autograd, ATen's path also copies a bf16
#: input to float32 and back, and the kernels at every size cut the GPU time of 224^2 b64
#: training steps by 12-14 % (VMamba-T), 16 % (MLLA-T) and 5-10 % (ViT-B) -- but VMamba-T's
#: eager step lost 13 % on a slow host (run Z3), still 7 % after the Triton path's host work
#: was cut (run AF), so this default stays.
MIN_TRITON_NUMEL = 1 << 22
MIN_TRITON_NUMEL_GRAD = 1 << 24
#: 'torch' forces the PyTorch path (to compare, or to rule the kernels out when debugging),
#: 'triton' the kernels on every CUDA input they support, whatever its size
ENV_VAR = 'MMVISION_SSM_LAYER_NORM'


def output_dtype(x: torch.Tensor, low_precision_output: bool) -> torch.dtype:
    """The dtype a LayerNorm should return: ``F.layer_norm``'s under autocast (float32), or the
    autocast dtype when ``low_precision_output`` (its consumer casts to that dtype anyway);
    without autocast the input's dtype."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev) if low_precision_output else torch.float32
    return x.dtype


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               eps: float = 1e-5, out_dtype: torch.dtype | None = None,
               min_triton_numel: int | None = None,
               min_triton_numel_grad: int | None = None,
               input_bias: torch.Tensor | None = None) -> torch.Tensor:
    """LayerNorm of ``x`` over its last dim with affine ``weight``/``bias``, computed in fp32
    (float64 for float64 input), returned in ``out_dtype`` (default: x's dtype).
    ``input_bias`` (C,): added to x first -- the bias of the conv that produced x, which the
    kernel adds without autograd (ATen's cuDNN convolution adds it in a separate pass over
    the map); with autograd, or on the ATen path, it is added before the norm.
    Which kernels run (CUDA): inputs of ``MIN_TRITON_NUMEL`` elements (no autograd) and
    ``MIN_TRITON_NUMEL_GRAD`` (autograd) use the Triton kernels, smaller ones ATen.
    ``min_triton_numel`` / ``min_triton_numel_grad`` replace them for callers known to be
    GPU-bound at smaller sizes."""
    out_dtype = out_dtype or x.dtype
    width = x.shape[-1]
    grad = _records_grad(x, weight, input_bias)
    if grad:
        threshold = MIN_TRITON_NUMEL_GRAD if min_triton_numel_grad is None else min_triton_numel_grad
    else:
        threshold = MIN_TRITON_NUMEL if min_triton_numel is None else min_triton_numel
    triton = weight is not None and _use_triton(x, threshold)
    if input_bias is not None:
        if triton and not grad:
            from .layer_norm_triton import ln_forward
            return ln_forward(x.contiguous(), weight, bias, eps, out_dtype, input_bias)[0]
        x = x + cast(input_bias, x.dtype)  # as the conv's own bias add would
    if triton:
        from .layer_norm_triton import layer_norm_triton
        return layer_norm_triton(x, weight, bias, eps, out_dtype)
    # in float32 (autocast would do the same: layer_norm is on its float32 list)
    compute = compute_dtype(x.dtype)
    if grad and weight is not None and x.dtype != compute:
        return _LayerNormKeepingInput.apply(x, weight, bias, eps, out_dtype, threshold)
    y = F.layer_norm(cast(x, compute), (width,), cast(weight, compute), cast(bias, compute), eps)
    return cast(y, out_dtype)


def layer_norm_nchw(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    eps: float = 1e-5, out_dtype: torch.dtype | None = None,
                    min_triton_numel: int | None = None,
                    min_triton_numel_grad: int | None = None) -> torch.Tensor:
    """:func:`layer_norm` of a channels-last map ``x`` (b, h, w, C), returned as a contiguous
    (b, C, h, w) map: a backbone's output as detection/segmentation heads need it. Without
    autograd, on the Triton path, the kernel stores NCHW directly -- no separate permuting
    copy (at 224^2 b128 VMamba-T's four output copies took 3 % of its GPU time, run AO)."""
    if x.dim() != 4:
        raise ValueError(f'layer_norm_nchw expects a (b, h, w, C) map, got shape '
                         f'{tuple(x.shape)}')
    threshold = MIN_TRITON_NUMEL if min_triton_numel is None else min_triton_numel
    if not _records_grad(x, weight) and weight is not None and _use_triton(x, threshold):
        from .layer_norm_triton import ln_forward_nchw
        return ln_forward_nchw(x.contiguous(), weight, bias, eps, out_dtype or x.dtype)
    y = layer_norm(x, weight, bias, eps, out_dtype, min_triton_numel, min_triton_numel_grad)
    return y.permute(0, 3, 1, 2).contiguous()


def _records_grad(*tensors) -> bool:
    """Whether autograd records an op on these tensors (None entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _use_triton(x: torch.Tensor, threshold: int) -> bool:
    mode = os.environ.get(ENV_VAR)
    # under torch.compile, Inductor generates its own fused norm from F.layer_norm
    return (x.is_cuda and x.shape[-1] <= MAX_TRITON_WIDTH and x.dtype != torch.float64
            and mode != 'torch' and (mode == 'triton' or x.numel() >= threshold)
            and not torch.compiler.is_compiling() and triton_importable())


def layer_norm_rows(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    eps: float, out_dtype: torch.dtype,
                    min_triton_numel: int | None = None) -> tuple:
    """For fused autograd Functions that recompute a norm: LayerNorm of the (M, C) rows ``x2``
    without autograd, as ``(y in out_dtype, mean, rstd)`` (statistics float32, or float64 for
    float64 input); the same kernel choice as :func:`layer_norm` with autograd
    (``min_triton_numel``: its ``min_triton_numel_grad``; pass the same to the backward)."""
    if _use_triton(x2, MIN_TRITON_NUMEL_GRAD if min_triton_numel is None else min_triton_numel):
        from .layer_norm_triton import ln_forward
        return ln_forward(x2, weight, bias, eps, out_dtype)
    # in float32, as autocast runs F.layer_norm (ATen's CUDA kernels also reject a bf16 input
    # with float32 parameters)
    compute = compute_dtype(x2.dtype)
    y, mean, rstd = torch.native_layer_norm(cast(x2, compute), (x2.shape[1],),
                                            cast(weight, compute), cast(bias, compute), eps)
    return cast(y, out_dtype), mean.view(-1), rstd.view(-1)


def layer_norm_rows_backward(dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor | None, mean: torch.Tensor,
                             rstd: torch.Tensor, min_triton_numel: int | None = None) -> tuple:
    """(dx in x2's dtype, dweight, dbias) of :func:`layer_norm_rows` (dbias None without bias;
    the parameter gradients in the parameters' dtype)."""
    if _use_triton(x2, MIN_TRITON_NUMEL_GRAD if min_triton_numel is None else min_triton_numel):
        from .layer_norm_triton import ln_backward
        dx, dw, db = ln_backward(dy2.contiguous(), x2, weight, mean, rstd)
    else:
        compute = compute_dtype(x2.dtype)
        dx, dw, db = torch.ops.aten.native_layer_norm_backward(
            cast(dy2, compute), cast(x2, compute), (x2.shape[1],), mean.view(-1, 1),
            rstd.view(-1, 1), cast(weight, compute), cast(bias, compute),
            (True, True, bias is not None))
        dx = cast(dx, x2.dtype)
    return dx, cast(dw, weight.dtype), None if bias is None else cast(db, weight.dtype)


class _LayerNormKeepingInput(torch.autograd.Function):
    """ATen's LayerNorm of a half-precision input with autograd, keeping the input in its own
    dtype for the backward: ``F.layer_norm(x.float())`` would keep the float32 copy, twice the
    bytes (VMamba-T: ~190 MiB of its b64 training peak in the stages under the Triton size)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype, min_triton_numel):
        x2 = x.reshape(-1, x.shape[-1])
        y, mean, rstd = layer_norm_rows(x2, weight, bias, eps, out_dtype, min_triton_numel)
        ctx.save_for_backward(x2, weight, bias, mean, rstd)
        ctx.min_triton_numel = min_triton_numel
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, weight, bias, mean, rstd = ctx.saved_tensors
        dx, dw, db = layer_norm_rows_backward(grad.reshape(x2.shape), x2, weight, bias, mean,
                                              rstd, ctx.min_triton_numel)
        return dx.view(grad.shape), dw, db, None, None, None
