"""Launching our Triton kernels with less host time than ``kernel[grid](...)``.

Triton's JIT entry point re-derives, on every launch, how each argument specialises the kernel
(dtype and 16-byte alignment of every pointer, whether each integer is 1 or a multiple of 16),
then looks the compiled kernel up. Our scan kernels take ~50 arguments: on the GPU machines'
slow hosts that was ~59 us a launch against ~21 us through the compiled kernel's own handle
(``tools/host_overhead.py``, docs/benchmarks.md). :class:`FastLaunch` keeps the compiled kernel
per *exact* argument signature -- every integer's value, every tensor's dtype and alignment,
every keyword -- which determines Triton's specialisation, so a hit can only be the kernel the
JIT would have chosen; anything new goes through the JIT once (compiling if needed).

``MMVISION_SSM_TRITON_FAST_LAUNCH=0`` turns it off (every launch through the JIT), as does
Triton's CPU interpreter.
"""
import functools
import os

import torch

ENV_VAR = 'MMVISION_SSM_TRITON_FAST_LAUNCH'
#: entries per kernel before the cache starts over (detection's varied image sizes)
MAX_ENTRIES = 1024


def _current_device():
    return torch.cuda.current_device()


_Tensor = torch.Tensor


class FastLaunch:
    """``FastLaunch(kernel)[grid](*args, **kwargs)`` launches like ``kernel[grid](...)``.

    Our kernels take their pointer arguments first: the key is the leading tensors' dtypes and
    alignments (learned at the first launch: the arguments before the first non-tensor) and the
    rest of the positional arguments as they are, a tuple slice with no per-argument work."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.enabled = (os.environ.get(ENV_VAR, '1') != '0'
                        and os.environ.get('TRITON_INTERPRET', '0') in ('', '0')
                        and hasattr(kernel, 'arg_names'))
        self.cache = {}
        self.pointers = None  # how many leading arguments are tensors

    def __getitem__(self, grid):
        if not self.enabled:
            return self.kernel[grid]
        return functools.partial(self._launch, grid)

    def _key(self, args, kwargs):
        p = self.pointers
        if p is None:
            p = self.pointers = next((i for i, a in enumerate(args)
                                      if not isinstance(a, _Tensor)), len(args))
        try:
            ptrs = tuple([(a.dtype, a.data_ptr() & 15 == 0) for a in args[:p]])
        except AttributeError:  # not a tensor where the first launch had one
            return None
        return _current_device(), ptrs, args[p:], tuple(kwargs.items())

    def _launch(self, grid, *args, **kwargs):
        key = self._key(args, kwargs)
        hit = self.cache.get(key) if key is not None else None
        if hit is not None:
            compiled, tail = hit
            grid3 = tuple(grid) + (1,) * (3 - len(grid))
            compiled[grid3](*args, *[kwargs[name] for name in tail])
            return
        compiled = self.kernel.run(*args, grid=grid, warmup=False, **kwargs)
        tail = self.kernel.arg_names[len(args):]
        if (key is None or compiled is None or any(name not in kwargs for name in tail)
                or any(isinstance(a, _Tensor) for a in key[2])):
            # a defaulted parameter (order unknown here) or a tensor among the by-value
            # arguments (it would key by identity): that signature keeps the JIT path
            return
        if len(self.cache) >= MAX_ENTRIES:
            self.cache.clear()
        self.cache[key] = (compiled, tail)
