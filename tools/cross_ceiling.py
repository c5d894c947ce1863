"""How fast could any fused cross-scan op be? Time kernels that do strictly less than it must.

    python tools/cross_ceiling.py --out ceiling.json            (GPU)
    python tools/cross_ceiling.py --sass                        (no GPU: instruction counts)

Issue 3 asks the fused cross-scan+scan+merge op (VMamba, d_state 1, channels-last, bf16) for
70 % of the copy bandwidth on the minimum-bytes model: each input read once, the output written
once. Whatever the scan's algorithm, a correct op also does, per token, channel and direction,
the math of the recurrence's coefficients: softplus(dt + bias), exp(dt * A), dt * B * u, and
C * h summed over the four directions (the backward: that again, the sigmoid of softplus's
derivative and the gradient products). These probe kernels read exactly the minimum bytes in
the maps' own order, do that per-element math with the four directions summed in registers,
and write the minimum bytes -- but in place of the scan along the tokens (a chain across
threads, warps and programs) one multiply-add, so they are no correct op: a correct one would
have to beat them at their own work and do the scan besides. They bound it as far as they are
well tuned (each is timed over several tiles, the backward also over its programs an SM and
software-pipelining depth, and the best kept).

Math variants (all timed):

* ``mem``:  the same bytes, a few multiply-adds: what the memory system gives this pattern;
* ``poly``: the per-element math as scan_gluon_cross.py does it (softplus through a degree-8
  log1p polynomial, exponentials as ``ex2.approx``);
* ``mufu``: the cheapest softplus there is, ``lg2.approx(1 + e)`` (less precise for small
  softplus values than the tests accept, so a generous bound).

The fused op itself is timed in the same process (``cross_selective_scan``, backend triton),
and the copy bandwidth as tools/bench_scan.py measures it. All times are CUDA-graph replays.
"""
import argparse
import json
import os
import re
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'tests'))  # tests/test_ops_gluon_cross.py's ptxas helper
from mmvision_ssm.ops.scan_gluon_cross import (  # noqa: E402  (the op's own constants)
    _LOG2E as LOG2E, _Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8)

