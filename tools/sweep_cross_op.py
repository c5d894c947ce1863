"""Time the Triton cross-scan op's launch configurations at VMamba-T's stage shapes (GPU).

    python tools/sweep_cross_op.py --out sweep.json [--quick]

For every stage shape of VMamba-T at 224^2 (batch 128), 1344x800 (batch 2) and 512^2 (batch 8)
-- channels-last maps, d_state 1, D, delta_bias and softplus as the model calls it, bf16 -- it
times forward and forward+backward (median of --reps, CUDA events) for the automatic choice
(``mmvision_ssm.ops.scan_triton._pick_config``) and a grid of forced configurations
(``CONFIG_OVERRIDE``), and prints the best per shape. The results drive ``_pick_config``'s rule.
``--gluon`` sweeps the Gluon kernels' tile layouts (scan_gluon_cross.py) against the Triton
kernels; ``--bwd`` the backward alone; ``--chunk-par`` the chunk-parallel kernels.
"""
import argparse
import itertools
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from bench_scan import time_cuda, time_cuda_graph  # noqa: E402  (tools/bench_scan.py)

SHAPES = {  # name: (batch, channels, h, w)
    '224 b128 s1': (128, 96, 56, 56), '224 b128 s2': (128, 192, 28, 28),
    '224 b128 s3': (128, 384, 14, 14), '224 b128 s4': (128, 768, 7, 7),
    '1344x800 b2 s1': (2, 96, 200, 336), '1344x800 b2 s2': (2, 192, 100, 168),
    '1344x800 b2 s3': (2, 384, 50, 84), '512 b8 s1': (8, 96, 128, 128),
    '2048x1024 b1 s1': (1, 96, 256, 512), '2048x1024 b1 s2': (1, 192, 128, 256),
    '224 b64 s1': (64, 96, 56, 56), '224 b64 s2': (64, 192, 28, 28),
    '224 b64 s3': (64, 384, 14, 14), '224 b64 s4': (64, 768, 7, 7),
    '1344x800 b2 s4': (2, 768, 25, 42), '512 b8 s2': (8, 192, 64, 64),
}


def inputs(b, d, h, w):
    g = torch.Generator(device='cuda').manual_seed(0)

    def r(*s):
        return torch.randn(*s, device='cuda', generator=g)
    x = r(b, h, w, d).bfloat16().requires_grad_()
    delta = (r(b, h, w, 4, d) * 0.5 - 1).bfloat16().requires_grad_()
    B, C = (r(b, h, w, 4, 1).bfloat16().requires_grad_() for _ in range(2))
    A = (-torch.rand(4 * d, 1, device='cuda') - 0.05).requires_grad_()
    D = torch.randn(4 * d, device='cuda').requires_grad_()
    bias = torch.rand(4 * d, device='cuda').requires_grad_()
    return (x, delta, A, B, C, D, bias)


def cross_op(leaves):
    """The Triton cross op as VMamba-T calls it, on :func:`inputs`' leaves."""
    import mmvision_ssm.ops.scan_triton as st
    return st.cross_selective_scan_triton(*leaves[:5], D=leaves[5], delta_bias=leaves[6],
                                          delta_softplus=True, channels_last=True)


