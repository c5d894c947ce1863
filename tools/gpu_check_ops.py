"""Correctness of the GPU scan backends against the float64 reference, forward and backward.

    python tools/gpu_check_ops.py [--out results.json]

For each case, fresh random inputs are drawn, the CUDA caching allocator is poisoned with NaN
(so an output element a kernel forgot to write shows up as non-finite), and every output and
gradient of the ``triton`` backend (and ``mamba_ssm`` when importable, see tools/bench_scan.py)
is compared with ``ref`` run in float64 on the same (rounded) inputs, by ||out - ref|| / ||ref||.
Tolerances: float32 1e-4, bfloat16/float16 1e-2 (the issue's); NaN never passes. A (near-)zero
reference is judged against the output's magnitude instead of its own (see ``rel_err``).
The fused cross op is compared with cross_scan -> ref scan -> cross_merge in float64.
Exit status 1 if any check fails.
"""
import argparse
import json
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_scan import load_mamba_ssm  # noqa: E402

from mmvision_ssm.ops import cross_selective_scan, selective_scan  # noqa: E402

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}
# (b, d, l, n, groups, z, D, delta_bias, softplus, return_last_state)
CASES = [
    (2, 4, 1, 4, None, True, True, True, True, True),
    (2, 8, 7, 16, 2, True, True, False, True, False),
    (2, 64, 257, 1, 4, False, True, True, True, True),
    (1, 32, 257, 4, None, True, False, True, False, False),
    (2, 20, 4097, 16, 1, True, True, False, True, True),
    (1, 16, 4097, 1, None, False, False, True, True, False),
    (2, 384, 3136, 1, 4, False, True, True, True, False),   # VMamba-T stage 1, small batch
    (4, 160, 196, 8, None, False, True, True, True, False),  # MambaVision-T stage 3
    (2, 32, 300, 2, 2, True, True, True, True, True),  # 16 channels a program, two groups
]
CROSS_CASES = [  # (b, d, h, w, n, channels_last, D)
    (2, 8, 7, 9, 1, False, True), (2, 8, 7, 9, 1, True, True), (1, 12, 5, 13, 4, False, False),
    (1, 6, 16, 3, 16, True, True), (2, 96, 56, 56, 1, False, True), (2, 96, 56, 56, 1, True, True),
    (8, 96, 28, 28, 1, True, True),  # 8 channels a program (enough programs), four chunks
    # channels-last, for the Gluon kernels: a partial channel block over several chunks with
    # odd sides, one pixel without D, one long row (columns of one pixel)
    (3, 20, 17, 23, 1, True, True), (1, 8, 1, 1, 1, True, False), (2, 16, 1, 300, 1, True, True),
]


