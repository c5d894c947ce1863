"""Scan ops on CPU: every CPU backend against the float64 sequential reference.

Inputs are fresh random draws each run; the seed is printed in every failure message
(re-run a failure with ``MMVISION_SSM_TEST_SEED=<seed>``). GPU backends are checked by
``tools/gpu_check_ops.py`` on a GPU machine (and by the CUDA-only tests at the end, skipped here).
"""
import os
import random

import pytest
import torch
import torch.nn.functional as F

from mmvision_ssm.ops import (BACKENDS, ENV_VAR, cross_merge, cross_scan, cross_selective_scan,
                              cross_selective_scan_dt_proj, cross_selective_scan_flops,
                              selective_scan, selective_scan_flop_handle, selective_scan_flops,
                              selective_scan_ref, selective_scan_torch)
from mmvision_ssm.ops.scan_torch import LinearScan, linear_scan

SEED = int(os.environ.get('MMVISION_SSM_TEST_SEED', random.SystemRandom().randrange(2**31)))
F64 = torch.float64

# (b, d, l, n, groups: None = (b, n, l) else (b, g, n, l), z, D, delta_bias, softplus)
CASES = [
    (2, 4, 1, 4, None, True, True, True, True),
    (2, 4, 7, 1, None, False, False, False, False),
    (2, 4, 7, 16, 2, True, True, False, True),
    (1, 8, 257, 4, 4, False, True, True, True),
    (2, 6, 257, 16, None, True, False, True, False),
    (1, 4, 257, 1, 4, False, True, True, True),  # VMamba-like: 4 groups, d_state 1
    (1, 2, 4097, 1, None, False, True, True, True),
    (1, 2, 4097, 16, 1, True, True, False, True),
]
CASE_IDS = ['b{}d{}l{}n{}g{}{}{}{}{}'.format(*c[:4], c[4], *('zDbs'[i] if c[5 + i] else '-'
                                                         for i in range(4))) for c in CASES]


def make_inputs(case, seed):
    b, d, l, n, g, with_z, with_D, with_bias, softplus = case
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=gen, dtype=F64) * scale + shift

    bc_shape = (b, n, l) if g is None else (b, g, n, l)
    # softplus inputs around -1 give dt ~ 0.3; raw dt must be positive
    delta = rnd(b, d, l, scale=0.5, shift=-1.0) if softplus else torch.rand(b, d, l, generator=gen,
                                                                              dtype=F64) * 0.5
    inputs = dict(
        u=rnd(b, d, l), delta=delta,
        A=-torch.rand(d, n, generator=gen, dtype=F64) * 2 - 0.05,
        B=rnd(*bc_shape), C=rnd(*bc_shape),
        D=rnd(d) if with_D else None, z=rnd(b, d, l) if with_z else None,
        delta_bias=torch.rand(d, generator=gen, dtype=F64) * 0.5 if with_bias else None)
    return inputs, softplus


def run_scan(fn, inputs, softplus, dtype, grad_y, grad_state):
    """Forward + backward of ``fn`` with inputs cast to ``dtype``; returns name -> float64 tensor."""
    leaves = {k: v.to(dtype).requires_grad_() for k, v in inputs.items() if v is not None}
    y, last = fn(**leaves, delta_softplus=softplus, return_last_state=True)
    loss = (y.double() * grad_y).sum() + (last.double() * grad_state).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    out = {'y': y.detach(), 'last_state': last.detach()}
    out.update({'grad_' + k: gr for k, gr in zip(leaves, grads)})
    return {k: v.double() for k, v in out.items()}


def rel_err(a, b):
    return float((a - b).detach().norm() / (b.detach().norm() + 1e-12))


def assert_close(got, want, tol, what):
    for k, w in want.items():
        assert torch.isfinite(got[k]).all(), f'{what}: non-finite {k} (seed {SEED})'
        err = rel_err(got[k], w)
        assert err <= tol, f'{what}: {k} rel. error {err:.3g} > {tol} (seed {SEED})'


_ref_cache = {}