def main():
    import mmvision_ssm.ops.scan_triton as st
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out')
    p.add_argument('--reps', type=int, default=10)
    p.add_argument('--quick', action='store_true', help='fewer configurations')
    p.add_argument('--shapes', nargs='+', help=f'subset of {list(SHAPES)}')
    p.add_argument('--chunk-par', action='store_true',
                   help='only the chunk-serial against the chunk-parallel kernels')
    p.add_argument('--bwd', action='store_true',
                   help='the backward alone (bwd_ms) over its warps, chunk and channel block, '
                        'and the compiled kernels\' registers and spills')
    p.add_argument('--gluon', action='store_true',
                   help='the Gluon kernels (scan_gluon_cross.py) over their tile layouts, '
                        'against the Triton kernels\' automatic choice (gluon=False)')
    p.add_argument('--layouts', type=json.loads, metavar='JSON',
                   help='with --gluon: a JSON list of partial layouts (keys of '
                        'scan_gluon_cross.LAYOUT) to sweep instead of the built-in grid, e.g. '
                        '\'[{}, {"FWD_NUM_WARPS": 8}, {"FWD_NUM_WARPS": 8, "PREFETCH": false}]\'')
    p.add_argument('--cuda-graph', action='store_true',
                   help='time CUDA-graph replays (GPU time without the host\'s launch work, '
                        'which dominates eager timing of the smaller stages on slow hosts)')
    p.add_argument('--once', type=int, metavar='ITERS',
                   help='no timing: run the automatic configuration forward+backward ITERS '
                        'times per shape (a workload for ncu)')
    args = p.parse_args()
    if args.layouts is not None and not args.gluon:
        p.error('--layouts sweeps Gluon layouts: add --gluon')
    if args.once:
        for name in args.shapes or SHAPES:
            leaves = inputs(*SHAPES[name])
            gy = torch.randn_like(leaves[0])
            for _ in range(args.once):
                torch.autograd.grad(cross_op(leaves), leaves, gy)
            torch.cuda.synchronize()
        return
    # one direction per program, per-direction output slices (partial) -- the form the rule
    # picks for channels-last maps -- over channels per program, chunk length and the gB/gC
    # reduction; plus the four-directions-per-program form and the atomic-output split form
    grid = [dict(split=True, partial=True, BLOCK_D=bd, BLOCK_L=bl, num_warps=4, atomic=at)
            for bd, bl, at in itertools.product((4, 8, 16), (128, 256), (True, False))]
    grid += [dict(split=False, BLOCK_D=8, BLOCK_L=128, num_warps=4, atomic=True),
             dict(split=True, partial=False, BLOCK_D=4, BLOCK_L=256, num_warps=4, atomic=True)]
    if not args.quick:
        grid += [dict(split=True, partial=True, BLOCK_D=bd, BLOCK_L=bl, num_warps=nw, atomic=False)
                 for bd, bl, nw in itertools.product((2, 32), (64, 128), (2, 4, 8))]
    if args.chunk_par:
        # chunk-parallel programs need not be few per batch element, so they can afford more
        # channels per program (longer contiguous runs of a channels-last map per token)
        grid = [dict(split=True, BLOCK_D=bd, BLOCK_L=bl, num_warps=4, atomic=True,
                     chunk_par=False) for bd, bl in itertools.product((4, 8, 16), (128, 256))]
        grid += [dict(split=True, BLOCK_D=bd, BLOCK_L=bl, num_warps=nw, atomic=True,
                      chunk_par=True)
                 for bd, bl, nw in itertools.product((8, 16, 32), (64, 128), (4, 8))]
    if args.bwd:
        grid = [dict(split=True, BLOCK_D=bd, BLOCK_L=bl, num_warps=4, bwd_num_warps=nw,
                     atomic=True) for bd, bl, nw in itertools.product((4, 8, 16), (64, 128, 256),
                                                                      (4, 8))]
    if args.gluon and args.layouts is not None:
        from mmvision_ssm.ops.scan_gluon_cross import check_layout_keys
        for lay in args.layouts:
            try:
                check_layout_keys(lay)
            except ValueError as err:
                p.error(f'--layouts: {err}')
        grid = [dict(gluon=lay) for lay in args.layouts]
    elif args.gluon:  # partial layouts over scan_gluon_cross.LAYOUT: the forward's tile (FWD_
        # keys: SPT_D, TPW_D, WPC_D, NUM_WARPS, SPT_L, PREFETCH), the grid order, the
        # backward's tile (the same keys unprefixed)
        keys = ('SPT_D', 'TPW_D', 'WPC_D', 'NUM_WARPS', 'SPT_L', 'PREFETCH')
        fwd = [dict(zip(('FWD_' + k for k in keys), lay)) for lay in (
            (2, 16, 1, 4, 8, True), (2, 16, 1, 8, 8, True), (2, 16, 1, 4, 8, False),
            (2, 4, 4, 4, 8, True))]
        bwd = [dict(zip(keys, lay)) for lay in (
            (2, 16, 1, 4, 8, False), (2, 4, 4, 4, 4, True), (2, 4, 4, 4, 2, True),
            (1, 8, 4, 4, 4, True), (2, 4, 4, 4, 8, True), (2, 4, 8, 8, 4, True))]
        grid = [dict(gluon=False)] + [dict(gluon=dict(f, K_FIRST=True)) for f in fwd]
        grid += [dict(gluon=dict(K_FIRST=False))] + [dict(gluon=b) for b in bwd]
    timer = time_cuda_graph if args.cuda_graph else time_cuda
    rows = []
    for name in args.shapes or SHAPES:
        b, d, h, w = SHAPES[name]
        leaves = inputs(b, d, h, w)
        gy = torch.randn(b, h, w, d, device='cuda').bfloat16()
        best = {}
        for cfg in [None] + grid:
            st.CONFIG_OVERRIDE.clear()
            if cfg is not None and 'gluon' in cfg:
                st.CONFIG_OVERRIDE.update(cfg)
            elif cfg is not None:
                if cfg['BLOCK_L'] > 2 * h * w and cfg['BLOCK_L'] > 64:
                    continue  # a chunk mostly of padding
                if b * d // cfg['BLOCK_D'] < 64 and not cfg['split']:
                    continue  # too few programs to be a candidate
                st.CONFIG_OVERRIDE.update(cfg)
            used = st._pick_config(1, d, h * w, 4, True, bsz=b, device=torch.device('cuda'))

            def fwd():
                return cross_op(leaves)

            def fwd_bwd():
                torch.autograd.grad(fwd(), leaves, gy)
            try:
                with torch.no_grad():
                    tf = timer(fwd, args.reps, warmup=2)
                tfb = timer(fwd_bwd, args.reps, warmup=2)
                row = dict(shape=name, auto=cfg is None, config=used, fwd_ms=tf, fb_ms=tfb)
                if args.bwd:
                    y = fwd()
                    row['bwd_ms'] = time_cuda(
                        lambda: torch.autograd.grad(y, leaves, gy, retain_graph=True),
                        args.reps, warmup=2)
                    del y
            except Exception as err:  # noqa: BLE001  (a config that does not compile)
                row = dict(shape=name, auto=cfg is None, config=used,
                           error=f'{type(err).__name__}: {err}'[:200])
            rows.append(row)
            if 'error' not in row:
                for key in ('fwd_ms', 'fb_ms'):
                    if key not in best or row[key] < best[key][0]:
                        best[key] = (row[key], used)
            print(json.dumps(row), flush=True)
        st.CONFIG_OVERRIDE.clear()
        auto = next(r for r in rows if r['shape'] == name and r['auto'])
        print(f'## {name}: auto {auto.get("fwd_ms", float("nan")):.3f} / '
              f'{auto.get("fb_ms", float("nan")):.3f} ms ({auto["config"]}); best fwd '
              f'{best["fwd_ms"][0]:.3f} {best["fwd_ms"][1]}; best f+b {best["fb_ms"][0]:.3f} '
              f'{best["fb_ms"][1]}', flush=True)
        if args.bwd:
            best_b = min((r for r in rows if r['shape'] == name and 'bwd_ms' in r),
                         key=lambda r: r['bwd_ms'])
            print(f'## {name}: auto bwd {auto.get("bwd_ms", float("nan")):.3f}; best bwd '
                  f'{best_b["bwd_ms"]:.3f} {best_b["config"]}', flush=True)
        if args.out:
            json.dump(rows, open(args.out, 'w'), indent=1)
        leaves = gy = None
        torch.cuda.empty_cache()
    if args.bwd:
        kernel_stats()


