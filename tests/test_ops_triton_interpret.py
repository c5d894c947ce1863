"""The Triton kernels' logic on CPU, through Triton's interpreter (TRITON_INTERPRET=1).

CI has no GPU: this runs the real kernels (plain and cross, several chunks, groups, z, D, bias,
last state) on tiny float32 inputs in a subprocess (the interpreter must be chosen before Triton
compiles anything) and compares every output and gradient with the float64 reference. The cross
op runs both ways: all four directions in one program, and one direction per program.
Skipped when Triton is not installed. On a GPU, tools/gpu_check_ops.py checks the compiled kernels.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('triton')

SCRIPT = textwrap.dedent('''
    import random, torch
    import mmvision_ssm.ops.scan_triton as st
    from mmvision_ssm.ops import selective_scan_ref, cross_selective_scan

    seed = random.SystemRandom().randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0

    # fresh buffers full of NaN, as tools/gpu_check_ops.py poisons the CUDA allocator: an
    # element a kernel forgot to write (or a scratch it forgot to zero) cannot pass as 0
    def poisoned(make):
        def fn(*args, **kwargs):
            t = make(*args, **kwargs)
            return t.fill_(float('nan')) if t.is_floating_point() else t
        return fn
    torch.empty, torch.empty_like = poisoned(torch.empty), poisoned(torch.empty_like)

    def rel(a, b):
        a, b = a.double(), b.double()
        assert torch.isfinite(a).all(), f'non-finite output (seed {seed})'
        return float((a - b).norm() / (b.norm() + 1e-30))

    def grads(fn, leaves, cot):
        leaves = [t.clone().requires_grad_() for t in leaves]
        out = fn(*leaves)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o.double() * c).sum() for o, c in zip(out, cot))
        return list(out) + list(torch.autograd.grad(loss, leaves))

    def plain(b, d, l, n, g, softplus, last):
        r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
        bc = (b, n, l) if g is None else (b, g, n, l)
        leaves = [r(b, d, l), r(b, d, l) * 0.5 - 1 if softplus else r(b, d, l).abs() * 0.3,
                  -(r(d, n).abs() + 0.05), r(*bc), r(*bc), r(d), r(b, d, l), r(d).abs() * 0.3]
        cot = [r(b, d, l)] + ([r(b, d, n)] if last else [])
        kw = dict(delta_softplus=softplus, return_last_state=last)
        want = grads(lambda *a: selective_scan_ref(*a, **kw), leaves, cot)
        got = grads(lambda *a: st.selective_scan_triton(*a, **kw), [t.float() for t in leaves], cot)
        return max(rel(x, y) for x, y in zip(got, want))

    def cross(b, d, h, w, n, cl):
        r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
        x, delta, B, C = r(b, d, h, w), r(b, 4, d, h, w) * 0.5 - 1, r(b, 4, n, h, w), r(b, 4, n, h, w)
        if cl:
            x, delta, B, C = (x.permute(0, 2, 3, 1).contiguous(),
                              *(t.permute(0, 3, 4, 1, 2).contiguous() for t in (delta, B, C)))
        leaves = [x, delta, -(r(4 * d, n).abs() + 0.05), B, C, r(4 * d), r(4 * d).abs() * 0.3]
        cot = [r(*x.shape)]
        def f(backend):
            return lambda *a: cross_selective_scan(*a[:5], D=a[5], delta_bias=a[6],
                                                   channels_last=cl, backend=backend)
        want = grads(f('ref'), leaves, cot)
        got = grads(lambda *a: st.cross_selective_scan_triton(*a[:5], D=a[5], delta_bias=a[6],
                                                              channels_last=cl),
                    [t.float() for t in leaves], cot)
        return max(rel(x, y) for x, y in zip(got, want))

    # the automatic choice: channels-first cross op splits its directions only for small
    # batches; channels-last always (2 channels per program when programs are few)
    cpu = torch.device('cpu')
    assert st._pick_config(1, 96, 67200, 4, False, bsz=2, device=cpu)['split']
    assert not st._pick_config(1, 96, 3136, 4, False, bsz=64, device=cpu)['split']
    # channels-last: 8 channels per program while that leaves >= 2.5 programs per SM, then 4
    # (>= 1 per SM), then 2; the interpreter counts 132 SMs. Still fewer than 2 programs per SM
    # over several chunks: the chunk-parallel kernels with their own blocks
    st.CONFIG_OVERRIDE.update(chunk_par=False)
    cfg = st._pick_config(1, 96, 67200, 4, True, bsz=2, device=cpu)
    assert cfg['split'] and cfg['BLOCK_D'] == 4 and cfg['BLOCK_L'] == 256
    assert st._pick_config(1, 96, 67200, 4, True, bsz=1, device=cpu)['BLOCK_D'] == 2
    st.CONFIG_OVERRIDE.clear()
    cfg = st._pick_config(1, 96, 67200, 4, True, bsz=2, device=cpu)
    assert cfg['chunk_par'] and cfg['split'] and (cfg['BLOCK_D'], cfg['BLOCK_L']) == (16, 64)
    assert not st._pick_config(1, 192, 33600, 4, True, bsz=2, device=cpu)['chunk_par']  # 2.9/SM
    cfg = st._pick_config(1, 96, 3136, 4, True, bsz=64, device=cpu)
    assert cfg['split'] and cfg['BLOCK_D'] == 8
    cfg = st._pick_config(1, 384, 196, 4, True, bsz=128, device=cpu)  # short: one chunk
    assert cfg['split'] and cfg['BLOCK_D'] == 8 and cfg['BLOCK_L'] == 256
    assert not st._pick_config(1, 96, 3136, 1, False, bsz=2, device=cpu)['split']  # plain scan
    # several states (MambaVision, n = 16, 196 tokens): the states-parallel kernels, 16-token
    # chunks in one warp at any length; two channels a program from 16 states while that
    # leaves 16 programs per SM (64 x 80 here; 8 x 80 = 4.8 per SM at 4096 tokens: one)
    cfg = st._pick_config(16, 160, 196, 1, False, bsz=64, device=cpu)
    assert cfg['states'] and (cfg['BLOCK_D'], cfg['BLOCK_L'], cfg['num_warps']) == (2, 16, 1)
    assert st._pick_config(16, 5, 196, 1, False, bsz=64, device=cpu)['BLOCK_D'] == 1  # odd HD
    assert st._pick_config(8, 160, 196, 1, False, bsz=64, device=cpu)['BLOCK_D'] == 1
    assert st._pick_config(8, 160, 7, 1, False, bsz=64, device=cpu)['BLOCK_L'] == 16
    # fewer than 32 programs a SM over more than 16 chunks: segments of 16 chunks, two
    # channels a program while that leaves 24 programs a SM (MambaVision-T's 112^2 detection
    # window at batch 2: 80 x 2 x 49; UperNet's 64^2 window: 80 x 2 x 16 = 19 a SM)
    def seg_tile(n, d, l, bsz):  # noqa: E741
        cfg = st._pick_config(n, d, l, 1, False, bsz=bsz, device=cpu)
        return cfg['seg'], cfg['BLOCK_D']
    assert seg_tile(8, 160, 112 * 112, 2) == (16, 2)
    assert seg_tile(8, 160, 64 * 64, 2) == (16, 1)
    assert seg_tile(16, 160, 4096, 8) == (16, 2)
    assert seg_tile(8, 160, 4096, 64) == (0, 1)  # 10240 programs: one segment
    assert seg_tile(8, 160, 16 * 16, 2) == (0, 1)  # 16 chunks: one segment
    assert seg_tile(8, 160, 65536, 1)[0] == 64  # at most 64 segments
    assert not st._pick_config(1, 160, 196, 1, False, bsz=64, device=cpu).get('states')
    st.CONFIG_OVERRIDE.update(BLOCK_D=64)  # a program's channels stay in one B/C group
    assert st._pick_config(16, 160, 196, 1, False, bsz=64, device=cpu)['BLOCK_D'] == 32
    st.CONFIG_OVERRIDE.update(BLOCK_L=16, BLOCK_D=2)   # several chunks and channel blocks
    worst = max(worst, plain(2, 4, 37, 3 + 1, 2, True, True))  # states-parallel kernels
    st.CONFIG_OVERRIDE.update(BLOCK_D=4)  # 4 channels a program, one group
    worst = max(worst, plain(2, 8, 21, 2, None, True, True))
    worst = max(worst, plain(1, 6, 1, 1, None, False, False))
    # segment-parallel: summaries, the scan over the segments, then each segment (2 and 3
    # chunks a segment, the last one partial; the summaries' tiles 32 and 16 tokens)
    st.CONFIG_OVERRIDE.update(BLOCK_D=2, seg=2)
    worst = max(worst, plain(2, 4, 100, 4, 2, True, True))
    st.CONFIG_OVERRIDE.update(BLOCK_D=1, seg=3)
    worst = max(worst, plain(1, 2, 130, 8, None, False, True))
    del st.CONFIG_OVERRIDE['seg']
    # the general kernels with several states, one channel a program (a (1, N) tile of gA
    # atomics: the interpreter dropped all but its first state under a (1, 1) mask) and four
    st.CONFIG_OVERRIDE.update(states=False)
    worst = max(worst, plain(2, 4, 37, 4, 2, True, True))
    st.CONFIG_OVERRIDE.update(BLOCK_D=4)
    worst = max(worst, plain(2, 4, 37, 4, 2, True, True))
    # forcing the states-parallel kernels leaves the shapes they cannot run (one state, the
    # cross op) on the general kernels
    st.CONFIG_OVERRIDE.update(states=True, BLOCK_D=4, BLOCK_L=32)
    worst = max(worst, plain(2, 8, 40, 1, 4, True, False))
    worst = max(worst, cross(1, 4, 5, 7, 1, False))
    st.CONFIG_OVERRIDE.update(BLOCK_L=16, BLOCK_D=2)
    del st.CONFIG_OVERRIDE['states']
    for split in (False, True):  # four directions in one program / one direction per program
        st.CONFIG_OVERRIDE.update(split=split)
        worst = max(worst, cross(2, 3, 5, 7, 1, False))
        worst = max(worst, cross(1, 4, 4, 9, 2, True))
    del st.CONFIG_OVERRIDE['split']
    st.CONFIG_OVERRIDE.update(BLOCK_D=1, atomic=True)  # gB/gC summed with atomics
    worst = max(worst, plain(1, 4, 40, 2, 2, True, True))
    for split in (False, True):
        st.CONFIG_OVERRIDE.update(split=split)
        worst = max(worst, cross(1, 2, 3, 11, 1, False))
    st.CONFIG_OVERRIDE.clear()
    # chunk-parallel kernels (summaries -> scan over chunks -> outputs), forward and backward:
    # several chunks, groups, z, last state; the cross op in both layouts, with both gB/gC
    # reductions, and a number of chunks above one block of the middle pass's scan
    st.CONFIG_OVERRIDE.update(BLOCK_L=16, BLOCK_D=2, chunk_par=True, states=False)
    worst = max(worst, plain(2, 4, 37, 2, 2, True, True))
    worst = max(worst, plain(1, 2, 16, 1, None, False, True))  # exactly one chunk: serial
    worst = max(worst, cross(1, 4, 4, 9, 1, True))
    st.CONFIG_OVERRIDE.update(atomic=False)
    worst = max(worst, cross(2, 2, 5, 7, 2, False))
    carry_block = st.CARRY_BLOCK_C
    st.CARRY_BLOCK_C = 16
    worst = max(worst, plain(1, 2, 16 * 37 + 5, 1, None, True, True))  # 38 chunks, 3 blocks
    st.CARRY_BLOCK_C = carry_block
    st.CONFIG_OVERRIDE.clear()
    # automatic: chunk-parallel for few programs (small batch, long sequence), not for many
    assert st._pick_config(1, 96, 67200, 4, True, bsz=2, device=cpu)['chunk_par']
    assert not st._pick_config(1, 192, 3136, 4, True, bsz=64, device=cpu)['chunk_par']
    assert not st._pick_config(1, 96, 196, 4, True, bsz=2, device=cpu)['chunk_par']  # 1 chunk
    # under torch.compile the cross op is one custom op (fake + autograd registered): a full
    # graph (no break) whose values and gradients equal the eager autograd Function's
    from mmvision_ssm.ops.scan_triton_compile import cross_scan_fwd
    r = lambda *s: torch.randn(*s, generator=gen)
    args = [r(2, 4, 5, 3), r(2, 4, 5, 4, 3) * 0.5 - 1, -(r(12, 1).abs() + 0.05), r(2, 4, 5, 4, 1),
            r(2, 4, 5, 4, 1), r(12), r(12).abs() * 0.3]
    def model(x, delta, A, B, C, D, bias):
        y = st.cross_selective_scan_triton(torch.sin(x), delta, A, B, C, D=D, delta_bias=bias,
                                           channels_last=True)
        return (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum()
    def value_and_grads(fn):
        leaves = [t.clone().requires_grad_() for t in args]
        out = fn(*leaves)
        return [out] + list(torch.autograd.grad(out, leaves))
    eager = value_and_grads(model)
    compiled = value_and_grads(torch.compile(model, backend='aot_eager', fullgraph=True))
    worst = max(worst, max(rel(a, b) for a, b in zip(compiled, eager)))
    checks = torch.library.opcheck(
        cross_scan_fwd, (*[t.clone().requires_grad_() for t in args], True, True),
        test_utils=('test_schema', 'test_faketensor', 'test_autograd_registration'))
    assert all(v == 'SUCCESS' for v in checks.values()), checks
    # the cross op with delta made inside (VMamba's recompute_delta): the same values and
    # gradients as projecting first (bf16 inputs and autocast-like rounding of the weight), and
    # its forward keeps dts for the backward, not the (b, h, w, 4, d) delta the composition keeps
    b_, h_, w_, d_, r_ = 2, 5, 7, 8, 2
    dp = [r(b_, h_, w_, d_), r(b_, h_, w_, 4 * r_), r(4 * d_, 4 * r_) * 0.5,
          -(r(4 * d_, 1).abs() + 0.05), r(b_, h_, w_, 4, 1), r(b_, h_, w_, 4, 1), r(4 * d_),
          r(4 * d_).abs() * 0.3]
    dp = [t.bfloat16() if i in (0, 1, 4, 5) else t for i, t in enumerate(dp)]
    def projected(x, dts, W, A, B, C, D, bias):
        delta = torch.nn.functional.linear(dts, W.bfloat16()).unflatten(-1, (4, d_))
        return st.cross_selective_scan_triton(x, delta, A, B, C, D=D, delta_bias=bias,
                                              channels_last=True)
    def fused(x, dts, W, A, B, C, D, bias):
        return st.cross_selective_scan_dt_proj_triton(x, dts, W, A, B, C, D=D, delta_bias=bias)
    cot_dp = [r(b_, h_, w_, d_)]
    want, got = grads(projected, dp, cot_dp), grads(fused, dp, cot_dp)
    assert [t.dtype for t in got] == [t.dtype for t in want]
    worst = max(worst, max(rel(a, b) for a, b in zip(got, want)))
    def saved_shapes(fn):
        shapes = []
        def pack(t):
            shapes.append(tuple(t.shape))
            return t
        leaves = [t.clone().requires_grad_() for t in dp]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(*leaves)
        return shapes
    delta_shape = (b_, h_, w_, 4, d_)
    assert delta_shape in saved_shapes(projected)
    assert delta_shape not in saved_shapes(fused), saved_shapes(fused)
    from mmvision_ssm.ops import cross_selective_scan_dt_proj
    try:
        cross_selective_scan_dt_proj(dp[0], dp[1][..., :-1], *dp[2:6], backend='triton')
        raise AssertionError('a dts of the wrong width passed')
    except ValueError as err:
        assert 'dt_weight (4 d, 4 r)' in str(err), err
    print(f'worst rel. error {worst:.2e} (seed {seed})')
    assert worst < 1e-4, f'worst rel. error {worst:.2e} (seed {seed})'
''')


def test_triton_kernels_in_interpreter():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=root + os.pathsep
               + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert 'worst rel. error' in proc.stdout