MATHS = ('mem', 'poly', 'mufu')
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _ex2(x):
    return tl.inline_asm_elementwise('ex2.approx.ftz.f32 $0, $1;', '=f,f', [x],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _lg2(x):
    return tl.inline_asm_elementwise('lg2.approx.ftz.f32 $0, $1;', '=f,f', [x],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _softplus(v, MATH: tl.constexpr):
    """(softplus(v), e^-|v|) -- the op's formulation (MATH 1) or the cheapest (MATH 2)."""
    e = _ex2(tl.abs(v) * -LOG2E)
    if MATH == 1:  # scan_gluon_cross._softplus's log1p polynomial
        q = _Q8 * e + _Q7
        q = q * e + _Q6
        q = q * e + _Q5
        q = q * e + _Q4
        q = q * e + _Q3
        q = q * e + _Q2
        q = q * e + _Q1
        q = q * e + _Q0
        sp = tl.maximum(v, 0.0) + e * q
    else:
        sp = tl.maximum(v, 0.0) + LN2 * _lg2(1.0 + e)
    return sp, e


@triton.jit
def _token_loads(B_ptr, C_ptr, t, tm):
    """B and C of the tokens t, all four directions: (tokens, 4), one 8-byte load a token."""
    k4 = tl.arange(0, 4)[None, :]
    B4 = tl.load(B_ptr + t[:, None] * 4 + k4, mask=tm[:, None], other=0.0).to(tl.float32)
    C4 = tl.load(C_ptr + t[:, None] * 4 + k4, mask=tm[:, None], other=0.0).to(tl.float32)
    return B4, C4


@triton.jit
def _column(v4, k: tl.constexpr):
    """Direction k's column of a (tokens, 4) tensor, as (tokens, 1)."""
    return tl.sum(tl.where(tl.arange(0, 4)[None, :] == k, v4, 0.0), 1)[:, None]


@triton.jit
def _direction_loads(dt_ptr, D_ptr, B4, C4, t, c, m, cm, CH, k: tl.constexpr):
    """Direction k's dt (tokens, channels), B and C (tokens, 1) and D (1, channels)."""
    dt = tl.load(dt_ptr + t[:, None] * (4 * CH) + k * CH + c[None, :], mask=m,
                 other=0.0).to(tl.float32)
    Bk, Ck = _column(B4, k), _column(C4, k)
    return dt, Bk, Ck, tl.load(D_ptr + k * CH + c, mask=cm, other=0.0)[None, :]


@triton.jit
def _fwd_probe(x_ptr, dt_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, y_ptr, NTOK, CH,
               MATH: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    tm, cm = t < NTOK, c < CH
    m = tm[:, None] & cm[None, :]
    x = tl.load(x_ptr + t[:, None] * CH + c[None, :], mask=m, other=0.0).to(tl.float32)
    B4, C4 = _token_loads(B_ptr, C_ptr, t, tm)
    y = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    for k in tl.static_range(4):
        dt, Bk, Ck, Dk = _direction_loads(dt_ptr, D_ptr, B4, C4, t, c, m, cm, CH, k)
        if MATH == 0:
            y += (dt * Bk + Dk) * x * Ck
        else:
            A2 = (tl.load(A_ptr + k * CH + c, mask=cm, other=0.0) * LOG2E)[None, :]
            bias = tl.load(bias_ptr + k * CH + c, mask=cm, other=0.0)[None, :]
            sp, _ = _softplus(dt + bias, MATH)
            a = _ex2(sp * A2)
            bx = sp * x * Bk
            h = a * bx + bx  # stands in for h = a * h_prev + bx and the scan it needs
            y += h * Ck + Dk * x
    tl.store(y_ptr + t[:, None] * CH + c[None, :], y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_probe(x_ptr, dt_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, gy_ptr, gx_ptr, gdt_ptr,
               gB_ptr, gC_ptr, gA_ptr, gD_ptr, gbias_ptr, NTOK, CH,
               MATH: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
               STAGES: tl.constexpr):
    """A persistent grid: axis 0 strides over token tiles, axis 1 is the channel block. gB
    and gC, sums over channels, are added into zeroed fp32 buffers (as the op does: one add a
    token and direction per channel block); gA, gD and gbias, sums over tokens, are added up
    per element in registers (one add an element, as a real kernel's per-thread sums; the
    directions share the registers, which only saves the probe some) and reduced and added to
    memory once a program."""
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < CH
    acc_A = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    acc_bias = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    acc_D = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    for tile in tl.range(tl.program_id(0), tl.cdiv(NTOK, BLOCK_T), tl.num_programs(0),
                         num_stages=STAGES):  # STAGES > 1: loads software-pipelined
        t = tile * BLOCK_T + tl.arange(0, BLOCK_T)
        tm = t < NTOK
        m = tm[:, None] & cm[None, :]
        x = tl.load(x_ptr + t[:, None] * CH + c[None, :], mask=m, other=0.0).to(tl.float32)
        gy = tl.load(gy_ptr + t[:, None] * CH + c[None, :], mask=m, other=0.0).to(tl.float32)
        B4, C4 = _token_loads(B_ptr, C_ptr, t, tm)
        gB4 = tl.zeros([BLOCK_T, 4], tl.float32)
        gC4 = tl.zeros([BLOCK_T, 4], tl.float32)
        gx = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
        for k in tl.static_range(4):
            dt, Bk, Ck, Dk = _direction_loads(dt_ptr, D_ptr, B4, C4, t, c, m, cm, CH, k)
            A = tl.load(A_ptr + k * CH + c, mask=cm, other=0.0)[None, :]
            if MATH == 0:
                gh = gy * Ck
                gdt = gh * x * Bk + dt * A
                gB = tl.sum(gh * x, 1)
                gC = tl.sum(gy * dt, 1)
                acc_A += gdt
                acc_bias += gh
                gx += gh * Bk + Dk * gy
            else:
                bias = tl.load(bias_ptr + k * CH + c, mask=cm, other=0.0)[None, :]
                v = dt + bias
                sp, e = _softplus(v, MATH)
                sig = tl.fdiv(tl.where(v >= 0.0, 1.0, e), 1.0 + e)
                a = _ex2(sp * A * LOG2E)
                bx = sp * x * Bk
                h = a * bx + bx  # stands in for the forward's recomputed scan
                gh = gy * Ck + a * gy  # and this for the reverse scan of the state's gradient
                gah = gh * a * h
                gdt = (gh * x * Bk + gah * A) * sig
                gB = tl.sum(gh * sp * x, 1)
                gC = tl.sum(gy * h, 1)
                acc_A += gah * sp
                acc_bias += gdt
                gx += gh * sp * Bk + Dk * gy
            tl.store(gdt_ptr + t[:, None] * (4 * CH) + k * CH + c[None, :],
                     gdt.to(gdt_ptr.dtype.element_ty), mask=m)
            k4 = tl.arange(0, 4)[None, :] == k
            gB4 = tl.where(k4, gB[:, None], gB4)
            gC4 = tl.where(k4, gC[:, None], gC4)
        acc_D += gy * x
        k4 = t[:, None] * 4 + tl.arange(0, 4)[None, :]
        tl.atomic_add(gB_ptr + k4, gB4, mask=tm[:, None], sem='relaxed')
        tl.atomic_add(gC_ptr + k4, gC4, mask=tm[:, None], sem='relaxed')
        tl.store(gx_ptr + t[:, None] * CH + c[None, :], gx.to(gx_ptr.dtype.element_ty), mask=m)
    tl.atomic_add(gA_ptr + c, tl.sum(acc_A, 0), mask=cm, sem='relaxed')
    tl.atomic_add(gbias_ptr + c, tl.sum(acc_bias, 0), mask=cm, sem='relaxed')
    tl.atomic_add(gD_ptr + c, tl.sum(acc_D, 0), mask=cm, sem='relaxed')


def probe_inputs(b, d, h, w, device='cuda'):
    """VMamba-T's cross-op inputs, channels-last, bf16 maps, fp32 parameters (one per
    direction and channel, direction-major as the op takes them)."""
    g = torch.Generator(device=device).manual_seed(0)

    def r(*s):
        return torch.randn(*s, device=device, generator=g)
    return dict(x=r(b, h, w, d).bfloat16(), delta=(r(b, h, w, 4, d) * 0.5 - 1).bfloat16(),
                B=r(b, h, w, 4, 1).bfloat16(), C=r(b, h, w, 4, 1).bfloat16(),
                A=-torch.rand(4 * d, 1, device=device) - 0.05, D=r(4 * d),
                bias=torch.rand(4 * d, device=device), gy=r(b, h, w, d).bfloat16())


def fwd_probe(inp, math, block_t, block_c, warps, out=None):
    """The forward probe in (block_t tokens, block_c channels) tiles; returns y."""
    x = inp['x']
    b, h, w, d = x.shape
    ntok = b * h * w
    y = torch.empty_like(x) if out is None else out
    _fwd_probe[(triton.cdiv(ntok, block_t), triton.cdiv(d, block_c))](
        x, inp['delta'], inp['B'], inp['C'], inp['A'], inp['D'], inp['bias'], y, ntok, d,
        MATH=MATHS.index(math), BLOCK_T=block_t, BLOCK_C=block_c, num_warps=warps)
    return y


def bwd_probe(inp, math, block_t, block_c, warps, per_sm, grads, stages=1):
    """The backward probe with ``per_sm`` programs an SM for each channel block, its tile
    loop's loads ``stages``-deep software-pipelined."""
    x = inp['x']
    b, h, w, d = x.shape
    ntok = b * h * w
    for name in ('gB', 'gC', 'gA', 'gD', 'gbias'):  # summed with atomics, as in the op
        grads[name].zero_()
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1
    _bwd_probe[(min(sms * per_sm, triton.cdiv(ntok, block_t)), triton.cdiv(d, block_c))](
        x, inp['delta'], inp['B'], inp['C'], inp['A'], inp['D'], inp['bias'], inp['gy'],
        grads['gx'], grads['gdt'], grads['gB'], grads['gC'], grads['gA'], grads['gD'],
        grads['gbias'], ntok, d, MATH=MATHS.index(math), BLOCK_T=block_t, BLOCK_C=block_c,
        STAGES=stages, num_warps=warps)


def fwd_probe_reference(inp, math):
    """The forward probe's stand-in math in PyTorch fp32: the check that the kernel does the
    work it claims (nothing folded away) before it is timed."""
    f = {k: v.float() for k, v in inp.items()}
    x, d = f['x'], f['x'].shape[-1]
    A, D, bias = f['A'].view(4, d), f['D'].view(4, d), f['bias'].view(4, d)
    y = torch.zeros_like(x)
    for k in range(4):
        dt, Bk, Ck = f['delta'][..., k, :], f['B'][..., k, :], f['C'][..., k, :]
        if math == 'mem':
            y += (dt * Bk + D[k]) * x * Ck
        else:
            sp = torch.nn.functional.softplus(dt + bias[k])
            bx = sp * x * Bk
            y += (torch.exp(sp * A[k]) * bx + bx) * Ck + D[k] * x
    return y


#: the probes' arguments stored as fp32 (the rest of the pointers are bf16 maps)
FP32_ARGS = {'A_ptr', 'D_ptr', 'bias_ptr', 'gA_ptr', 'gD_ptr', 'gbias_ptr', 'gB_ptr', 'gC_ptr'}


def compile_sm90(name, warps, **consts):
    """Probe ``name`` (``_fwd_probe`` / ``_bwd_probe``) compiled for sm_90 without a GPU, as
    the JIT would at VMamba-T's stage 1 (16-byte aligned pointers, CH a multiple of 16)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = globals()[name]
    sig, constexprs, attrs = {}, {}, {}
    for i, arg in enumerate(fn.arg_names):
        if arg in consts:
            sig[arg], constexprs[(i,)] = 'constexpr', consts[arg]
        elif arg.endswith('_ptr'):
            sig[arg] = '*fp32' if arg in FP32_ARGS else '*bf16'
            attrs[(i,)] = [['tt.divisibility', 16]]
        else:  # NTOK, CH
            sig[arg] = 'i32'
            if arg == 'CH':
                attrs[(i,)] = [['tt.divisibility', 16]]
    return triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget('cuda', 90, 32), options=dict(num_warps=warps))


def sass_counts():
    """Offline: the probes' sm_90 SASS instructions per element and direction (the forward's
    whole kernel, the backward's tile loop, unpipelined), as tools/gluon_sass_count.py counts
    the op's kernels; at 32-channel tiles, which VMamba's 96 channels fill without padding
    (the forward's best tile in runs DH-DN)."""
    import gluon_sass_count as gsc
    from test_ops_gluon_cross import _ptxas_stats
    for name, (bt, bc, warps) in (('_fwd_probe', (16, 32, 2)), ('_bwd_probe', (8, 32, 1))):
        for math in MATHS:
            extra = dict(STAGES=1) if name == '_bwd_probe' else {}
            kernel = compile_sm90(name, warps, MATH=MATHS.index(math), BLOCK_T=bt, BLOCK_C=bc,
                                  **extra)
            text = gsc.sass(kernel)
            ops = (re.findall(r'^\s+/\*[0-9a-f]{4,}\*/\s+[^;]*;', text, re.M)
                   if name == '_fwd_probe' else gsc.main_loop(text))
            per_thread = 4 * bt * bc / (32 * warps)  # elements x directions a thread owns
            regs, spills = _ptxas_stats(kernel.asm['ptx'])
            print(f'{name} {math:4s} T{bt} C{bc} w{warps}: {len(ops) / per_thread:.1f} '
                  f'instructions per element and direction; {regs} registers, {spills} bytes '
                  f'spilled', flush=True)


FWD_CONFIGS = [(8, 32, 1), (16, 32, 1), (8, 64, 2), (16, 32, 2), (32, 32, 2), (16, 64, 2),
               (32, 32, 4), (64, 32, 4), (128, 32, 4), (32, 64, 4), (64, 64, 8), (16, 128, 4),
               (32, 128, 4), (32, 128, 8)]  # BLOCK_T, BLOCK_C, warps
BWD_CONFIGS = [(8, 128, 4, 3, 1), (8, 32, 1, 12, 1), (8, 128, 4, 2, 2), (8, 128, 4, 2, 3),
               (8, 128, 4, 3, 3), (8, 32, 1, 6, 3), (8, 32, 1, 8, 3), (8, 32, 1, 4, 4),
               (16, 32, 2, 4, 2), (16, 32, 2, 3, 3), (16, 32, 2, 2, 4), (8, 64, 2, 3, 3),
               (16, 64, 4, 2, 3), (4, 128, 2, 4, 3)]
#: (BLOCK_T, BLOCK_C, warps, programs an SM, pipeline stages)


def main():
    from bench_scan import copy_bandwidth, time_cuda_graph
    from mmvision_ssm.ops import cross_selective_scan
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shape', type=int, nargs=4, default=[64, 96, 56, 56],
                   metavar=('B', 'D', 'H', 'W'), help='VMamba-T stage 1 at 224^2 b64')
    p.add_argument('--reps', type=int, default=20)
    p.add_argument('--out')
    p.add_argument('--sass', action='store_true',
                   help='no GPU: print the probes\' sm_90 instruction counts and exit')
    args = p.parse_args()
    if args.sass:
        return sass_counts()
    b, d, h, w = args.shape
    L = h * w
    inp = probe_inputs(b, d, h, w)
    fwd_bytes = 2 * (b * d * L * 6 + 2 * 4 * b * L)       # x, 4 dt, y; B, C
    bwd_bytes = 2 * (b * d * L * 11 + 4 * 4 * b * L)      # x, 4 dt, gy, gx, 4 gdt; B, C, gB, gC
    copy = copy_bandwidth('cuda', args.reps)
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, triton '
          f'{triton.__version__}; copy {copy:.0f} GB/s; shape b={b} d={d} {h}x{w}', flush=True)
    rows = []

    def record(kind, name, ms, nbytes, **extra):
        gbs = nbytes / ms / 1e6
        rows.append(dict(kind=kind, name=name, ms=ms, GBps=gbs, frac_of_copy=gbs / copy,
                         **extra))
        print(f'{kind:4s} {name:34s} {ms:.4f} ms {gbs:7.0f} GB/s {100 * gbs / copy:5.1f} % '
              f'of copy', flush=True)

    y = torch.empty_like(inp['x'])
    grads = dict(gx=torch.empty_like(inp['x']), gdt=torch.empty_like(inp['delta']),
                 gB=torch.empty_like(inp['B'], dtype=torch.float32),
                 gC=torch.empty_like(inp['C'], dtype=torch.float32),
                 gA=torch.zeros(4 * d, device='cuda'), gD=torch.zeros(4 * d, device='cuda'),
                 gbias=torch.zeros(4 * d, device='cuda'))
    best = {}
    for math in MATHS:
        fwd_probe(inp, math, 32, 32, 4, y)
        err = (y.float() - fwd_probe_reference(inp, math)).abs().max().item()
        scale = y.float().abs().max().item()
        assert err <= 0.02 * scale, (math, err, scale)  # bf16 output, approximate ex2/lg2
        for bt, bc, nw in FWD_CONFIGS:
            ms = time_cuda_graph(lambda: fwd_probe(inp, math, bt, bc, nw, y), args.reps)
            record('fwd', f'{math} T{bt} C{bc} w{nw}', ms, fwd_bytes, math=math)
            best[('fwd', math)] = min(best.get(('fwd', math), 1e9), ms)
        for bt, bc, nw, per_sm, stages in BWD_CONFIGS:
            ms = time_cuda_graph(
                lambda: bwd_probe(inp, math, bt, bc, nw, per_sm, grads, stages), args.reps)
            record('bwd', f'{math} T{bt} C{bc} w{nw} {per_sm}/SM s{stages}', ms, bwd_bytes,
                   math=math)
            best[('bwd', math)] = min(best.get(('bwd', math), 1e9), ms)
    for math in MATHS:
        record('f+b', f'{math} best probes', best[('fwd', math)] + best[('bwd', math)],
               fwd_bytes + bwd_bytes, math=math)

    # the op itself, as VMamba-T calls it (D, delta_bias, softplus), in the same process
    leaves = [inp['x'].clone().requires_grad_(), inp['delta'].clone().requires_grad_(),
              inp['A'].clone().requires_grad_(), inp['B'].clone().requires_grad_(),
              inp['C'].clone().requires_grad_(), inp['D'].clone().requires_grad_(),
              inp['bias'].clone().requires_grad_()]

    def op():
        return cross_selective_scan(*leaves[:5], D=leaves[5], delta_bias=leaves[6],
                                    delta_softplus=True, channels_last=True, backend='triton')
    with torch.no_grad():
        record('fwd', 'the fused op', time_cuda_graph(op, args.reps), fwd_bytes)
    record('f+b', 'the fused op', time_cuda_graph(
        lambda: torch.autograd.grad(op(), leaves, inp['gy']), args.reps),
        fwd_bytes + bwd_bytes)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                           triton=triton.__version__, copy_GBps=copy, shape=args.shape,
                           rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
