"""Shape checks and small helpers shared by every scan backend and the Triton kernels."""
import functools

import torch


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device, interpreter_sms: int) -> int:
    """Streaming multiprocessors of a CUDA device (launch grids are sized by it);
    ``interpreter_sms`` stands in for Triton's CPU interpreter."""
    if device.type != 'cuda':
        return interpreter_sms
    return torch.cuda.get_device_properties(device).multi_processor_count


# plain-Python launch-grid arithmetic: triton.cdiv / next_power_of_2 are @jit functions, and
# calling one from the host goes through Triton's JIT wrapper, which costs host time per launch
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def cast(t, dtype):
    """``t`` in ``dtype`` (None stays None). Skips ``Tensor.to`` when ``t`` already has the
    dtype: even a no-op ``to`` is a dispatcher call, and the training step runs hundreds of
    them where the host time is what limits it."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def op_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an op on ``x`` runs in, as autocast would run it: the autocast dtype under
    autocast on x's device type, else x's own (the fused Functions cast explicitly)."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def compute_dtype(dtype):
    """Accumulation dtype: float32, or float64 when the inputs are float64 (the test oracle)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_grouped(t, name):
    """View per-token B/C as (b, g, n, l); (b, n, l) is the single-group case."""
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() == 4:
        return t
    raise ValueError(f'{name} must be (b, n, l) or (b, g, n, l), got shape {tuple(t.shape)}')


def check_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Validate mamba-ssm shapes; returns (b, d, l, n, g)."""
    if u.dim() != 3:
        raise ValueError(f'u must be (b, d, l), got shape {tuple(u.shape)}')
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f'delta must have the shape of u {tuple(u.shape)}, '
                         f'got {tuple(delta.shape)}')
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f'A must be (d={d}, n), got shape {tuple(A.shape)}')
    if A.is_complex():
        raise ValueError('complex A is not supported (vision SSMs use real A)')
    n = A.shape[1]
    Bg, Cg = as_grouped(B, 'B'), as_grouped(C, 'C')
    g = Bg.shape[1]
    for name, t in (('B', Bg), ('C', Cg)):
        if t.shape != (b, g, n, l):
            raise ValueError(f'{name} must be (b={b}, n={n}, l={l}) or (b, g={g}, n, l), '
                             f'got shape {tuple(t.shape)}')
    if d % g:
        raise ValueError(f'd={d} must be divisible by the number of B/C groups g={g}')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f'{name} must be (d={d},), got shape {tuple(t.shape)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape)}')
    return b, d, l, n, g