def poison():
    """Fill the allocator's free blocks with NaN so unwritten outputs are caught."""
    free = torch.cuda.mem_get_info()[0]
    try:
        t = torch.empty(min(free // 2, 4 << 30) // 4, device='cuda')
        t.fill_(float('nan'))
        del t
    except torch.OutOfMemoryError:
        pass


ZERO_REF_FLOOR = 1e-2  # see rel_err


def rel_err(a, b, scale=1.0):
    """||a - b|| / max(||b||, ZERO_REF_FLOOR * scale * sqrt(numel)).

    ``scale`` is the RMS of the case's reference output y. The floor only matters when the
    reference is (near) zero -- e.g. grad_A at l = 1, where h_{-1} = 0 makes it exactly 0 and
    the kernel's float32 rounding leaves ~1e-8: then the error is measured against 1 % of the
    magnitude an entry of this problem has, i.e. an absolute tolerance of tol * 1e-2 * rms(y)
    per entry (float32: 1e-6 * rms(y)), while a wrong non-zero value still fails. A reference
    of ordinary size is compared purely relatively, as before.
    """
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float('nan')
    floor = ZERO_REF_FLOOR * float(scale) * max(b.numel(), 1) ** 0.5
    return float((a - b).norm() / max(float(b.norm()), floor, 1e-30))


def _errs(got, want):
    scale = float(want['out0'].double().pow(2).mean().sqrt())  # RMS of the reference output
    return {k: rel_err(got[k], want[k], scale) for k in want}


def run(fn, leaves, kwargs, cot):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
    out = fn(**leaves, **kwargs)
    outs = list(out) if isinstance(out, tuple) else [out]
    loss = sum((o.double() * c).sum() for o, c in zip(outs, cot))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    res = {f'out{i}': o.detach() for i, o in enumerate(outs)}
    res.update({'grad_' + k: g for k, g in zip(leaves, grads)})
    return res


def check_plain(case, dtype, backend, gen):
    b, d, l, n, g, with_z, with_D, with_bias, softplus, last = case  # noqa: E741
    dev = 'cuda'

    def r(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * scale + shift).to(dev)

    bc = (b, n, l) if g is None else (b, g, n, l)
    leaves = dict(u=r(b, d, l), delta=r(b, d, l, scale=0.5, shift=-1.0) if softplus
                  else r(b, d, l).abs() * 0.3,
                  A=-(r(d, n).abs() + 0.05), B=r(*bc), C=r(*bc))
    if with_D:
        leaves['D'] = r(d)
    if with_z:
        leaves['z'] = r(b, d, l)
    if with_bias:
        leaves['delta_bias'] = r(d).abs() * 0.3
    low = {k: (v.to(dtype) if k in ('u', 'delta', 'B', 'C', 'z') else v.float())
           for k, v in leaves.items()}
    hi = {k: v.double() for k, v in low.items()}
    cot = [r(b, d, l).to(dtype).double()] + ([r(b, d, n)] if last else [])
    kw = dict(delta_softplus=softplus, return_last_state=last)
    want = run(lambda **a: selective_scan(**a, backend='ref'), hi, kw, cot)
    poison()
    got = run(lambda **a: selective_scan(**a, backend=backend), low, kw, cot)
    return _errs(got, want)


#: (BLOCK_D, BLOCK_L, num_warps) forced on the states-parallel kernels by ``--only states``:
#: the tile's layout (tokens in registers or across lanes, channels or states across warps)
#: follows from these, and with it how the compiler lowers the scans, flips and reductions
STATES_CONFIGS = [(1, 16, 1), (2, 16, 1), (4, 16, 1), (8, 16, 1), (16, 16, 1), (2, 8, 1),
                  (2, 32, 1), (4, 16, 2), (8, 16, 2), (1, 256, 4), (4, 32, 4),
                  # segment-parallel: chunks a segment (the summaries' tiles 16-64 tokens)
                  (1, 16, 1, 1), (2, 16, 1, 3), (1, 16, 1, 8), (4, 32, 4, 2), (1, 64, 1, 2)]


def check_states_configs(record, gen):
    """The several-state plain cases (float32) under every :data:`STATES_CONFIGS` entry."""
    import mmvision_ssm.ops.scan_triton as st
    keys = ('BLOCK_D', 'BLOCK_L', 'num_warps', 'seg')
    for cfg in STATES_CONFIGS:
        st.CONFIG_OVERRIDE.update(zip(keys, cfg), states=True)
        for case in [c for c in CASES if c[3] >= 2]:
            record('plain', case + (cfg,), torch.float32, 'triton',
                   lambda: check_plain(case, torch.float32, 'triton', gen))
        st.CONFIG_OVERRIDE.clear()


def check_cross(case, dtype, gen):
    b, d, h, w, n, cl, with_D = case
    dev = 'cuda'

    def r(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * scale + shift).to(dev)

    x, delta = r(b, d, h, w), r(b, 4, d, h, w, scale=0.5, shift=-1.0)
    B, C = r(b, 4, n, h, w), r(b, 4, n, h, w)
    if cl:
        x, delta, B, C = (x.permute(0, 2, 3, 1).contiguous(),
                          *(t.permute(0, 3, 4, 1, 2).contiguous() for t in (delta, B, C)))
    leaves = dict(x=x, delta=delta, A=-(r(4 * d, n).abs() + 0.05), B=B, C=C,
                  delta_bias=r(4 * d).abs() * 0.3)
    if with_D:
        leaves['D'] = r(4 * d)
    low = {k: (v.to(dtype) if k in ('x', 'delta', 'B', 'C') else v.float()) for k, v in
           leaves.items()}
    hi = {k: v.double() for k, v in low.items()}
    cot = [r(*x.shape).to(dtype).double()]
    kw = dict(channels_last=cl)
    # float64 oracle: the composition (cross_scan -> scan -> cross_merge) with the torch backend,
    # itself checked against ref in tests/test_ops.py (ref is too slow at 56x56 x 4 directions)
    want = run(lambda **a: cross_selective_scan(**a, backend='torch'), hi, kw, cot)
    poison()
    got = run(lambda **a: cross_selective_scan(**a, backend='triton'), low, kw, cot)
    return _errs(got, want)


def check_cross_dt_proj(case, dtype, gen):
    """``cross_selective_scan_dt_proj`` (delta rebuilt in the backward) against projecting
    first and calling the cross op, both on the GPU backends: the same values and gradients."""
    from mmvision_ssm.ops import cross_selective_scan_dt_proj
    b, d, h, w, rk = case
    dev = 'cuda'

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=gen) * scale).to(dev)
    leaves = dict(x=r(b, h, w, d).to(dtype), dts=r(b, h, w, 4 * rk).to(dtype),
                  dt_weight=r(4 * d, 4 * rk, scale=0.3), A=-(r(4 * d, 1).abs() + 0.05),
                  B=r(b, h, w, 4, 1).to(dtype), C=r(b, h, w, 4, 1).to(dtype), D=r(4 * d),
                  delta_bias=r(4 * d).abs() * 0.3 - 2)
    cot = [r(b, h, w, d).to(dtype).float()]

    def projected(x, dts, dt_weight, **kw):
        delta = F.linear(dts, dt_weight.to(dts.dtype)).unflatten(-1, (4, d))
        return cross_selective_scan(x, delta, **kw, channels_last=True)
    want = run(projected, leaves, {}, cot)
    poison()
    got = run(cross_selective_scan_dt_proj, leaves, {}, cot)
    return _errs(got, want)


