"""The ``cpu`` backend: the selective scan as compiled C (``scan_cpu.c``), called through ctypes.

The C source is compiled on first use with the system C compiler (``$CC``, else ``cc``/``gcc``/
``clang``; about a second) into ``$MMVISION_SSM_CACHE/cpu_scan`` (default
``~/.cache/mmvision_ssm``), keyed by the source, the compiler and the CPU, so each machine builds
it once. Without a compiler the dispatcher keeps the plain-PyTorch ``torch`` backend, and asking
for ``backend='cpu'`` says why it cannot run.

Work is split over ``torch.get_num_threads()`` OpenMP threads, the runtime torch itself runs on
(see the entry points in scan_cpu.c; Python threads lost to torch's spinning OpenMP workers: the
backward did not speed up on 2 threads). Forward work is split by channel; backward work by
(batch, B/C group, a slice of the group's channels), each slice adding into its own partial sums
of dB and dC, which are added up afterwards.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading

import torch
from torch.autograd.function import once_differentiable

from .common import as_grouped, check_scan_inputs

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'scan_cpu.c')
CACHE_ENV = 'MMVISION_SSM_CACHE'
# -ffp-contract=fast allows fused multiply-adds (ISO C mode turns them off); no -ffast-math
# (NaN must stay NaN)
CFLAGS = ['-O3', '-std=c11', '-fPIC', '-shared', '-fno-math-errno', '-ffp-contract=fast']
# tried in turn: a compiler may lack -march=native or OpenMP (-fopenmp-simd still honours the
# source's `omp simd` hints; the spans then run one after another)
FLAG_CHOICES = (['-march=native', '-fopenmp'], ['-fopenmp'], ['-march=native', '-fopenmp-simd'],
                ['-fopenmp-simd'])
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _ScanArgs(ctypes.Structure):
    """The C ``Scan`` struct: every field 8 bytes, in the C order."""
    _fields_ = ([(name, ctypes.c_int64) for name in
                 ('b', 'd', 'l', 'n', 'g', 'splits', 'softplus')] +
                [(name, ctypes.c_void_p) for name in
                 ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'bias', 'y', 'last', 'gy', 'glast',
                  'gu', 'gdelta', 'gz', 'gA', 'gD', 'gbias', 'gB', 'gC')])


def _compiler():
    for name in (os.environ.get('CC'), 'cc', 'gcc', 'clang'):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature():
    """What -march=native depends on: the CPU's feature flags (Linux) or its name."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cc, out):
    """Compile SOURCE into ``out`` (atomically: processes may build at once); '' or the error."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(out))
    os.close(fd)
    for extra in FLAG_CHOICES:
        cmd = [cc, *CFLAGS, *extra, SOURCE, '-o', tmp, '-lm']
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, out)
            return ''
    os.unlink(tmp)
    return f'`{" ".join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-600:]}'


@functools.lru_cache(maxsize=None)
def _library():
    """(ctypes library, None) or (None, why it is not available)."""
    cc = _compiler()
    if cc is None:
        return None, ('no C compiler found (install gcc or clang, or set CC=/path/to/cc); '
                      'backend="torch" runs without one')
    version = subprocess.run([cc, '--version'], capture_output=True, text=True).stdout
    with open(SOURCE, 'rb') as f:
        key = hashlib.sha256(b'\0'.join([
            f.read(), repr((CFLAGS, FLAG_CHOICES)).encode(), cc.encode(), version.encode(),
            _cpu_signature().encode(), platform.machine().encode()])).hexdigest()[:16]
    cache = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                      'mmvision_ssm')
    path = os.path.join(cache, 'cpu_scan', f'scan_cpu_{key}.so')
    if not os.path.exists(path):
        err = _build(cc, path)
        if err:
            return None, f'building {SOURCE} failed: {err}'
    try:  # e.g. an OpenMP runtime already in the process that lacks a symbol the build used
        lib = ctypes.CDLL(path)
    except OSError as err:
        return None, f'loading {path} failed: {err}'
    for fn in (lib.scan_workspace_floats, lib.scan_padded_state, lib.scan_max_state):
        fn.restype = ctypes.c_int64
    lib.scan_workspace_floats.argtypes = [ctypes.c_int64, ctypes.c_int64]
    lib.scan_padded_state.argtypes = [ctypes.c_int64]
    lib.scan_max_state.argtypes = []
    for fn in (lib.scan_forward, lib.scan_backward):
        fn.restype = None
        fn.argtypes = [ctypes.POINTER(_ScanArgs), ctypes.c_int64, ctypes.c_void_p,
                       ctypes.c_int64, ctypes.c_int64]
    return lib, None


def unavailable_reason():
    """None when the compiled scan can run here, else a sentence saying why not."""
    return _library()[1]


def max_state():
    """The largest d_state the compiled scan takes (its state arrays are fixed-size)."""
    return _library()[0].scan_max_state()


class _Workspace(threading.local):
    """Per-thread workspace of the C calls, kept between calls (fresh memory costs page
    faults)."""

    def __init__(self):
        self.buf = None

    def get(self, numel):
        if self.buf is None or self.buf.numel() < numel:
            self.buf = torch.empty(numel, dtype=torch.float32)
        return self.buf


_WORK = _Workspace()


def _run(fn, args, units, l, n):  # noqa: E741
    """fn over [0, units) on up to torch.get_num_threads() threads."""
    need = _library()[0].scan_workspace_floats(l, n)
    threads = max(1, min(torch.get_num_threads(), units))
    fn(ctypes.byref(args), units, _WORK.get(threads * need).data_ptr(), need, threads)


def _f32(t, pad_to=None):
    """float32, contiguous; the last dim zero-padded to ``pad_to``."""
    if t is None:
        return None
    t = t.detach().to(torch.float32)
    if pad_to is not None and pad_to > t.shape[-1]:
        return torch.nn.functional.pad(t, (0, pad_to - t.shape[-1]))
    return t.contiguous()


def _ptr(t):
    return None if t is None else t.data_ptr()


class _Inputs:
    """The inputs in the C layouts (float32, contiguous; B/C time-major per group)."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias):
        self.n = A.shape[1]
        # the state as the C code runs it (zero states pad it to whole vectors)
        self.np = np_ = _library()[0].scan_padded_state(self.n)
        self.u, self.delta, self.A = _f32(u), _f32(delta), _f32(A, np_)
        # (b, g, n, l) -> (b, g, l, n); for n = 1 only a view
        self.B = _f32(as_grouped(B, 'B').transpose(-1, -2), np_)
        self.C = _f32(as_grouped(C, 'C').transpose(-1, -2), np_)
        self.D, self.z, self.bias = _f32(D), _f32(z), _f32(delta_bias)

    def args(self, softplus, splits=1):
        b, d, l = self.u.shape  # noqa: E741
        g = self.B.shape[1]
        return _ScanArgs(b=b, d=d, l=l, n=self.np, g=g, splits=splits, softplus=int(softplus),
                         **{k: _ptr(getattr(self, k)) for k in
                            ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'bias')})


