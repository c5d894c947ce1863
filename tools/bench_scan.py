"""Benchmark the selective-scan backends side by side (forward and forward+backward).

GPU (CUDA events, warm-up, median of --reps runs):
    python tools/bench_scan.py --device cuda --out results.json
    python tools/bench_scan.py --device cuda --cuda-graph   # GPU time alone, see time_cuda_graph
compares ``triton`` (ours), ``mamba_ssm`` (mamba-ssm's ``selective_scan_fn``, when importable:
build it with tools/gpu_build_mamba_ssm.sh and set MMVISION_SSM_MAMBA_SRC) and ``torch`` at
VMamba-T stage-1 shapes (4 directions as 4 B/C groups, d_state 1) and MambaVision-T stage-3
shapes, and the fused cross-scan+scan+merge op against its minimum-bytes model and the device
copy bandwidth measured in the same run.

CPU (wall clock, median of --reps runs):
    python tools/bench_scan.py --device cpu
compares ``cpu`` (compiled C) and ``torch`` with the sequential ``ref`` at the same shapes with
a CPU-sized batch (threads: ``--threads``).
"""
import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mmvision_ssm.ops import (cross_merge, cross_scan, cross_selective_scan,  # noqa: E402
                              selective_scan)


def load_mamba_ssm():
    """mamba-ssm's selective_scan_fn from MMVISION_SSM_MAMBA_SRC (an in-place build), or None.

    The package's __init__ imports its whole model zoo (extra dependencies); when that fails the
    package is registered as a bare namespace so only ops/selective_scan_interface.py loads.
    """
    src = os.environ.get('MMVISION_SSM_MAMBA_SRC')
    if src and src not in sys.path:
        sys.path.insert(0, src)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    except Exception as err:  # noqa: BLE001  (fall back to the bare package)
        first_err = err
    if not src:
        print(f'mamba_ssm not available: {first_err}')
        return None
    for name in [m for m in sys.modules if m == 'mamba_ssm' or m.startswith('mamba_ssm.')]:
        del sys.modules[name]
    pkg = types.ModuleType('mamba_ssm')
    pkg.__path__ = [os.path.join(src, 'mamba_ssm')]
    sys.modules['mamba_ssm'] = pkg
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    except Exception as err:  # noqa: BLE001
        print(f'mamba_ssm not available: {first_err} / {err}')
        return None


# ----------------------------------------------------------------------------- timing


