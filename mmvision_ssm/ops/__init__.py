"""Selective-scan ops: one dispatcher over reference, PyTorch, Triton and mamba-ssm backends.

    from mmvision_ssm.ops import selective_scan, cross_scan, cross_merge, cross_selective_scan

Backends (``backend=`` argument or ``$MMVISION_SSM_SCAN_BACKEND``; automatic when unset):
``ref`` sequential oracle (any dtype), ``torch`` chunked scan in plain PyTorch (any device,
float64), ``cpu`` compiled C built on first use (CPU default when a C compiler is there),
``triton`` fused CUDA kernels (GPU default), ``mamba_ssm`` mamba-ssm's CUDA kernel when installed.
Triton is imported only when the triton backend runs.
"""
import torch
import torch.nn.functional as F

from .common import check_scan_inputs
from .cross import check_cross_inputs, cross_merge, cross_scan, cross_selective_scan_composed
from .dispatch import BACKENDS, ENV_VAR, resolve_backend
from .flops import cross_selective_scan_flops, selective_scan_flop_handle, selective_scan_flops
from .scan_ref import selective_scan_ref
from .scan_torch import release_scratch, selective_scan_torch


def _scan_fn(name):
    if name == 'ref':
        return selective_scan_ref
    if name == 'torch':
        return selective_scan_torch
    if name == 'cpu':
        from .scan_cpu import selective_scan_cpu
        return selective_scan_cpu
    if name == 'triton':
        from .scan_triton import selective_scan_triton
        return selective_scan_triton
    from .scan_mamba_ssm import selective_scan_mamba_ssm
    return selective_scan_mamba_ssm


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend=None):
    """Mamba (S6) selective scan with mamba-ssm's semantics.

    Args:
        u, delta: (b, d, l).  A: (d, n), real (negative for a decaying state).
        B, C: per token, (b, n, l) or grouped (b, g, n, l) with d % g == 0; channels
            i*(d//g) ... (i+1)*(d//g)-1 read group i.
        D, delta_bias: (d,) or None.  z: (b, d, l) gate, ``y * silu(z)``, or None.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the final state (b, d, n) (float32, float64 for float64).
        backend: 'ref' | 'torch' | 'cpu' | 'triton' | 'mamba_ssm' | None (automatic).

    Returns y (b, d, l) in u's dtype (state accumulated in float32), or (y, last_state).
    Differentiable in every tensor argument.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u.device, u.dtype, A.shape[1])
    return _scan_fn(name)(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                          delta_softplus=delta_softplus, return_last_state=return_last_state)


def cross_selective_scan(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                         channels_last=False, backend=None):
    """VMamba's cross-scan -> selective scan -> cross-merge in one op.

    Args:
        x: (b, d, h, w), or (b, h, w, d) with ``channels_last``.
        delta: (b, 4, d, h, w) -- or (b, h, w, 4, d) -- direction k's dt at every pixel, in the
            spatial layout (VMamba's projections are per token, so they commute with the scan
            order).
        A: (4*d, n), direction k uses rows k*d ... (k+1)*d-1; D, delta_bias: (4*d,) or None.
        B, C: (b, 4, n, h, w) -- or (b, h, w, 4, n) -- direction k's B/C at every pixel.

    Returns y in x's layout and dtype: the sum over directions k of the scan along order k
    (0 row-major, 1 column-major, 2/3 their reverses) put back at the pixels. The Triton backend
    traverses the maps in place (no four copies in memory); the others compose
    :func:`cross_scan`, :func:`selective_scan` (4 groups) and :func:`cross_merge`.
    """
    b, d, h, w, n = check_cross_inputs(x, delta, A, B, C, D, delta_bias, channels_last)
    name = resolve_backend(backend, x.device, x.dtype, n)
    if name == 'triton':
        from .scan_triton import cross_selective_scan_triton
        return cross_selective_scan_triton(x, delta, A, B, C, D=D, delta_bias=delta_bias,
                                           delta_softplus=delta_softplus,
                                           channels_last=channels_last)
    scan = _scan_fn(name)
    return cross_selective_scan_composed(scan, x, delta, A, B, C, D=D, delta_bias=delta_bias,
                                         delta_softplus=delta_softplus,
                                         channels_last=channels_last)


def cross_selective_scan_dt_proj(x, dts, dt_weight, A, B, C, D=None, delta_bias=None,
                                 delta_softplus=True, backend=None):
    """:func:`cross_selective_scan` on channels-last maps with delta made from a projection:
    ``delta = (dts @ dt_weight.T).unflatten(-1, (4, d))`` at every pixel (VMamba's dt
    projection, its four directions as one block-diagonal weight).

    Args:
        x: (b, h, w, d).  dts: (b, h, w, 4 r).  dt_weight: (4 d, 4 r).  The rest as in
            :func:`cross_selective_scan` (channels-last).

    Same values and gradients as projecting first and calling :func:`cross_selective_scan`;
    the Triton backend keeps ``dts`` for the backward and recomputes delta there (4 r instead of
    4 d values a pixel: VMamba's dt_rank is d / 16), the others project and compose.
    """
    if x.dim() != 4:
        raise ValueError(f'x must be a (b, h, w, d) map, got shape {tuple(x.shape)}')
    b, h, w, d = x.shape
    if dts.dim() != 4 or dts.shape[:3] != x.shape[:3] or dt_weight.dim() != 2 or \
            dt_weight.shape != (4 * d, dts.shape[-1]):
        raise ValueError(
            f'cross_selective_scan_dt_proj: dts must be (b, h, w, 4 r) over x\'s (b, h, w) = '
            f'{tuple(x.shape[:3])} and dt_weight (4 d, 4 r) = ({4 * d}, {dts.shape[-1]}); got '
            f'dts {tuple(dts.shape)}, dt_weight {tuple(dt_weight.shape)}')
    name = resolve_backend(backend, x.device, x.dtype, A.shape[1])
    if name == 'triton':
        # delta's shape is right by construction: a meta tensor stands in for it
        check_cross_inputs(x, torch.empty(b, h, w, 4, d, device='meta'), A, B, C, D,
                           delta_bias, True)
        from .scan_triton import cross_selective_scan_dt_proj_triton
        return cross_selective_scan_dt_proj_triton(x, dts, dt_weight, A, B, C, D=D,
                                                   delta_bias=delta_bias,
                                                   delta_softplus=delta_softplus)
    delta = F.linear(dts, dt_weight).unflatten(-1, (4, d))
    return cross_selective_scan(x, delta, A, B, C, D=D, delta_bias=delta_bias,
                                delta_softplus=delta_softplus, channels_last=True,
                                backend=name)


__all__ = [
    'BACKENDS', 'ENV_VAR', 'selective_scan', 'cross_scan', 'cross_merge', 'cross_selective_scan',
    'cross_selective_scan_dt_proj',
    'selective_scan_ref', 'selective_scan_torch', 'selective_scan_flops',
    'cross_selective_scan_flops', 'selective_scan_flop_handle', 'resolve_backend',
    'release_scratch',
]
