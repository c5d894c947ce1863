"""Run the plain selective scan's forward+backward a few times at one shape, nothing else: the
target process for profilers (Nsight Compute / Systems) of the scan kernels.

    ncu -k regex:_states_ --launch-skip 2 --launch-count 2 --set full \
        python tools/scan_once.py --shape 64 160 196 16
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from mmvision_ssm.ops import selective_scan  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shape', type=int, nargs=4, default=(64, 160, 196, 16),
                   metavar=('B', 'D', 'L', 'N'), help='default: MambaVision-T stage 3, n 16')
    p.add_argument('--groups', type=int, default=None, help='B/C groups (default: ungrouped)')
    p.add_argument('--iters', type=int, default=2)
    p.add_argument('--backend', default='triton')
    args = p.parse_args()
    b, d, l, n = args.shape  # noqa: E741
    dev, dt = 'cuda', torch.bfloat16
    gen = torch.Generator(device='cpu').manual_seed(0)
    bc = (b, n, l) if args.groups is None else (b, args.groups, n, l)
    u, delta = (torch.randn(b, d, l, generator=gen).to(dev, dt).requires_grad_()
                for _ in range(2))
    B, C = (torch.randn(*bc, generator=gen).to(dev, dt).requires_grad_() for _ in range(2))
    A = -torch.rand(d, n, generator=gen).to(dev)
    D, bias = torch.ones(d, device=dev), torch.zeros(d, device=dev)
    gy = torch.randn(b, d, l, generator=gen).to(dev, dt)
    for _ in range(args.iters):
        y = selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True,
                           backend=args.backend)
        torch.autograd.grad(y, [u, delta, B, C], gy)
    torch.cuda.synchronize()
    print(f'ran {args.iters} x f+b at b={b} d={d} l={l} n={n} ({args.backend})')


if __name__ == '__main__':
    main()