def kernel_stats():
    """Registers and spills of every compiled variant of the cross-op kernels (Triton's
    per-device caches; the layout of those caches is Triton's, so anything unexpected is
    skipped)."""
    import mmvision_ssm.ops.scan_triton as st
    for fn in (st._scan_fwd_kernel, st._scan_bwd_kernel):
        for cache in getattr(fn, 'device_caches', {}).values():
            entries = cache[0] if isinstance(cache, tuple) else cache
            for kernel in getattr(entries, 'values', lambda: [])():
                consts = getattr(getattr(kernel, 'src', None), 'constants', {}) or {}
                picked = {}
                for key, val in consts.items():  # keyed by name or by (argument index,)
                    if isinstance(key, tuple) and key and isinstance(key[0], int):
                        key = fn.arg_names[key[0]]
                    picked[str(key)] = val
                picked = {k: picked[k] for k in ('BLOCK_D', 'BLOCK_L', 'MODE', 'N', 'SPLIT_K')
                          if k in picked}
                print(json.dumps(dict(kernel=fn.__name__, n_regs=getattr(kernel, 'n_regs', None),
                                      n_spills=getattr(kernel, 'n_spills', None),
                                      num_warps=getattr(kernel.metadata, 'num_warps', None),
                                      **picked), default=str), flush=True)


if __name__ == '__main__':
    main()