def time_cuda(fn, reps, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_interleaved(closures, reps, warmup=5):
    """{backend: (fwd ms, f+b ms)}, medians of ``reps`` rounds that time one call of each
    backend's fwd and f+b in turn (each as :func:`time_cuda` times it): the GPU machines' hosts
    drift by tens of percent within minutes, and interleaving makes the drift hit every
    backend alike instead of whichever ran during a slow spell."""
    for fwd, fwd_bwd in closures.values():
        for _ in range(warmup):
            fwd()
            fwd_bwd()
    times = {be: ([], []) for be in closures}
    for _ in range(reps):
        for be, fns in closures.items():
            for fn, acc in zip(fns, times[be]):
                acc.append(time_cuda(fn, 1, warmup=0))
    return {be: (statistics.median(tf), statistics.median(tfb)) for be, (tf, tfb) in times.items()}


def time_cuda_graph(fn, reps, warmup=5):
    """:func:`time_cuda` of replays of ``fn`` captured in a CUDA graph: the GPU time alone.
    Eager timing of a call whose kernels take tens of microseconds measures the host's launch
    and dispatch work instead (docs/benchmarks.md, runs I and X1), for every backend alike."""
    from mmvision_ssm.benchmark import graph_replay
    return time_cuda(graph_replay(fn, torch.device('cuda'), warmup=warmup), reps, warmup=2)


def time_cpu(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ----------------------------------------------------------------------------- inputs


def scan_inputs(b, d, l, n, g, dtype, device, seed=0):  # noqa: E741
    """Realistic magnitudes: dt = softplus(raw + bias) ~ 1e-3..1e-1, A = -(1..n) (S4D-real)."""
    gen = torch.Generator(device='cpu').manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=gen).to(device)

    bc = (b, n, l) if g is None else (b, g, n, l)
    return dict(
        u=r(b, d, l).to(dtype), delta=(r(b, d, l) * 0.5).to(dtype),
        A=-torch.arange(1, n + 1, dtype=torch.float32, device=device).repeat(d, 1),
        B=r(*bc).to(dtype), C=r(*bc).to(dtype), D=torch.ones(d, device=device),
        delta_bias=(torch.rand(d, generator=gen) * 4 - 6).to(device))


def scan_fn(backend, mamba_fn):
    """``backend`` names ours (through ``selective_scan``), ``mamba_ssm``, or
    ``triton@PACKAGE``: the Triton backend of a copy exported by tools/export_revision.sh."""
    if backend == 'mamba_ssm':
        def run(u, delta, A, B, C, D, delta_bias):
            return mamba_fn(u, delta, A, B, C, D, None, delta_bias, True)
        return run
    scan = selective_scan
    if '@' in backend:
        from benchmark import import_package
        backend, package = backend.split('@')
        scan = import_package(package, 'ops').selective_scan

    def run(u, delta, A, B, C, D, delta_bias):
        return scan(u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=True,
                    backend=backend)
    return run


#: the plain scan's inputs every benchmark differentiates
SCAN_GRADS = ['u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias']


def fwd_bwd_closures(fn, inputs, grad_names):
    leaves = {k: v.clone().requires_grad_(k in grad_names) for k, v in inputs.items()}
    gy = None

    def fwd():
        with torch.no_grad():
            return fn(**leaves)

    def fwd_bwd():
        nonlocal gy
        y = fn(**leaves)
        if gy is None:
            gy = torch.randn_like(y)
        return torch.autograd.grad(y, [leaves[k] for k in grad_names], gy)
    return fwd, fwd_bwd


# ----------------------------------------------------------------------------- benchmarks


def bench_plain(args, shapes, backends, mamba_fn, timer):
    rows = []
    for name, (b, d, l, n, g) in shapes.items():  # noqa: E741
        for dtype in args.dtypes:
            inputs = scan_inputs(b, d, l, n, g, dtype, args.device)
            res = {}
            if args.interleave:  # the GPU backends in turn, round by round
                fast = [be for be in backends if be not in ('torch', 'cpu', 'ref')
                        and (be != 'mamba_ssm' or mamba_fn is not None)]
                res.update(time_interleaved(
                    {be: fwd_bwd_closures(scan_fn(be, mamba_fn), inputs, SCAN_GRADS)
                     for be in fast},
                    args.reps))
            for be in backends:
                if (be == 'mamba_ssm' and mamba_fn is None) or be in res:
                    continue
                fwd, fwd_bwd = fwd_bwd_closures(scan_fn(be, mamba_fn), inputs, SCAN_GRADS)
                reps = args.reps if be != 'ref' else max(1, min(args.reps, 3))
                try:
                    res[be] = (timer(fwd, reps), timer(fwd_bwd, reps))
                except Exception as err:  # noqa: BLE001  (report, keep benchmarking)
                    print(f'{name} {be} {dtype}: failed: {type(err).__name__}: {err}')
                if args.device == 'cuda':
                    torch.cuda.empty_cache()
            for be, (tf, tfb) in res.items():
                rows.append(dict(kind='plain', case=name, shape=f'b={b} d={d} l={l} n={n} g={g}',
                                 dtype=str(dtype).replace('torch.', ''), backend=be,
                                 fwd_ms=tf, fwd_bwd_ms=tfb))
            base = 'mamba_ssm' if 'mamba_ssm' in res else 'ref' if 'ref' in res else None
            fasts = ['triton'] if 'triton' in res else [be for be in ('cpu', 'torch') if be in res]
            for fast in fasts if base else []:
                print(f'{name:22s} {str(dtype):15s} {fast} vs {base}: fwd '
                      f'{res[base][0] / res[fast][0]:.2f}x  '
                      f'fwd+bwd {res[base][1] / res[fast][1]:.2f}x')
    return rows


def copy_bandwidth(device, reps):
    src = torch.randn(1 << 28, device=device)  # 1 GiB fp32
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), reps)
    nbytes = 2 * src.numel() * src.element_size()
    del src, dst
    torch.cuda.empty_cache()
    return nbytes / ms / 1e6  # GB/s


