"""Host (CPU) time per call of our ops on tiny CUDA inputs, where the GPU work is negligible and
the host is the limit -- the cost every launch adds to a host-bound training step.

    python tools/host_overhead.py [--calls 200] [--profile 12] [--package mmvision_ssm_HEAD]

Prints microseconds per call for ATen references (F.layer_norm, nn.Linear) and our ops (Triton
LayerNorm, plain and cross selective scan; forward and forward+backward), the cost of the bare
Triton launch (``kernel[grid](...)``) against launching the compiled handle, and with
``--profile N`` the N most expensive Python functions (cProfile, own time) of our ops' f+b.
``--package`` times a copy exported by ``tools/export_revision.sh`` (under ``.snap/rev``)
instead, for a before/after on the same host.
"""
import argparse
import cProfile
import io
import pstats
import time

import torch
import torch.nn.functional as F
from benchmark import import_package  # tools/benchmark.py: ours or an exported revision


def host_us(fn, n):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


class Recorder:
    """Stands in for a @triton.jit kernel to capture one launch's grid and arguments."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)
        return launch


def bare_launch_costs(module, name, op, n):
    """Host cost of re-launching the kernel ``module.name`` with the arguments ``op()`` used:
    through the JIT entry point, through the package's FastLaunch wrapper (``<name>_launch``
    where the package has one, else None), and through the compiled kernel's own handle."""
    kernel = getattr(module, name)
    launcher = getattr(module, name[:-len('_kernel')] + '_launch', None)
    rec = Recorder(kernel)
    if launcher is not None:  # record what the wrapper launches, through the JIT
        enabled, launcher.kernel, launcher.enabled = launcher.enabled, rec, False
    else:
        setattr(module, name, rec)
    try:
        op()
    finally:
        if launcher is not None:
            launcher.kernel, launcher.enabled = kernel, enabled
        else:
            setattr(module, name, kernel)
    grid, args, kwargs = rec.calls[-1]
    jit_us = host_us(lambda: kernel[grid](*args, **kwargs), n)
    fast_us = host_us(lambda: launcher[grid](*args, **kwargs), n) if launcher else None
    compiled = kernel.run(*args, grid=grid, warmup=False, **kwargs)
    launch_kwargs = {k: v for k, v in kwargs.items() if k in kernel.arg_names}
    ordered = list(args) + [launch_kwargs[k] for k in kernel.arg_names[len(args):]]
    try:
        handle = compiled[tuple(grid) + (1,) * (3 - len(grid))]  # the handle wants 3 dims
        handle_us = host_us(lambda: handle(*ordered), n)
    except Exception as exc:  # the handle's calling convention differs between Triton versions
        handle_us = f'n/a ({type(exc).__name__}: {exc})'
    return jit_us, fast_us, handle_us, len(ordered)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--calls', type=int, default=200)
    ap.add_argument('--profile', type=int, default=12, help='top N functions per op (0: off)')
    ap.add_argument('--package', default='mmvision_ssm',
                    help='package to time, e.g. mmvision_ssm_HEAD from export_revision.sh')
    args = ap.parse_args()
    n = args.calls
    ops = import_package(args.package, 'ops')
    cross_selective_scan, selective_scan = ops.cross_selective_scan, ops.selective_scan
    layer_norm_triton = import_package(args.package, 'ops.layer_norm_triton')
    scan_triton = import_package(args.package, 'ops.scan_triton')
    scan_triton_states = import_package(args.package, 'ops.scan_triton_states')
    layer_norm = import_package(args.package, 'ops.layer_norm').layer_norm
    mamba_ssm_importable = import_package(args.package, 'ops.dispatch').mamba_ssm_importable
    print(f'package {args.package}')

    dev = 'cuda'
    x = torch.randn(64, 96, device=dev, requires_grad=True)
    w = torch.ones(96, device=dev, requires_grad=True)
    b = torch.zeros(96, device=dev, requires_grad=True)
    g = torch.randn(64, 96, device=dev)
    lin = torch.nn.Linear(96, 96).to(dev)
    ln_ours = lambda: layer_norm_triton.layer_norm_triton(x, w, b, 1e-5, torch.float32)  # noqa
    d, h, ww = 96, 8, 8
    xs = torch.randn(2, h, ww, d, device=dev, requires_grad=True)
    dl = torch.randn(2, h, ww, 4, d, device=dev, requires_grad=True)
    Bs = torch.randn(2, h, ww, 4, 1, device=dev, requires_grad=True)
    Cs = torch.randn(2, h, ww, 4, 1, device=dev, requires_grad=True)
    A = -torch.rand(4 * d, 1, device=dev)
    D, bias = torch.ones(4 * d, device=dev), torch.zeros(4 * d, device=dev)
    gy = torch.randn(2, h, ww, d, device=dev)
    cross = lambda: cross_selective_scan(xs, dl, A, Bs, Cs, D=D, delta_bias=bias,  # noqa
                                         channels_last=True, backend='triton')
    u = torch.randn(2, 160, 49, device=dev, requires_grad=True)
    dt = torch.randn(2, 160, 49, device=dev, requires_grad=True)
    As = -torch.rand(160, 16, device=dev)
    Bp = torch.randn(2, 16, 49, device=dev, requires_grad=True)
    Cp = torch.randn(2, 16, 49, device=dev, requires_grad=True)
    plain = lambda: selective_scan(u, dt, As, Bp, Cp, D=D[:160], delta_bias=bias[:160],  # noqa
                                   delta_softplus=True, backend='triton')
    # the VMamba case in miniature: one state, 4 groups of B/C, bf16 inputs
    u1 = torch.randn(2, 96, 49, device=dev, dtype=torch.bfloat16, requires_grad=True)
    dt1 = torch.randn(2, 96, 49, device=dev, dtype=torch.bfloat16, requires_grad=True)
    A1 = (-torch.rand(96, 1, device=dev)).requires_grad_()
    B1 = torch.randn(2, 4, 1, 49, device=dev, dtype=torch.bfloat16, requires_grad=True)
    C1 = torch.randn(2, 4, 1, 49, device=dev, dtype=torch.bfloat16, requires_grad=True)
    D1 = torch.ones(96, device=dev, requires_grad=True)
    bias1 = torch.zeros(96, device=dev, requires_grad=True)
    leaves1 = [u1, dt1, A1, B1, C1, D1, bias1]
    gy1 = torch.randn_like(u1)

    def plain1(backend):
        return lambda: selective_scan(u1, dt1, A1, B1, C1, D=D1, delta_bias=bias1,
                                      delta_softplus=True, backend=backend)
    plain1_fb = lambda backend: (lambda: torch.autograd.grad(plain1(backend)(), leaves1, gy1))  # noqa

    cases = [
        ('nn.Linear fwd', lambda: lin(x)),
        ('F.layer_norm fwd', lambda: F.layer_norm(x, (96,), w, b)),
        ('F.layer_norm f+b', lambda: torch.autograd.grad(F.layer_norm(x, (96,), w, b),
                                                         [x, w, b], g)),
        ('ours layer_norm fwd (dispatch)', lambda: layer_norm(x, w, b)),
        ('ours layer_norm fwd (Triton)', ln_ours),
        ('ours layer_norm f+b (Triton)', lambda: torch.autograd.grad(ln_ours(), [x, w, b], g)),
        ('cross scan fwd (Triton)', cross),
        ('cross scan f+b (Triton)', lambda: torch.autograd.grad(cross(), [xs, dl, Bs, Cs], gy)),
        ('plain scan n1 g4 bf16 fwd (Triton)', plain1('triton')),
        ('plain scan n1 g4 bf16 f+b (Triton)', plain1_fb('triton')),
        ('plain scan n16 fwd (Triton)', plain),
        ('plain scan n16 f+b (Triton)', lambda: torch.autograd.grad(plain(), [u, dt, Bp, Cp],
                                                                    torch.ones_like(u))),
    ]
    if mamba_ssm_importable():  # the baseline's host cost at the same inputs
        theirs = lambda: selective_scan(u, dt, As, Bp, Cp, D=D[:160], delta_bias=bias[:160],  # noqa
                                        delta_softplus=True, backend='mamba_ssm')
        cases += [('plain scan n1 g4 bf16 fwd (mamba-ssm)', plain1('mamba_ssm')),
                  ('plain scan n1 g4 bf16 f+b (mamba-ssm)', plain1_fb('mamba_ssm')),
                  ('plain scan n16 fwd (mamba-ssm)', theirs),
                  ('plain scan n16 f+b (mamba-ssm)', lambda: torch.autograd.grad(
                      theirs(), [u, dt, Bp, Cp], torch.ones_like(u)))]
    print(f'{"op":34s} {"host us/call":>12s}')
    for name, fn in cases:
        print(f'{name:34s} {host_us(fn, n):12.1f}', flush=True)

    print('\nbare Triton launches (the arguments of the op above):')
    for module, name, op in ((layer_norm_triton, '_ln_fwd_kernel', ln_ours),
                             (scan_triton, '_scan_fwd_kernel', cross),
                             (scan_triton_states, '_states_fwd_kernel', plain)):
        jit_us, fast_us, handle_us, nargs = bare_launch_costs(module, name, op, n)
        handle = handle_us if isinstance(handle_us, str) else f'{handle_us:.1f} us'
        fast = 'n/a' if fast_us is None else f'{fast_us:.1f} us'
        print(f'  {name} ({nargs} args): kernel[grid](...) {jit_us:.1f} us, FastLaunch {fast}, '
              f'compiled handle {handle}', flush=True)

    if args.profile:
        for name, fn in (('plain scan n1 g4 bf16 f+b', plain1_fb('triton')),
                         ('plain scan n16 f+b', lambda: torch.autograd.grad(
                             plain(), [u, dt, Bp, Cp], torch.ones_like(u))),
                         ('ours layer_norm f+b', lambda: torch.autograd.grad(ln_ours(), [x, w, b],
                                                                            g)),
                         ('cross scan f+b', lambda: torch.autograd.grad(cross(),
                                                                        [xs, dl, Bs, Cs], gy))):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                fn()
            prof.disable()
            torch.cuda.synchronize()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats('tottime').print_stats(args.profile)
            print(f'\n--- cProfile, {n} x {name} (own time) ---')
            print('\n'.join(s.getvalue().splitlines()[4:]), flush=True)


if __name__ == '__main__':
    main()