class SelectiveScanCPU(torch.autograd.Function):
    """Forward and backward in C; only the inputs are kept (the backward recomputes the
    states per channel, in cache)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        x = _Inputs(u, delta, A, B, C, D, z, delta_bias)
        b, d, l = u.shape  # noqa: E741
        args = x.args(delta_softplus)
        y = torch.empty(b, d, l, dtype=torch.float32)
        last = torch.empty(b, d, x.np, dtype=torch.float32) if return_last_state else None
        args.y, args.last = _ptr(y), _ptr(last)
        _run(_library()[0].scan_forward, args, b * d, l, x.np)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        y = y.to(u.dtype)
        return (y, last[..., :x.n]) if return_last_state else y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_last=None):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        x = _Inputs(u, delta, A, B, C, D, z, delta_bias)
        b, d, l = u.shape  # noqa: E741
        g, n = x.B.shape[1], x.np
        # enough (batch, group, channel-slice) units for every thread
        splits = max(1, min(d // g, -(-torch.get_num_threads() // (b * g))))
        args = x.args(ctx.delta_softplus, splits)
        gy, glast = _f32(grad_y), _f32(grad_last, n)
        gu, gdelta = torch.empty(b, d, l), torch.empty(b, d, l)
        gz = torch.empty(b, d, l) if z is not None else None
        gA = torch.empty(b, d, n)
        gD = torch.empty(b, d) if D is not None else None
        gbias = torch.empty(b, d) if delta_bias is not None else None
        gB, gC = torch.zeros(2, splits, b, g, l, n).unbind(0)
        for name, t in (('gy', gy), ('glast', glast), ('gu', gu), ('gdelta', gdelta),
                        ('gz', gz), ('gA', gA), ('gD', gD), ('gbias', gbias), ('gB', gB),
                        ('gC', gC)):
            setattr(args, name, _ptr(t))
        _run(_library()[0].scan_backward, args, splits * b * g, l, n)

        def bc_grad(t, like):  # (splits, b, g, l, n padded) -> like's layout and dtype
            return t.sum(0)[..., :x.n].transpose(-1, -2).reshape(like.shape).to(like.dtype)

        return (gu.to(u.dtype), gdelta.to(delta.dtype), gA.sum(0)[:, :x.n].to(A.dtype),
                bc_grad(gB, B), bc_grad(gC, C),
                None if D is None else gD.sum(0).to(D.dtype),
                None if z is None else gz.to(z.dtype),
                None if delta_bias is None else gbias.sum(0).to(delta_bias.dtype),
                None, None)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """Selective scan (mamba-ssm semantics, see :func:`mmvision_ssm.ops.selective_scan`) in
    compiled C: CPU tensors, float32/float16/bfloat16 in, float32 state."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f'scan backend "cpu" is not available: {reason}')
    if u.device.type != 'cpu' or u.dtype not in _DTYPES:
        raise ValueError(f'scan backend "cpu" takes CPU float32/float16/bfloat16 tensors, got '
                         f'{u.dtype} on {u.device}; use backend="torch" (float64: "ref"/"torch")')
    if A.shape[1] > max_state():
        raise ValueError(f'scan backend "cpu" supports d_state <= {max_state()}, got A with '
                         f'd_state {A.shape[1]}; use backend="torch"')
    if u.shape[-1] == 0:
        from .scan_ref import selective_scan_ref
        return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus,
                                  return_last_state=return_last_state)
    return SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                  return_last_state)