CROSS_DT_CASES = [(8, 96, 28, 28, 6), (3, 20, 17, 23, 2)]  # (b, d, h, w, dt_rank)

LN_CASES = [(37, 96), (4096, 96), (1000, 768), (5, 200), (257, 3)]  # (rows, width)


def check_layer_norm(case, dtype, gen):
    """The Triton LayerNorm kernels (called directly: the dispatcher sends inputs this small to
    PyTorch) against F.layer_norm in float64: y, dx, dw, db."""
    import torch.nn.functional as F
    from mmvision_ssm.ops.layer_norm_triton import layer_norm_triton
    M, C = case
    x = torch.randn(M, C, generator=gen, dtype=torch.float64) * 2 + 0.5
    w, b = (torch.randn(C, generator=gen, dtype=torch.float64) for _ in range(2))
    cot = [torch.randn(M, C, generator=gen, dtype=torch.float64).cuda()]
    x = x.to(dtype)  # the kernel sees dtype-rounded input; the reference the same values
    want = run(lambda x, w, b: F.layer_norm(x, (C,), w, b, 1e-5),
               dict(x=x.double().cuda(), w=w.cuda(), b=b.cuda()), {}, cot)
    got = run(lambda x, w, b: layer_norm_triton(x, w, b, 1e-5, dtype),
              dict(x=x.cuda(), w=w.float().cuda(), b=b.float().cuda()), {}, cot)
    return _errs(got, want)


LN_NCHW_CASES = [(2, 56, 56, 96), (3, 7, 9, 768), (1, 5, 3, 13)]  # (b, h, w, C)


