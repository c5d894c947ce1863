"""Run the plain selective scan's forward+backward a few times at one shape, nothing else: the
target process for profilers (Nsight Compute / Systems) of the scan kernels. The inputs and
the call are tools/bench_scan.py's, so a profile matches what that script times.

    ncu -k regex:_states_ --launch-skip 2 --launch-count 2 --set full \
        python tools/scan_once.py --shape 64 160 196 16
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from bench_scan import fwd_bwd_closures, load_mamba_ssm, scan_fn, scan_inputs  # noqa: E402

GRADS = ['u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias']


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shape', type=int, nargs=4, default=(64, 160, 196, 16),
                   metavar=('B', 'D', 'L', 'N'), help='default: MambaVision-T stage 3, n 16')
    p.add_argument('--groups', type=int, default=None, help='B/C groups (default: ungrouped)')
    p.add_argument('--iters', type=int, default=2)
    p.add_argument('--backend', default='triton')
    args = p.parse_args()
    b, d, l, n = args.shape  # noqa: E741
    mamba_fn = load_mamba_ssm() if args.backend == 'mamba_ssm' else None
    if args.backend == 'mamba_ssm' and mamba_fn is None:
        raise SystemExit('--backend mamba_ssm: mamba-ssm is not importable '
                         '(set MMVISION_SSM_MAMBA_SRC to its in-place build)')
    inputs = scan_inputs(b, d, l, n, args.groups, torch.bfloat16, 'cuda')
    _, fwd_bwd = fwd_bwd_closures(scan_fn(args.backend, mamba_fn), inputs, GRADS)
    for _ in range(args.iters):
        fwd_bwd()
    torch.cuda.synchronize()
    print(f'ran {args.iters} x f+b at b={b} d={d} l={l} n={n} ({args.backend})')


if __name__ == '__main__':
    main()