def reference(case, dtype):
    """Inputs rounded to ``dtype``, their float64 reference outputs/grads, and the cotangents."""
    key = (case, dtype)
    if key not in _ref_cache:
        inputs, softplus = make_inputs(case, SEED + CASES.index(case))
        inputs = {k: None if v is None else v.to(dtype).double() for k, v in inputs.items()}
        b, d, l, n = case[:4]
        gen = torch.Generator().manual_seed(SEED - 1)
        grad_y = torch.randn(b, d, l, generator=gen, dtype=F64).to(dtype).double()
        grad_state = torch.randn(b, d, n, generator=gen, dtype=F64)
        want = run_scan(selective_scan_ref, inputs, softplus, F64, grad_y, grad_state)
        for k, v in want.items():
            assert torch.isfinite(v).all(), f'reference produced non-finite {k} (seed {SEED})'
        _ref_cache[key] = (inputs, softplus, grad_y, grad_state, want)
    return _ref_cache[key]


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
@pytest.mark.parametrize('dtype,tol', [(F64, 1e-10), (torch.float32, 1e-4),
                                       (torch.bfloat16, 1e-2)], ids=['f64', 'f32', 'bf16'])
def test_torch_backend_matches_reference(case, dtype, tol):
    inputs, softplus, grad_y, grad_state, want = reference(case, dtype)
    got = run_scan(selective_scan_torch, inputs, softplus, dtype, grad_y, grad_state)
    assert got['y'].shape == want['y'].shape
    assert_close(got, want, tol, f'torch backend {dtype}')


@pytest.mark.parametrize('backend', ['ref', 'torch'])
def test_dispatcher_backends_and_output_dtype(backend):
    case = CASES[3]
    inputs, softplus, grad_y, grad_state, want = reference(case, torch.float32)

    def fn(**kw):
        return selective_scan(**kw, backend=backend)

    got = run_scan(fn, inputs, softplus, torch.float32, grad_y, grad_state)
    assert_close(got, want, 1e-4, f'selective_scan(backend={backend!r})')
    leaves = {k: v.bfloat16() for k, v in inputs.items() if v is not None}
    y = selective_scan(**leaves, delta_softplus=softplus, backend=backend)
    assert y.dtype == torch.bfloat16


def test_reference_matches_closed_form():
    """The oracle itself against the explicit sum y_t = sum_s C_t exp(A sum_(s<r<=t) dt_r) dt_s B_s u_s."""
    gen = torch.Generator().manual_seed(SEED)
    b, d, l, n = 2, 3, 9, 2
    u, z = torch.randn(2, b, d, l, generator=gen, dtype=F64)
    dt = torch.rand(b, d, l, generator=gen, dtype=F64)
    A = -torch.rand(d, n, generator=gen, dtype=F64)
    B, C = torch.randn(2, b, n, l, generator=gen, dtype=F64)
    D = torch.randn(d, generator=gen, dtype=F64)
    y = selective_scan_ref(u, dt, A, B, C, D=D, z=z)
    cum = torch.cumsum(dt, -1)  # (b, d, l)
    decay = torch.exp((cum[..., :, None] - cum[..., None, :])[..., None] * A[:, None, None, :])
    mask = torch.ones(l, l, dtype=torch.bool).tril()[..., None]
    contrib = decay * mask * (dt * u)[:, :, None, :, None] * B.transpose(1, 2)[:, None, None]
    want = (contrib.sum(3) * C.transpose(1, 2)[:, None]).sum(-1) + D[:, None] * u
    want = want * F.silu(z)
    assert rel_err(y, want) < 1e-12


