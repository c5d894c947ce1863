"""The compiled ``cpu`` scan backend (mmvision_ssm/ops/scan_cpu.c) against the float64 reference,
and its build, threading and dispatch.

Uses test_ops.py's cases and random inputs (fresh each run, seed in every failure message)."""
import os
import stat

import pytest
import torch

from mmvision_ssm.ops import dispatch, selective_scan, selective_scan_torch
from mmvision_ssm.ops import scan_cpu
from test_ops import (CASE_IDS, CASES, F64, SEED, assert_close, make_inputs, reference, rel_err,
                      run_scan)

pytestmark = pytest.mark.skipif(scan_cpu.unavailable_reason() is not None,
                                reason=f'cpu scan backend: {scan_cpu.unavailable_reason()}')


def cpu_scan(**kw):
    return selective_scan(**kw, backend='cpu')


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)],
                         ids=['f32', 'bf16'])
def test_cpu_backend_matches_reference(case, dtype, tol):
    inputs, softplus, grad_y, grad_state, want = reference(case, dtype)
    got = run_scan(cpu_scan, inputs, softplus, dtype, grad_y, grad_state)
    assert got['y'].shape == want['y'].shape
    assert_close(got, want, 1e-4 if dtype == torch.float32 else tol, f'cpu backend {dtype}')


# d_state 1 runs 4 channels of a group together: group widths 5 and 6 leave 1 and 2 over;
# more threads than (batch x group) units splits each group's channels across threads
@pytest.mark.parametrize('shape,threads', [((2, 10, 33, 1, 2), 3), ((1, 6, 40, 1, None), 4),
                                           ((1, 12, 19, 16, 1), 5), ((3, 8, 9, 8, 4), 2)],
                         ids=['n1-g2-t3', 'n1-g1-t4', 'n16-g1-t5', 'n8-g4-t2'])
def test_cpu_backend_channel_groups_and_threads(shape, threads):
    b, d, l, n, g = shape  # noqa: E741
    case = (b, d, l, n, g, True, True, True, True)
    inputs, softplus = make_inputs(case, SEED + 7)
    gen = torch.Generator().manual_seed(SEED + 8)
    grad_y = torch.randn(b, d, l, generator=gen, dtype=F64)
    grad_state = torch.randn(b, d, n, generator=gen, dtype=F64)
    want = run_scan(selective_scan_torch, inputs, softplus, F64, grad_y, grad_state)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = run_scan(cpu_scan, inputs, softplus, torch.float32, grad_y, grad_state)
    finally:
        torch.set_num_threads(before)
    assert_close(got, want, 1e-4, f'cpu backend {shape} on {threads} threads')


def test_cpu_backend_long_sequence_is_stable():
    """20k tokens with strongly decaying states (dt A down to -200 a step, exp clamped) and
    nearly constant ones (A ~ -1e-4): finite and equal to the float64 torch backend."""
    b, d, l, n = 1, 4, 20000, 4  # noqa: E741
    gen = torch.Generator().manual_seed(SEED)
    inputs = dict(u=torch.randn(b, d, l, generator=gen, dtype=F64),
                  delta=torch.randn(b, d, l, generator=gen, dtype=F64) * 3,
                  A=-torch.tensor([[1e-4, 0.1, 5.0, 40.0]], dtype=F64).repeat(d, 1),
                  B=torch.randn(b, n, l, generator=gen, dtype=F64),
                  C=torch.randn(b, n, l, generator=gen, dtype=F64),
                  D=torch.ones(d, dtype=F64), z=None, delta_bias=None)
    grad_y = torch.randn(b, d, l, generator=gen, dtype=F64)
    grad_state = torch.randn(b, d, n, generator=gen, dtype=F64)
    want = run_scan(selective_scan_torch, inputs, True, F64, grad_y, grad_state)
    got = run_scan(cpu_scan, inputs, True, torch.float32, grad_y, grad_state)
    assert_close(got, want, 1e-4, 'cpu backend at 20k tokens')


def test_cpu_backend_propagates_nan():
    """NaN stays NaN (no -ffast-math): from a NaN input on, that channel's outputs are NaN."""
    x = torch.randn(2, 4, 16)
    A, B = -torch.rand(4, 2), torch.randn(2, 2, 16)
    for name in ('u', 'delta'):
        args = dict(u=x.clone(), delta=x.abs().clone(), A=A, B=B, C=B)
        args[name][1, 2, 5] = float('nan')
        y = selective_scan(**args, delta_softplus=True, backend='cpu')
        assert torch.isnan(y[1, 2, 5:]).all(), name
        assert torch.isfinite(y[1, 2, :5]).all() and torch.isfinite(y[0]).all(), name