def check_layer_norm_nchw(case, dtype, gen):
    """The channels-last-in, NCHW-out forward kernel (a backbone's output norm) against
    F.layer_norm in float64, permuted: the values and the contiguous NCHW layout."""
    import torch.nn.functional as F
    from mmvision_ssm.ops.layer_norm_triton import ln_forward_nchw
    b, h, w_, C = case
    x = (torch.randn(b, h, w_, C, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    w, bias = (torch.randn(C, generator=gen, dtype=torch.float64) for _ in range(2))
    want = F.layer_norm(x.double(), (C,), w, bias, 1e-5).permute(0, 3, 1, 2).cuda()
    got = ln_forward_nchw(x.cuda(), w.float().cuda(), bias.float().cuda(), 1e-5, dtype)
    if got.shape != want.shape or not got.is_contiguous():
        return {'error': f'got {tuple(got.shape)} contiguous={got.is_contiguous()}'}
    return {'out0': rel_err(got, want, float(want.pow(2).mean().sqrt()))}


def check_layer_norm_input_bias(case, dtype, gen):
    """The forward kernel with a per-channel input bias (a conv's bias folded into the norm
    after it, inference only) against F.layer_norm(x + bias) in float64."""
    import torch.nn.functional as F
    from mmvision_ssm.ops.layer_norm_triton import ln_forward
    M, C = case
    x = (torch.randn(M, C, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    ib, w, b = (torch.randn(C, generator=gen, dtype=torch.float64) for _ in range(3))
    want = F.layer_norm(x.double() + ib, (C,), w, b, 1e-5).cuda()
    got = ln_forward(x.cuda(), w.float().cuda(), b.float().cuda(), 1e-5, dtype,
                     ib.float().cuda())[0]
    return {'out0': rel_err(got, want, float(want.pow(2).mean().sqrt()))}


NORM_MLP_CASES = [(37, 96, 384), (6272, 96, 384), (300, 768, 3072)]  # (rows, width, hidden)


def check_norm_mlp(case, dtype, gen):
    """mmvision_ssm.ops.norm_mlp (with the Triton LayerNorm and with ATen's; bf16 input under
    autocast, as in training) against LayerNorm -> Linear -> GELU -> Linear in float64: output
    and all seven gradients."""
    import os

    import torch.nn.functional as F
    from mmvision_ssm.ops.layer_norm import ENV_VAR
    from mmvision_ssm.ops.norm_mlp import norm_mlp
    M, C, H = case

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * scale).cuda()

    leaves = dict(x=r(M, C, scale=2.0), nw=r(C), nb=r(C), w1=r(H, C, scale=C ** -0.5), b1=r(H),
                  w2=r(C, H, scale=H ** -0.5), b2=r(C))
    cot = [r(M, C)]
    if dtype == torch.bfloat16:
        leaves['x'] = leaves['x'].to(dtype).double()  # the same rounded input for both sides

    def ref(x, nw, nb, w1, b1, w2, b2):
        return F.linear(F.gelu(F.linear(F.layer_norm(x, (C,), nw, nb, 1e-5), w1, b1)), w2, b2)

    def fused(x, nw, nb, w1, b1, w2, b2):
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            return norm_mlp(x.to(dtype), nw.float(), nb.float(), 1e-5, w1.float(), b1.float(),
                            w2.float(), b2.float())

    want = run(ref, leaves, {}, cot)
    errs = {}
    old = os.environ.get(ENV_VAR)
    try:
        for mode in ('triton', 'torch'):  # the Triton norm, and ATen's (smaller inputs)
            os.environ[ENV_VAR] = mode
            errs.update({f'{k}_{mode}': v for k, v in _errs(run(fused, leaves, {}, cot),
                                                            want).items()})
    finally:
        os.environ.pop(ENV_VAR) if old is None else os.environ.__setitem__(ENV_VAR, old)
    return errs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', default=None)
    parser.add_argument('--seed', type=int, default=random.SystemRandom().randrange(2**31))
    parser.add_argument('--quick', action='store_true', help='a subset (fewer Triton compiles)')
    parser.add_argument('--only', choices=['plain', 'cross', 'lnorm', 'normmlp', 'states'],
                        help='one kind of check (states: the several-state plain cases under '
                             'each of STATES_CONFIGS)')
    args = parser.parse_args()
    print(f'seed {args.seed}; torch {torch.__version__}; {torch.cuda.get_device_name()}')
    gen = torch.Generator().manual_seed(args.seed)
    backends = ['triton'] + (['mamba_ssm'] if load_mamba_ssm() is not None else [])
    results, failed = [], 0

    def record(kind, case, dtype, be, fn):
        nonlocal failed
        try:
            errs = fn()
        except Exception as err:  # noqa: BLE001
            errs = {'error': f'{type(err).__name__}: {err}'}
        ok = 'error' not in errs and all(e <= TOL[dtype] for e in errs.values())  # NaN fails
        failed += not ok
        results.append(dict(kind=kind, case=case, dtype=str(dtype), backend=be, errs=errs, ok=ok))
        worst = ('error: ' + errs['error']) if 'error' in errs else \
            ' '.join(f'{k}={v:.1e}' for k, v in errs.items())
        print(f'{"PASS" if ok else "FAIL"} {kind:5s} {be:9s} {str(dtype)[6:]:8s} '
              f'{str(case):52s} {worst}', flush=True)

    cases = [CASES[i] for i in (0, 1, 2, 4, 6, 7)] if args.quick else CASES
    cross_cases = [CROSS_CASES[i] for i in (0, 1, 3, 4, 5)] if args.quick else CROSS_CASES
    if args.only == 'states':
        check_states_configs(record, gen)
    if args.only:
        cases = cases if args.only == 'plain' else []
        cross_cases = cross_cases if args.only == 'cross' else []
    for case in cases:
        for dtype in (torch.float32, torch.bfloat16):
            for be in backends:
                record('plain', case, dtype, be, lambda: check_plain(case, dtype, be, gen))
    import mmvision_ssm.ops.scan_triton as st
    for case in cross_cases:
        for dtype in (torch.float32, torch.bfloat16):
            record('cross', case, dtype, 'triton', lambda: check_cross(case, dtype, gen))
    # channels-last cases run the Gluon kernels where they apply; the Triton kernels too, and
    # the Gluon ones in other tile layouts: the backward's (64-channel blocks, one channel a
    # thread, 8 warps, warps along tokens) and the forward's (one and four channels a thread,
    # warps along channels, the grid's other order, forward chunks shorter and longer than the
    # states' chunks), each kernel's loads issued a chunk ahead or not
    # (chunk_par False: the small batches here would otherwise take the chunk-parallel kernels)
    for override in ({'gluon': False}, {'gluon': {}, 'chunk_par': False},
                     {'gluon': dict(TPW_D=8), 'chunk_par': False},
                     {'gluon': dict(SPT_D=1, TPW_D=8), 'chunk_par': False},
                     {'gluon': dict(NUM_WARPS=8), 'chunk_par': False},
                     {'gluon': dict(WPC_D=2), 'chunk_par': False},
                     {'gluon': dict(FWD_SPT_D=1, FWD_TPW_D=32), 'chunk_par': False},
                     {'gluon': dict(FWD_SPT_D=4, FWD_TPW_D=8, K_FIRST=False),
                      'chunk_par': False},
                     {'gluon': dict(FWD_SPT_L=4, NUM_WARPS=8), 'chunk_par': False},
                     {'gluon': dict(FWD_SPT_D=4, FWD_TPW_D=8, FWD_NUM_WARPS=8),
                      'chunk_par': False},
                     {'gluon': dict(FWD_PREFETCH=False, PREFETCH=True), 'chunk_par': False},
                     {'gluon': dict(SPT_D=2, TPW_D=16, WPC_D=1, PREFETCH=True),
                      'chunk_par': False},
                     {'gluon': dict(TPW_D=16, WPC_D=1, SPT_L=8, PREFETCH=False),
                      'chunk_par': False},
                     {'gluon': dict(FWD_TPW_D=4, FWD_WPC_D=4), 'chunk_par': False}):
        st.CONFIG_OVERRIDE.update(override)
        for case in [c for c in cross_cases if c[5]]:
            record('cross', case + (override,), torch.bfloat16, 'triton',
                   lambda: check_cross(case, torch.bfloat16, gen))
        st.CONFIG_OVERRIDE.clear()
    for case in CROSS_DT_CASES if args.only in (None, 'cross') else []:
        for dtype in (torch.float32, torch.bfloat16):
            record('crossdt', case, dtype, 'triton',
                   lambda: check_cross_dt_proj(case, dtype, gen))
    for case in LN_CASES if args.only in (None, 'lnorm') else []:
        for dtype in (torch.float32, torch.bfloat16):
            record('lnorm', case, dtype, 'triton', lambda: check_layer_norm(case, dtype, gen))
    for case in LN_NCHW_CASES if args.only in (None, 'lnorm') else []:
        for dtype in (torch.float32, torch.bfloat16):
            record('lnchw', case, dtype, 'triton',
                   lambda: check_layer_norm_nchw(case, dtype, gen))
    for case in LN_CASES[:3] if args.only in (None, 'lnorm') else []:
        for dtype in (torch.float32, torch.bfloat16):
            record('lnxb', case, dtype, 'triton',
                   lambda: check_layer_norm_input_bias(case, dtype, gen))
    for case in NORM_MLP_CASES if args.only in (None, 'normmlp') else []:
        for dtype in (torch.float32, torch.bfloat16):
            record('nmlp', case, dtype, 'triton', lambda: check_norm_mlp(case, dtype, gen))
    # other launch configurations (several channel blocks, long chunks, atomic gB/gC reduction;
    # the cross op with its four directions in one program (split False) or one per program:
    # at these batch sizes the automatic choice is split, so the fused form is forced here)
    # ('states' False sends n >= 2 to the general kernels instead of the states-parallel ones;
    # 'chunk_par' True forces the chunk-parallel kernels, which the automatic rule picks only
    # for few programs)
    # ('seg': the states-parallel kernels' chunks a segment, 0 for one segment)
    keys = ('BLOCK_D', 'BLOCK_L', 'num_warps', 'atomic', 'split', 'states', 'chunk_par', 'seg')
    forced_chunk_par = (4, 128, 4, True, True, False, True)
    # the states-parallel kernels in 32-token chunks (n >= 2); the other shapes stay on the
    # general kernels (4 channels per program)
    forced_states = (4, 32, 4, True, False, True)
    # ... and segment-parallel, 2 chunks a segment
    forced_states_seg = (1, 16, 1, True, False, True, False, 2)
    for cfg in [] if args.only else [(4, 128, 4, False, False, False), forced_chunk_par,
                                     forced_states, forced_states_seg] \
            if args.quick else [forced_chunk_par, forced_states, forced_states_seg,
            (1, 1024, 4, True, False, True), (8, 256, 4, False, True, False),
            (1, 512, 2, True, False, False)]:
        st.CONFIG_OVERRIDE.update(zip(keys, cfg))
        for case in (CASES[2], CASES[4], CASES[6]):
            record('plain', case + (cfg,), torch.float32, 'triton',
                   lambda: check_plain(case, torch.float32, 'triton', gen))
        for case in CROSS_CASES[:2] + CROSS_CASES[4:]:
            record('cross', case + (cfg,), torch.bfloat16, 'triton',
                   lambda: check_cross(case, torch.bfloat16, gen))
        st.CONFIG_OVERRIDE.clear()
    print(f'{len(results) - failed}/{len(results)} checks passed (seed {args.seed})')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