def test_linear_scan_gradcheck_and_reverse():
    gen = torch.Generator().manual_seed(SEED)
    for L in (1, 2, 5, 17):
        log_a = (-torch.rand(L, 3, generator=gen, dtype=F64)).requires_grad_()
        x = torch.randn(L, 3, generator=gen, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(LinearScan.apply, (log_a, x))
        a, h, hr = log_a.detach().exp(), [], []
        s = sr = torch.zeros(3, dtype=F64)
        for t in range(L):
            s = a[t] * s + x.detach()[t]
            h.append(s)
            sr = a[L - 1 - t] * sr + x.detach()[L - 1 - t]
            hr.insert(0, sr)
        assert rel_err(linear_scan(log_a.detach(), x.detach()), torch.stack(h)) < 1e-14
        assert rel_err(linear_scan(log_a.detach(), x.detach(), reverse=True), torch.stack(hr)) < 1e-14


def test_selective_scan_torch_gradcheck():
    inputs, softplus = make_inputs((1, 2, 6, 3, 2, True, True, True, True), SEED)
    names = list(inputs)
    leaves = [inputs[k].requires_grad_() for k in names]

    def fn(*args):
        return selective_scan_torch(**dict(zip(names, args)), delta_softplus=softplus,
                                    return_last_state=True)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize('dtype', [torch.float32, F64])
def test_long_sequence_stability(dtype):
    """L = 65536: strong decay (exp(dt*A) underflows per step) on one channel, almost none
    (the state accumulates over the whole sequence) on the other; no NaN/inf, matches the
    float64 reference."""
    L = 65536
    gen = torch.Generator().manual_seed(SEED)
    u = torch.randn(1, 2, L, generator=gen, dtype=F64)
    delta = torch.rand(1, 2, L, generator=gen, dtype=F64)
    delta[:, 0] = delta[:, 0] * 30 + 5           # softplus(5..35) ~ 5..35, A=-16: a < exp(-80)
    delta[:, 1] = delta[:, 1] * 2 - 12           # softplus(-12..-10) ~ 1e-5
    A = torch.tensor([[-16.0], [-1e-3]], dtype=F64)
    B, C = torch.randn(2, 1, 1, L, generator=gen, dtype=F64)
    D = torch.randn(2, generator=gen, dtype=F64)
    args = (u, delta, A, B, C)
    want, want_state = selective_scan_ref(*args, D=D, delta_softplus=True, return_last_state=True)
    leaves = [t.to(dtype).requires_grad_() for t in (*args, D)]
    y, state = selective_scan(*leaves[:5], D=leaves[5], delta_softplus=True, return_last_state=True,
                              backend='torch')
    grads = torch.autograd.grad(y.sum() + state.sum(), leaves)
    for t in (y, state, *grads):
        assert torch.isfinite(t).all(), f'non-finite output at L={L} (seed {SEED})'
    tol = 1e-13 if dtype == F64 else 1e-4
    assert rel_err(y.double(), want) <= tol, f'seed {SEED}'
    assert rel_err(state.double(), want_state) <= tol, f'seed {SEED}'


# ------------------------------------------------------------------ torch backend internals


@pytest.mark.parametrize('T', [1, 3, 4])
@pytest.mark.parametrize('l', [1, 2, 3, 4, 5, 8, 9])
def test_torch_backend_chunk_boundaries(monkeypatch, T, l):
    """Forced chunk length T: l = T-1, T, T+1, multiples and l = 1 (padding, one chunk, the carry
    across chunk ends in both directions) against the float64 reference, forward and backward."""
    import mmvision_ssm.ops.scan_torch as scan_torch
    nc = -(-l // T)
    monkeypatch.setattr(scan_torch, '_chunking', lambda L, numel: (T, -(-L // T)))
    for case in [(2, 4, l, 1, 2, False, True, True, True),
                 (1, 3, l, 3, None, True, False, False, True)]:
        inputs, softplus = make_inputs(case, SEED + l)
        b, d, _, n = case[:4]
        gen = torch.Generator().manual_seed(SEED - l)
        grad_y = torch.randn(b, d, l, generator=gen, dtype=F64)
        grad_state = torch.randn(b, d, n, generator=gen, dtype=F64)
        want = run_scan(selective_scan_ref, inputs, softplus, F64, grad_y, grad_state)
        got = run_scan(selective_scan_torch, inputs, softplus, F64, grad_y, grad_state)
        assert_close(got, want, 1e-10, f'torch backend, chunks of {T} x {nc}, l={l}, case {case}')


def test_softplus_accuracy():
    """The vectorised softplus against F.softplus in float64 (log1p(exp(x)), and x itself above
    20): a few ulp times (4 + |x|) -- the argument of its exp2 is x * log2(e), rounded -- over the
    normal range, tails included."""
    from mmvision_ssm.ops.scan_torch import _softplus
    gen = torch.Generator().manual_seed(SEED)
    for dtype, lo in [(F64, -700.0), (torch.float32, -80.0)]:
        x = torch.cat([torch.linspace(lo, 100, 20001, dtype=F64),
                       torch.randn(10000, generator=gen, dtype=F64) * 8]).to(dtype)
        got = _softplus(x, *(torch.empty_like(x) for _ in range(3))).double()
        xd = x.double()
        want = torch.nn.functional.softplus(xd)
        err = (got - want).abs() / want
        bound = 2 * torch.finfo(dtype).eps * (4 + xd.abs())
        worst = int((err / bound).argmax())
        assert bool((err <= bound).all()), (f'{dtype}: rel. error {float(err[worst]):.3g} at '
                                            f'x={float(xd[worst])}')


def test_torch_backend_scratch_reuse():
    """CPU scratch buffers kept between calls: a smaller call after a larger one (views into the
    same storage) and the reverse give exactly the results of a fresh start."""
    from mmvision_ssm.ops.scan_torch import _SCRATCH, release_scratch
    big = make_inputs((2, 8, 300, 4, 2, True, True, True, True), SEED)
    small = make_inputs((1, 4, 33, 4, None, False, True, False, True), SEED + 1)
    gy = {id(big): torch.randn(2, 8, 300, dtype=F64), id(small): torch.randn(1, 4, 33, dtype=F64)}
    gs = {id(big): torch.randn(2, 8, 4, dtype=F64), id(small): torch.randn(1, 4, 4, dtype=F64)}

    def run(case):
        inputs, softplus = case
        return run_scan(selective_scan_torch, inputs, softplus, torch.float32, gy[id(case)],
                        gs[id(case)])

    fresh = {}
    for case in (big, small):
        release_scratch()
        fresh[id(case)] = run(case)
    assert _SCRATCH.bufs  # kept after the call
    for case in (big, small, big):
        got = run(case)
        for k, v in fresh[id(case)].items():
            assert torch.equal(got[k], v), k
    release_scratch()
    assert not _SCRATCH.bufs


# --------------------------------------------------------------------------- dispatcher


def test_dispatcher_choice_env_and_errors(monkeypatch):
    x = torch.randn(1, 2, 5)
    A, B = -torch.rand(2, 1), torch.randn(1, 1, 5)
    monkeypatch.delenv(ENV_VAR, raising=False)
    y = selective_scan(x, x.abs(), A, B, B)  # CPU default: cpu (tests/test_ops_cpu.py), or torch
    assert rel_err(y, selective_scan_torch(x, x.abs(), A, B, B)) < 1e-6
    with pytest.raises(ValueError, match='valid choices: ref, torch, cpu, triton, mamba_ssm'):
        selective_scan(x, x.abs(), A, B, B, backend='cuda_magic')
    with pytest.raises(ValueError, match="'triton' cannot run these inputs.*CUDA"):
        selective_scan(x, x.abs(), A, B, B, backend='triton')
    monkeypatch.setenv(ENV_VAR, 'nope')
    with pytest.raises(ValueError, match=f'{ENV_VAR}=.nope.*valid choices'):
        selective_scan(x, x.abs(), A, B, B)
    monkeypatch.setenv(ENV_VAR, 'ref')
    calls = []
    import mmvision_ssm.ops as ops
    monkeypatch.setattr(ops, 'selective_scan_ref', lambda *a, **k: calls.append(1) or a[0])
    selective_scan(x, x.abs(), A, B, B)
    assert calls == [1]
    assert set(BACKENDS) == {'ref', 'torch', 'cpu', 'triton', 'mamba_ssm'}


def test_automatic_choice_on_cuda(monkeypatch):
    """Without a GPU: the automatic choice given what is 'installed' (availability patched)."""
    from mmvision_ssm.ops import dispatch
    monkeypatch.delenv(ENV_VAR, raising=False)
    cuda, bf16 = torch.device('cuda'), torch.bfloat16
    for triton_ok, mamba_ok, n, want in [(True, True, 1, 'triton'), (True, True, 8, 'mamba_ssm'),
                                         (True, False, 8, 'triton'), (False, True, 1, 'mamba_ssm'),
                                         (False, False, 1, 'torch'), (True, False, 32, 'torch')]:
        monkeypatch.setattr(dispatch, 'triton_importable', lambda ok=triton_ok: ok)
        monkeypatch.setattr(dispatch, 'mamba_ssm_importable', lambda ok=mamba_ok: ok)
        assert dispatch.resolve_backend(None, cuda, bf16, n) == want
        assert dispatch.resolve_backend(None, cuda, F64, n) == 'torch'
    with pytest.raises(ValueError, match='d_state <= 16'):
        dispatch.resolve_backend('triton', cuda, bf16, 32)


def test_shape_errors():
    x = torch.randn(1, 4, 5)
    A, B = -torch.rand(4, 2), torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match='A must be'):
        selective_scan(x, x, A[:3], B, B)
    with pytest.raises(ValueError, match='divisible'):
        selective_scan(x, x, A, torch.randn(1, 3, 2, 5), torch.randn(1, 3, 2, 5))
    with pytest.raises(ValueError, match='C must be'):
        selective_scan(x, x, A, B, B[..., :4])


# --------------------------------------------------------------------------- cross ops


def test_cross_scan_dt_proj_matches_projecting_first():
    g = torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    b, h, w, d, rk = 2, 3, 5, 4, 2
    args = [r(b, h, w, d), r(b, h, w, 4 * rk), r(4 * d, 4 * rk) * 0.5, -(r(4 * d, 1).abs() + 0.05),
            r(b, h, w, 4, 1), r(b, h, w, 4, 1), r(4 * d), r(4 * d).abs() * 0.3]

    def projected(x, dts, W, A, B, C, D, bias):
        delta = F.linear(dts, W).view(b, h, w, 4, d)
        return cross_selective_scan(x, delta, A, B, C, D=D, delta_bias=bias, channels_last=True,
                                    backend='ref')

    def fused(x, dts, W, A, B, C, D, bias):
        return cross_selective_scan_dt_proj(x, dts, W, A, B, C, D=D, delta_bias=bias,
                                            backend='ref')
    results = []
    for fn in (projected, fused):
        leaves = [t.clone().requires_grad_() for t in args]
        y = fn(*leaves)
        results.append([y] + list(torch.autograd.grad((y * y).sum(), leaves)))
    for got, want in zip(*results[::-1]):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r'dt_weight \(4 d, 4 r\)'):
        cross_selective_scan_dt_proj(args[0], args[1], args[2][:, :-1], *args[3:6])
    with pytest.raises(ValueError, match=r'x must be a \(b, h, w, d\) map'):
        cross_selective_scan_dt_proj(args[0][0], *args[1:6])


def test_dt_projection_under_autocast():
    # the Triton path's projection (also its torch.compile branch): bf16 dts with the fp32
    # weight under autocast give autocast's own bf16 result, and the same without autocast
    st = pytest.importorskip('mmvision_ssm.ops.scan_triton')
    dts, w = torch.randn(2, 3, 5, 8).bfloat16(), torch.randn(16, 8)
    want = F.linear(dts, w.bfloat16()).unflatten(-1, (4, 4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = st._dt_projection(dts, w)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert torch.equal(st._dt_projection(dts, w), want)


def test_cross_scan_directions():
    x = torch.arange(2 * 3 * 4, dtype=F64).view(1, 2, 3, 4)
    xs = cross_scan(x)
    assert xs.shape == (1, 4, 2, 12)
    h, w = 3, 4
    for k, order in enumerate([
            [i * w + j for i in range(h) for j in range(w)],
            [i * w + j for j in range(w) for i in range(h)]]):
        assert torch.equal(xs[:, k], x.flatten(2)[..., order])
        assert torch.equal(xs[:, k + 2], x.flatten(2)[..., order[::-1]])
    assert torch.equal(cross_scan(x.permute(0, 2, 3, 1), channels_last=True), xs)


@pytest.mark.parametrize('hw', [(1, 1), (3, 5), (7, 2)])
def test_cross_scan_merge_adjoint(hw):
    h, w = hw
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(2, 3, h, w, generator=gen, dtype=F64, requires_grad=True)
    y = torch.randn(2, 4, 3, h * w, generator=gen, dtype=F64, requires_grad=True)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x * cross_merge(y, h, w)).sum()
    assert abs(float((lhs - rhs).detach())) < 1e-10 * (abs(float(lhs.detach())) + 1)
    gx, = torch.autograd.grad(lhs, x)
    assert torch.allclose(gx, cross_merge(y.detach(), h, w))
    gy, = torch.autograd.grad(rhs, y)
    assert torch.allclose(gy, cross_scan(x.detach()))
    merged_cl = cross_merge(y, h, w, channels_last=True)
    assert torch.equal(merged_cl, cross_merge(y, h, w).permute(0, 2, 3, 1))


def _cross_by_hand(x, delta, A, B, C, D, delta_bias):
    """Direction by direction with explicit pixel orders (independent of cross.py)."""
    b, d, h, w = x.shape
    row = torch.arange(h * w)
    col = torch.arange(h * w).view(h, w).t().reshape(-1)
    out = torch.zeros(b, d, h * w, dtype=F64)
    for k, order in enumerate([row, col, row.flip(0), col.flip(0)]):
        sl = slice(k * d, (k + 1) * d)
        y = selective_scan_ref(x.flatten(2)[..., order], delta[:, k].flatten(2)[..., order], A[sl],
                               B[:, k].flatten(2)[..., order], C[:, k].flatten(2)[..., order],
                               D=None if D is None else D[sl],
                               delta_bias=None if delta_bias is None else delta_bias[sl],
                               delta_softplus=True)
        out[..., order] += y
    return out.view(b, d, h, w)


@pytest.mark.parametrize('backend', ['ref', 'torch'])
@pytest.mark.parametrize('n,hw,with_D', [(1, (5, 7), True), (4, (3, 2), False), (16, (1, 6), True)])
def test_cross_selective_scan_equals_composition(backend, n, hw, with_D):
    h, w = hw
    b, d = 2, 3
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(b, d, h, w, generator=gen, dtype=F64)
    delta = torch.randn(b, 4, d, h, w, generator=gen, dtype=F64) * 0.5 - 1
    A = -torch.rand(4 * d, n, generator=gen, dtype=F64) - 0.1
    B, C = torch.randn(2, b, 4, n, h, w, generator=gen, dtype=F64)
    D = torch.randn(4 * d, generator=gen, dtype=F64) if with_D else None
    bias = torch.rand(4 * d, generator=gen, dtype=F64)
    want = _cross_by_hand(x, delta, A, B, C, D, bias)
    leaves = [t.float().requires_grad_() for t in (x, delta, A, B, C)]
    y = cross_selective_scan(*leaves, D=None if D is None else D.float(), delta_bias=bias.float(),
                             backend=backend)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert rel_err(y.double(), want) < 1e-5
    x_cl, d_cl, _, B_cl, C_cl = (t.permute(0, 2, 3, 1) if t.dim() == 4 else
                                 t.permute(0, 3, 4, 1, 2) if t.dim() == 5 else t for t in leaves)
    cl = [x_cl, d_cl, leaves[2], B_cl, C_cl]
    y_cl = cross_selective_scan(*cl, D=None if D is None else D.float(), delta_bias=bias.float(),
                                channels_last=True, backend=backend)
    assert y_cl.shape == (b, h, w, d)
    assert torch.allclose(y_cl.permute(0, 3, 1, 2), y, atol=1e-6)
    grads = torch.autograd.grad((y * torch.randn_like(y)).sum(), leaves)
    assert all(torch.isfinite(g).all() for g in grads)
    # the fused op's gradient w.r.t. x is the composition's: check against the by-hand graph
    x64 = x.clone().requires_grad_()
    gw = torch.randn(b, d, h, w, generator=gen, dtype=F64)
    g_hand, = torch.autograd.grad((_cross_by_hand(x64, delta, A, B, C, D, bias) * gw).sum(), x64)
    g_op, = torch.autograd.grad((cross_selective_scan(x64, delta, A, B, C, D=D, delta_bias=bias,
                                                      backend=backend) * gw).sum(), x64)
    assert rel_err(g_op, g_hand) < 1e-10


def test_cross_selective_scan_shape_errors():
    x = torch.randn(1, 3, 4, 5)
    with pytest.raises(ValueError, match='delta must be'):
        cross_selective_scan(x, torch.randn(1, 3, 4, 5), -torch.rand(12, 1),
                             torch.randn(1, 4, 1, 4, 5), torch.randn(1, 4, 1, 4, 5))
    with pytest.raises(ValueError, match=r'A must be \(4\*d=12'):
        cross_selective_scan(x, torch.randn(1, 4, 3, 4, 5), -torch.rand(3, 1),
                             torch.randn(1, 4, 1, 4, 5), torch.randn(1, 4, 1, 4, 5))


# --------------------------------------------------------------------------- flops


def test_flop_counts():
    assert selective_scan_flops(2, 384, 3136, 1, with_D=False) == 9 * 2 * 384 * 3136
    assert selective_scan_flops(2, 8, 10, 16, with_D=True, with_z=True) == 9 * 2 * 8 * 10 * 16 + 2 * 160
    assert cross_selective_scan_flops(1, 96, 56, 56, 1) == (9 * 4 * 96 * 3136 + 4 * 96 * 3136
                                                           + 3 * 96 * 3136)
    u = torch.zeros(2, 8, 10)
    assert selective_scan_flop_handle([u, u, torch.zeros(8, 4), None, None, torch.zeros(8), None]) \
        == selective_scan_flops(2, 8, 10, 4, with_D=True, with_z=False)


def test_gpu_checker_zero_reference_floor():
    """tools/gpu_check_ops.py: an exactly-zero reference (grad_A at l = 1) with float32 rounding
    noise passes, a real error on it fails, and ordinary references stay purely relative."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools',
                        'gpu_check_ops.py')
    spec = importlib.util.spec_from_file_location('gpu_check_ops', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tol = mod.TOL[torch.float32]
    zero = torch.zeros(4, 4, dtype=F64)
    assert mod.rel_err(zero + 1e-8, zero, scale=1.0) <= tol           # rounding noise
    assert mod.rel_err(zero + 2e-7, zero, scale=1.0) <= mod.TOL[torch.bfloat16]
    assert mod.rel_err(zero + 1e-3, zero, scale=1.0) > tol            # a wrong value
    assert mod.rel_err(zero + 0.1, zero, scale=1.0) > mod.TOL[torch.bfloat16]
    ref = torch.full((4, 4), 0.1, dtype=F64)  # above the floor (1 % of scale): relative
    assert mod.rel_err(ref * (1 + 1e-3), ref, scale=1.0) == pytest.approx(1e-3)
    assert mod.rel_err(zero + float('nan'), zero) != mod.rel_err(zero + float('nan'), zero)


# --------------------------------------------------------------------------- CUDA (skipped on CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('case', CASES[:6], ids=CASE_IDS[:6])
def test_triton_backend_matches_reference(case):
    pytest.importorskip('triton')
    inputs, softplus, grad_y, grad_state, want = reference(case, torch.float32)
    cuda_inputs = {k: None if v is None else v.cuda() for k, v in inputs.items()}

    def fn(**kw):
        return selective_scan(**kw, backend='triton')

    got = run_scan(fn, cuda_inputs, softplus, torch.float32, grad_y.cuda(), grad_state.cuda())
    assert_close({k: v.cpu() for k, v in got.items()}, want, 1e-4, 'triton backend f32')



def test_opaque_to_compile_graph_breaks_and_runs_eagerly():
    """Our Triton ops run as eager islands under torch.compile (Inductor cannot compile them),
    and are plain calls in eager mode."""
    from mmvision_ssm.ops.dispatch import opaque_to_compile
    seen = []

    @opaque_to_compile
    def op(x):
        seen.append(torch.compiler.is_compiling())
        return x * 2

    def model(x):
        return op(x + 1) - 1

    x = torch.randn(5)
    assert torch.equal(op(x), x * 2) and seen == [False]
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(x).graph_break_count >= 1
    out = torch.compile(model, backend='eager')(x)
    torch.testing.assert_close(out, (x + 1) * 2 - 1)
    assert seen and not any(seen)  # the body never ran inside Dynamo's tracing


def test_importability_checks_are_constants_to_dynamo():
    """The dispatcher's importability checks must not break a compiled graph (Dynamo in
    torch 2.11 refuses to trace importlib's find_spec: one graph break per scan call)."""
    from mmvision_ssm.ops.dispatch import mamba_ssm_importable, triton_importable

    def model(x):
        return x * 2 if triton_importable() or mamba_ssm_importable() else x + 1
    torch._dynamo.reset()
    explain = torch._dynamo.explain(model)(torch.randn(3))
    assert explain.graph_break_count == 0 and explain.graph_count == 1
