"""Run the plain selective scan's forward+backward a few times at one shape, nothing else: the
target process for profilers (Nsight Compute / Systems) of the scan kernels. The inputs and
the call are tools/bench_scan.py's, so a profile matches what that script times.

    ncu -k regex:_states_ --launch-skip 2 --launch-count 2 --set full \
        python tools/scan_once.py --shape 64 160 196 16

``--timeline`` profiles the last call with torch.profiler and prints, in microseconds from the
call's start, when the host issued each top-level op and each kernel launch and when each
kernel ran: where the host time on the critical path goes (the time before the first kernel,
and between kernels while the GPU waits).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from bench_scan import (SCAN_GRADS, fwd_bwd_closures, load_mamba_ssm, scan_fn,  # noqa: E402
                        scan_inputs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shape', type=int, nargs=4, default=(64, 160, 196, 16),
                   metavar=('B', 'D', 'L', 'N'), help='default: MambaVision-T stage 3, n 16')
    p.add_argument('--groups', type=int, default=None, help='B/C groups (default: ungrouped)')
    p.add_argument('--iters', type=int, default=2)
    p.add_argument('--backend', default='triton')
    p.add_argument('--timeline', action='store_true', help='print the last call\'s timeline')
    args = p.parse_args()
    b, d, l, n = args.shape  # noqa: E741
    mamba_fn = load_mamba_ssm() if args.backend == 'mamba_ssm' else None
    if args.backend == 'mamba_ssm' and mamba_fn is None:
        raise SystemExit('--backend mamba_ssm: mamba-ssm is not importable '
                         '(set MMVISION_SSM_MAMBA_SRC to its in-place build)')
    inputs = scan_inputs(b, d, l, n, args.groups, torch.bfloat16, 'cuda')
    _, fwd_bwd = fwd_bwd_closures(scan_fn(args.backend, mamba_fn), inputs, SCAN_GRADS)
    for _ in range(args.iters - (1 if args.timeline else 0)):
        fwd_bwd()
    torch.cuda.synchronize()
    print(f'ran {args.iters} x f+b at b={b} d={d} l={l} n={n} ({args.backend})')
    if args.timeline:
        timeline(fwd_bwd)


def timeline(fn):
    """One call of ``fn`` under torch.profiler: its host ops (top level), launches and kernels."""
    from torch.profiler import ProfilerActivity, profile, record_function, schedule
    # warm-up steps first: the profiler's own first-use costs (CUPTI buffers, ~3 ms) would
    # otherwise land inside the recorded call
    traced = []
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                 schedule=schedule(wait=0, warmup=3, active=1),
                 on_trace_ready=lambda p: traced.append(p.events())) as prof:
        for _ in range(4):
            with record_function('call'):
                fn()
            torch.cuda.synchronize()
            prof.step()
    events = traced[-1]
    call = next(e for e in events if e.name == 'call')
    t0 = call.time_range.start
    end_call = call.time_range.end
    rows = []
    for e in events:
        start, end = e.time_range.start - t0, e.time_range.end - t0
        if e.device_type == torch.autograd.DeviceType.CUDA:  # a kernel / memset on the GPU
            rows.append((start, end, 'GPU', e.name))
            continue
        if 'LaunchKernel' in e.name or 'Memset' in e.name:
            rows.append((start, end, 'launch', e.name))
            continue
        chain, parent = 0, e.cpu_parent  # depth under the call, or under its thread's root
        while parent is not None and parent is not call:
            chain, parent = chain + 1, parent.cpu_parent
        in_call = parent is call or t0 <= e.time_range.start <= end_call
        if e is not call and in_call and chain <= (1 if parent is call else 2):
            rows.append((start, end, f'host{chain}', e.name))
    print(f'{"start us":>9s} {"end us":>9s}  kind    name')
    for start, end, kind, name in sorted(rows):
        print(f'{start:9.1f} {end:9.1f}  {kind:6s}  {name[:90]}')
    print(f'call: host {call.time_range.end - t0:.1f} us')


if __name__ == '__main__':
    main()