def bench_cross(args, mamba_fn, copy_gbs, only_fused=False):
    """VMamba-T stage-1 cross op: fused Triton vs composed paths; GB/s on the minimum-bytes model."""
    rows = []
    b, d, h, w, n = args.cross_shape
    L = h * w
    gen = torch.Generator(device='cpu').manual_seed(1)
    dev, dtype = args.device, torch.bfloat16
    for channels_last in getattr(args, 'layouts', (False, True)):
        x = torch.randn(b, d, h, w, generator=gen)
        delta = torch.randn(b, 4, d, h, w, generator=gen) * 0.5
        B, C = torch.randn(2, b, 4, n, h, w, generator=gen)
        if channels_last:
            x, delta = x.permute(0, 2, 3, 1), delta.permute(0, 3, 4, 1, 2)
            B, C = B.permute(0, 3, 4, 1, 2), C.permute(0, 3, 4, 1, 2)
        inputs = dict(x=x.contiguous().to(dev, dtype), delta=delta.contiguous().to(dev, dtype),
                      A=-torch.ones(4 * d, n, device=dev), B=B.contiguous().to(dev, dtype),
                      C=C.contiguous().to(dev, dtype), D=torch.ones(4 * d, device=dev),
                      delta_bias=torch.full((4 * d,), -4.0, device=dev))
        esz = 2
        fwd_bytes = esz * (b * d * L + 4 * b * d * L + 2 * 4 * b * n * L + b * d * L)
        bwd_bytes = esz * (b * d * L + 4 * b * d * L + 2 * 4 * b * n * L + b * d * L  # reads
                           + b * d * L + 4 * b * d * L + 2 * 4 * b * n * L)             # writes

        def fused(x, delta, A, B, C, D, delta_bias, _cl=channels_last):
            return cross_selective_scan(x, delta, A, B, C, D=D, delta_bias=delta_bias,
                                        channels_last=_cl, backend='triton')

        def composed(scan):
            def run(x, delta, A, B, C, D, delta_bias, _cl=channels_last):
                if _cl:
                    delta, B, C = (t.permute(0, 3, 4, 1, 2) for t in (delta, B, C))
                from mmvision_ssm.ops.cross import traverse
                xs = cross_scan(x, _cl).reshape(b, 4 * d, L)
                ys = scan(xs, traverse(delta).reshape(b, 4 * d, L), A, traverse(B).contiguous(),
                          traverse(C).contiguous(), D, delta_bias)
                return cross_merge(ys.view(b, 4, d, L), h, w, _cl)
            return run

        variants = {'triton fused': fused}
        for package in args.also_package.split(',') if args.also_package else []:
            from benchmark import import_package
            variants[f'triton fused@{package}'] = functools.partial(
                import_package(package, 'ops').cross_selective_scan, channels_last=channels_last,
                backend='triton')
        if not only_fused:
            variants['triton composed'] = composed(scan_fn('triton', None))
        if mamba_fn is not None and not only_fused:
            variants['mamba_ssm composed'] = composed(scan_fn('mamba_ssm', mamba_fn))
        for vname, fn in variants.items():
            fwd, fwd_bwd = fwd_bwd_closures(fn, inputs, ['x', 'delta', 'A', 'B', 'C', 'D',
                                                        'delta_bias'])
            try:
                tf, tfb = args.timer(fwd, args.reps), args.timer(fwd_bwd, args.reps)
            except Exception as err:  # noqa: BLE001
                print(f'cross {vname}: failed: {type(err).__name__}: {err}')
                continue
            row = dict(kind='cross', case='vmamba_t_stage1_cross', backend=vname,
                       shape=f'b={b} d={d} h={h} w={w} n={n}', dtype='bfloat16',
                       layout='channels_last' if channels_last else 'channels_first',
                       fwd_ms=tf, fwd_bwd_ms=tfb, fwd_GBps=fwd_bytes / tf / 1e6,
                       fwd_bwd_GBps=(fwd_bytes + bwd_bytes) / tfb / 1e6, copy_GBps=copy_gbs)
            row['fwd_frac_of_copy'] = row['fwd_GBps'] / copy_gbs
            row['fwd_bwd_frac_of_copy'] = row['fwd_bwd_GBps'] / copy_gbs
            rows.append(row)
            torch.cuda.empty_cache()
    return rows


SWEEP_KEYS = ('BLOCK_D', 'BLOCK_L', 'num_warps', 'atomic', 'seg')
SWEEP = {  # (BLOCK_D, BLOCK_L, num_warps, atomic gB/gC reduction[, chunks a segment])
    'n1_long': [(1, 512, 2, True), (2, 512, 4, True), (4, 256, 4, True), (16, 128, 4, False)],
    'short': [(1, 256, 4, True), (2, 256, 4, True), (4, 256, 8, True), (1, 256, 8, True)],
    # the states-parallel kernels (n >= 2): channels per program, tile length, warps
    'states': [(1, 16, 1, True), (2, 16, 1, True), (4, 16, 1, True), (2, 8, 1, True),
               (4, 8, 1, True), (1, 32, 1, True), (2, 32, 1, True), (2, 16, 2, True),
               (4, 16, 2, True), (1, 256, 4, True)],
    # the states-parallel kernels' segments (0: none; --sweep-set states_seg)
    'states_seg': [(1, 16, 1, True, 0), (1, 16, 1, True, 4), (1, 16, 1, True, 8),
                   (1, 16, 1, True, 16), (1, 16, 1, True, 32), (1, 16, 1, True, 64),
                   (1, 16, 1, True, 128), (2, 16, 1, True, 16)],
    'cross_first': [(1, 512, 2, True), (2, 512, 4, True), (4, 512, 4, True)],
    'cross_last': [(8, 256, 4, True), (16, 128, 4, False), (4, 512, 4, True)],
}


