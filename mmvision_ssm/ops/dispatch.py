"""Backend choice for the scan ops: one place that knows what is installed and what fits.

Order of precedence: the ``backend=`` argument, then the environment variable
``MMVISION_SSM_SCAN_BACKEND``, then the automatic choice:

* CUDA tensors in float32/float16/bfloat16 -> ``triton`` for d_state 1 (VMamba; forward+backward
  1.78x mamba-ssm on GPU time, 1.41-1.64x eager, side by side), ``mamba_ssm`` for d_state > 1
  when it is installed (ours, forward+backward on GPU time: 1.14-1.17x at MambaVision's
  196-token windows and 1.10-1.15x at its detection windows, but 0.61-0.67x at 4096 tokens,
  its forward alone 0.37-1.06x, and eager at these sizes 0.59-0.77x, host time included;
  docs/benchmarks.md, runs CO-CU), else whichever of the two imports, else ``torch``;
* CPU tensors in float32/float16/bfloat16 -> ``cpu`` (compiled C, built on first use;
  forward+backward 3.7-7.8x ``torch``, 13-38x ``ref``, docs/benchmarks.md) when a C compiler
  is there, else ``torch``;
* anything else (float64) -> ``torch``.

``ref`` is never chosen automatically: it is the sequential oracle for tests.
"""
import functools
import importlib.util
import os

import torch

BACKENDS = ('ref', 'torch', 'cpu', 'triton', 'mamba_ssm')
ENV_VAR = 'MMVISION_SSM_SCAN_BACKEND'
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # the compiled backends'


def opaque_to_compile(fn):
    """``fn`` unchanged in eager mode; under ``torch.compile`` an opaque call (a graph break).

    Dynamo would trace into our Triton autograd Functions and Inductor failed on them
    (``InductorError``, docs/benchmarks.md runs E-H); run as eager islands, the rest of a model
    still compiles. The check costs a flag read in eager mode, not ``torch.compiler.disable``'s
    context switch on every call."""
    disabled = torch.compiler.disable(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():
            return disabled(*args, **kwargs)
        return fn(*args, **kwargs)
    return call


# Both checks are constants to torch.compile: Dynamo (torch 2.11) breaks the graph at
# importlib's find_spec, once per scan call of a compiled model (run Q, docs/benchmarks.md)
@functools.lru_cache(maxsize=None)
@torch.compiler.assume_constant_result  # inside: Dynamo unwraps lru_cache and traces this
def triton_importable():
    if importlib.util.find_spec('triton') is None:
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken Triton install must not break the CPU paths
        return False
    return True


@functools.lru_cache(maxsize=None)
@torch.compiler.assume_constant_result  # inside: Dynamo unwraps lru_cache and traces this
def mamba_ssm_importable():
    if importlib.util.find_spec('mamba_ssm') is None:
        return False
    try:
        import selective_scan_cuda  # noqa: F401  (mamba-ssm's compiled extension)
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
@torch.compiler.assume_constant_result  # inside: Dynamo unwraps lru_cache and traces this
def cpu_scan_unavailable():
    """None when the compiled CPU scan builds and loads here, else why not (compiles it once
    per machine on first call)."""
    from .scan_cpu import unavailable_reason
    return unavailable_reason()


@functools.lru_cache(maxsize=None)
@torch.compiler.assume_constant_result
def cpu_scan_max_state():
    """The largest d_state the compiled CPU scan takes (call once it is available)."""
    from .scan_cpu import max_state
    return max_state()


def _unavailable_reason(name, device, dtype, n):
    """None if ``name`` can run these inputs, else a sentence saying why not."""
    if name in ('ref', 'torch'):
        return None
    if name == 'cpu':
        if device.type != 'cpu':
            return f'it needs CPU tensors (got {device.type})'
        if dtype not in _FLOAT_DTYPES:
            return f'it computes in float32 and takes float32/float16/bfloat16 (got {dtype})'
        reason = cpu_scan_unavailable()
        if reason is None and n > cpu_scan_max_state():
            reason = f'it supports d_state <= {cpu_scan_max_state()} (got {n})'
        return reason
    if device.type != 'cuda':
        return f'it needs CUDA tensors (got {device.type})'
    if dtype not in _FLOAT_DTYPES:
        return f'it supports float32/float16/bfloat16 (got {dtype})'
    if name == 'triton':
        if not triton_importable():
            return 'Triton is not installed (pip install triton)'
        if n > 16:
            return f'its kernels support d_state <= 16 (got {n})'
        return None
    if not mamba_ssm_importable():
        return 'mamba_ssm with its compiled selective_scan_cuda is not installed'
    if n > 256:
        return f'mamba-ssm supports d_state <= 256 (got {n})'
    return None


def resolve_backend(backend, device, dtype, n):
    """Name of the backend to run; raises ValueError naming the valid choices."""
    requested = backend if backend is not None else os.environ.get(ENV_VAR) or None
    if requested is not None:
        if requested not in BACKENDS:
            src = 'backend=' if backend is not None else f'${ENV_VAR}='
            raise ValueError(f'unknown scan backend {src}{requested!r}; valid choices: '
                             f'{", ".join(BACKENDS)} (or None for automatic)')
        reason = _unavailable_reason(requested, device, dtype, n)
        if reason is not None:
            usable = [b for b in BACKENDS if _unavailable_reason(b, device, dtype, n) is None]
            raise ValueError(f'scan backend {requested!r} cannot run these inputs: {reason}. '
                             f'Usable here: {", ".join(usable)}')
        return requested
    if device.type == 'cpu':
        order = ('cpu',)
    else:
        order = ('triton', 'mamba_ssm') if n == 1 else ('mamba_ssm', 'triton')
    for name in order:
        if _unavailable_reason(name, device, dtype, n) is None:
            return name
    return 'torch'