def test_automatic_choice_on_cpu(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    cpu = torch.device('cpu')
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert dispatch.resolve_backend(None, cpu, dtype, 16) == 'cpu'
    assert dispatch.resolve_backend(None, cpu, F64, 1) == 'torch'
    assert dispatch.resolve_backend(None, cpu, torch.float32, 300) == 'torch'
    with pytest.raises(ValueError, match="'cpu' cannot run these inputs.*float32.*Usable here: "
                                         "ref, torch"):
        dispatch.resolve_backend('cpu', cpu, F64, 1)
    with pytest.raises(ValueError, match="'cpu' cannot run these inputs.*CPU tensors"):
        dispatch.resolve_backend('cpu', torch.device('cuda'), torch.float32, 1)
    with pytest.raises(ValueError, match="'cpu' cannot run.*d_state <= 256 \\(got 300\\)"):
        dispatch.resolve_backend('cpu', cpu, torch.float32, 300)
    monkeypatch.setattr(dispatch, 'cpu_scan_unavailable', lambda: 'no C compiler found (...)')
    assert dispatch.resolve_backend(None, cpu, torch.float32, 1) == 'torch'
    with pytest.raises(ValueError, match="'cpu' cannot run.*no C compiler found"):
        dispatch.resolve_backend('cpu', cpu, torch.float32, 1)


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """scan_cpu's library cache emptied and pointed at tmp_path; restored afterwards."""
    monkeypatch.setenv(scan_cpu.CACHE_ENV, str(tmp_path))
    scan_cpu._library.cache_clear()
    yield tmp_path
    scan_cpu._library.cache_clear()


def test_build_is_cached_per_machine(fresh_build):
    assert scan_cpu.unavailable_reason() is None
    built = list((fresh_build / 'cpu_scan').glob('scan_cpu_*.so'))
    assert len(built) == 1, built
    mtime = built[0].stat().st_mtime_ns
    scan_cpu._library.cache_clear()
    assert scan_cpu.unavailable_reason() is None  # loads the cached file, builds nothing
    assert list((fresh_build / 'cpu_scan').glob('*')) == built
    assert built[0].stat().st_mtime_ns == mtime
    x, A = torch.randn(1, 4, 9), -torch.rand(4, 1)  # and the cached library computes
    y = selective_scan(x, x.abs(), A, x[:, :1], x[:, 1:2], backend='cpu')
    assert rel_err(y, selective_scan_torch(x, x.abs(), A, x[:, :1], x[:, 1:2])) < 1e-5


def test_build_failure_and_missing_compiler_say_why(fresh_build, monkeypatch):
    broken = fresh_build / 'broken-cc'
    broken.write_text('#!/bin/sh\necho "cc: fatal error: simulated failure" >&2\nexit 1\n')
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('CC', str(broken))
    reason = scan_cpu.unavailable_reason()
    assert 'failed' in reason and 'simulated failure' in reason, reason
    assert not list((fresh_build / 'cpu_scan').glob('*.so'))  # nothing half-written is left
    x = torch.randn(1, 2, 5)
    with pytest.raises(RuntimeError, match='"cpu" is not available.*simulated failure'):
        scan_cpu.selective_scan_cpu(x, x.abs(), -torch.rand(2, 1), x[:, :1], x[:, :1])
    scan_cpu._library.cache_clear()
    monkeypatch.setattr(scan_cpu.shutil, 'which', lambda name: None)
    assert 'no C compiler found' in scan_cpu.unavailable_reason()


def test_library_that_does_not_load_says_why(fresh_build, monkeypatch):
    assert scan_cpu.unavailable_reason() is None  # built into fresh_build
    scan_cpu._library.cache_clear()

    def refuse(path):
        raise OSError(f'{path}: undefined symbol: GOMP_simulated')
    monkeypatch.setattr(scan_cpu.ctypes, 'CDLL', refuse)
    reason = scan_cpu.unavailable_reason()
    assert reason.startswith('loading ') and 'GOMP_simulated' in reason, reason


@pytest.mark.skipif(not os.path.exists('/proc/self/maps'), reason='reads /proc/self/maps (Linux)')
def test_one_openmp_runtime_with_torch():
    """The library's OpenMP threads are torch's (one libgomp loaded): a second runtime's pool
    would compete with torch's spinning workers for the cores."""
    x = torch.randn(1, 8, 64)
    selective_scan(x, x.abs(), -torch.rand(8, 1), x[:, :1], x[:, 1:2], backend='cpu')
    with open('/proc/self/maps') as f:
        runtimes = {line.split()[-1] for line in f if 'libgomp' in line or 'libiomp' in line}
    assert len(runtimes) <= 1, runtimes


def test_direct_call_refuses_more_states_than_the_c_arrays_hold():
    """selective_scan_cpu is an entry point of its own: past the C code's fixed state arrays
    (scan_max_state, 256 = mamba-ssm's limit) it raises instead of overrunning them."""
    assert scan_cpu.max_state() == 256
    x = torch.randn(1, 2, 5)
    B = torch.randn(1, 257, 5)
    with pytest.raises(ValueError, match='d_state <= 256, got A with d_state 257'):
        scan_cpu.selective_scan_cpu(x, x.abs(), -torch.rand(2, 257), B, B)