def sweep(args, shapes):
    """Time the Triton kernels under several launch configurations (fwd and fwd+bwd)."""
    import mmvision_ssm.ops.scan_triton as st
    rows = []
    for name, (b, d, l, n, g) in shapes.items():  # noqa: E741
        inputs = scan_inputs(b, d, l, n, g, torch.bfloat16, 'cuda')
        for cfg in SWEEP[args.sweep_set or
                         ('states' if n > 1 else 'n1_long' if l > 1024 else 'short')]:
            st.CONFIG_OVERRIDE.clear()
            st.CONFIG_OVERRIDE.update(zip(SWEEP_KEYS, cfg))
            fwd, fwd_bwd = fwd_bwd_closures(scan_fn('triton', None), inputs, SCAN_GRADS)
            try:
                tf, tfb = args.timer(fwd, args.reps), args.timer(fwd_bwd, args.reps)
            except Exception as err:  # noqa: BLE001
                print(f'sweep {name} {cfg}: failed: {type(err).__name__}: {err}')
                continue
            rows.append(dict(kind='sweep', case=name, config=cfg, fwd_ms=tf, fwd_bwd_ms=tfb))
            print(f'sweep {name:22s} {str(cfg):24s} fwd {tf:8.3f} ms  fwd+bwd {tfb:8.3f} ms')
    b, d, h, w, n = args.cross_shape
    for cl in (False, True) if not args.no_cross else ():
        for cfg in SWEEP['cross_last' if cl else 'cross_first']:
            st.CONFIG_OVERRIDE.clear()
            st.CONFIG_OVERRIDE.update(zip(SWEEP_KEYS, cfg))
            sub = argparse.Namespace(**vars(args))
            sub.layouts = [cl]
            try:
                r = bench_cross(sub, None, args.copy_gbs, only_fused=True)[0]
            except Exception as err:  # noqa: BLE001
                print(f'sweep cross cl={cl} {cfg}: failed: {type(err).__name__}: {err}')
                continue
            r.update(kind='sweep', config=cfg)
            rows.append(r)
            print(f'sweep cross {r["layout"]:15s} {str(cfg):24s} fwd {r["fwd_ms"]:8.3f} ms '
                  f'({r["fwd_GBps"]:5.0f} GB/s)  fwd+bwd {r["fwd_bwd_ms"]:8.3f} ms '
                  f'({r["fwd_bwd_GBps"]:5.0f} GB/s)')
    st.CONFIG_OVERRIDE.clear()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--reps', type=int, default=None, help='timed runs (median reported)')
    parser.add_argument('--batch', type=int, default=None, help='override the batch size')
    parser.add_argument('--dtypes', default=None, help='comma list: bfloat16,float32')
    parser.add_argument('--out', default=None, help='write the rows as JSON here')
    parser.add_argument('--no-cross', action='store_true')
    parser.add_argument('--cases', default=None,
                        help='comma list of the plain-scan cases to run (default: the VMamba and '
                             'MambaVision shapes; the long ones only when named)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads')
    parser.add_argument('--sweep', action='store_true', help='time Triton launch configurations')
    parser.add_argument('--sweep-set', default=None, choices=list(SWEEP),
                        help='--sweep: this list of configurations for every case')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='time CUDA-graph replays of each call (GPU time without the host)')
    parser.add_argument('--interleave', action='store_true',
                        help='plain scans on CUDA: time the GPU backends in turn, one call each '
                             'per round (eager timing on a drifting host)')
    parser.add_argument('--also-package', default=None,
                        help='also time the Triton backend (plain scans) and the fused cross op '
                             'of these exported copies (comma list; tools/export_revision.sh, '
                             'e.g. mmvision_ssm_HEAD) in the same run')
    args = parser.parse_args()
    gpu = args.device == 'cuda'
    if args.cuda_graph and not gpu:
        raise SystemExit('--cuda-graph needs --device cuda')
    args.timer = (time_cuda_graph if args.cuda_graph else time_cuda) if gpu else time_cpu
    if args.interleave and (not gpu or args.cuda_graph):
        raise SystemExit('--interleave times eager CUDA calls: not with --cuda-graph or --device cpu')
    args.reps = args.reps or (30 if gpu else 3)
    args.dtypes = [getattr(torch, s) for s in (args.dtypes or ('bfloat16' if gpu else 'float32'))
                   .split(',')]
    if args.threads:
        torch.set_num_threads(args.threads)
    b = args.batch or (64 if gpu else 2)
    # VMamba-T stage 1 at 224^2 (ssm_ratio 1.0 -> d_inner 96, 4 directions as 4 B/C groups, n=1);
    # MambaVision-T stage 3 at 224^2 (dim 320, expand 1 -> the scan sees d_inner/2 = 160 channels,
    # one 14x14 window = 196 tokens; the official mixer uses d_state 8, the goal says 16).
    shapes = {'vmamba_t_stage1': (b, 4 * 96, 56 * 56, 1, 4),
              'mambavision_t_s3_n8': (b if gpu else 4 * b, 160, 196, 8, None),
              'mambavision_t_s3_n16': (b if gpu else 4 * b, 160, 196, 16, None)}
    # long sequences at several states, only when named by --cases: MambaVision-T's windows in
    # the official downstream configs, a batch of 2 (Mask R-CNN at 1344x800: stage 3 one 112^2
    # window of the padded 84x50 map, stage 4 one 56^2; UperNet at 512^2: stage 3 one 64^2),
    # and a batch of 8 at 4096 tokens
    extra = {'long_n8': (8 if gpu else 1, 160, 4096, 8, None),
             'long_n16': (8 if gpu else 1, 160, 4096, 16, None),
             'mv_det_s3_n8': (2 if gpu else 1, 160, 112 * 112, 8, None),
             'mv_det_s4_n8': (2 if gpu else 1, 320, 56 * 56, 8, None),
             'mv_seg_s3_n8': (2 if gpu else 1, 160, 64 * 64, 8, None)}
    if args.cases:
        known = {**shapes, **extra}
        names = args.cases.split(',')
        unknown = [c for c in names if c not in known]
        if unknown:
            raise SystemExit(f'--cases: unknown {unknown}; choose from {", ".join(known)}')
        shapes = {c: known[c] for c in names}
    mamba_fn = load_mamba_ssm() if gpu else None
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                command=' '.join(sys.argv), torch=torch.__version__, python=platform.python_version(),
                device=torch.cuda.get_device_name() if gpu else platform.processor() or 'cpu',
                threads=torch.get_num_threads(), cuda_graph=args.cuda_graph)
    if gpu:
        import triton
        info['triton'] = triton.__version__
        info['cuda'] = torch.version.cuda
        info['mamba_ssm'] = getattr(sys.modules.get('mamba_ssm'), '__version__', None) or (
            os.path.basename(os.environ.get('MMVISION_SSM_MAMBA_SRC', '')) if mamba_fn else None)
    print(json.dumps(info))
    args.cross_shape = (b, 96, 56, 56, 1)
    if args.sweep:
        args.copy_gbs = copy_bandwidth(args.device, args.reps)
        print(f'copy bandwidth (read+write): {args.copy_gbs:.0f} GB/s')
        rows = sweep(args, shapes)
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(dict(info=info, copy_GBps=args.copy_gbs, rows=rows), f, indent=1)
        return
    backends = ['triton', 'mamba_ssm', 'torch'] if gpu else ['cpu', 'torch', 'ref']
    for i, package in enumerate(args.also_package.split(',') if args.also_package else []):
        backends.insert(1 + i, f'triton@{package}')
    rows = bench_plain(args, shapes, backends, mamba_fn, args.timer)
    if gpu and not args.no_cross:
        info['copy_GBps'] = copy_bandwidth(args.device, args.reps)
        rows += bench_cross(args, mamba_fn, info['copy_GBps'])
    print(f'\n{"kind":6s} {"case":24s} {"dtype":9s} {"backend":20s} {"layout":15s} '
          f'{"fwd ms":>9s} {"f+b ms":>9s} {"fwd GB/s":>9s} {"f+b GB/s":>9s}')
    for r in rows:
        print(f'{r["kind"]:6s} {r["case"]:24s} {r["dtype"]:9s} {r["backend"]:20s} '
              f'{r.get("layout", ""):15s} {r["fwd_ms"]:9.3f} {r["fwd_bwd_ms"]:9.3f} '
              f'{r.get("fwd_GBps", float("nan")):9.0f} {r.get("fwd_bwd_GBps", float("nan")):9.0f}')
    if gpu:
        print(f'copy bandwidth (read+write): {info["copy_GBps"]:.0f} GB/s' if 'copy_GBps' in info
              else '')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
