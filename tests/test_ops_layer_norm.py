"""The fast LayerNorm (mmvision_ssm.ops.layer_norm, models.layers.LayerNorm) against F.layer_norm.

The Triton kernels run here through Triton's CPU interpreter (subprocess: the interpreter must be
chosen before Triton compiles anything); tools/gpu_check_ops.py runs them compiled on a GPU.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from mmvision_ssm.models.layers import LayerNorm
from mmvision_ssm.ops.layer_norm import layer_norm, output_dtype


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_torch_path_matches_layer_norm(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 96, generator=g, dtype=dtype) * 3 + 1
    w, b = torch.randn(96, generator=g, dtype=dtype), torch.randn(96, generator=g, dtype=dtype)
    torch.testing.assert_close(layer_norm(x, w, b, 1e-5), F.layer_norm(x, (96,), w, b, 1e-5))


def test_module_is_a_layernorm_with_the_same_state_dict():
    ref, ours = torch.nn.LayerNorm(96, eps=1e-6), LayerNorm(96, eps=1e-6)
    assert isinstance(ours, torch.nn.LayerNorm)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 96)
    with torch.no_grad():
        ref.weight.normal_(), ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    with pytest.raises(ValueError, match='last dim only'):
        LayerNorm((4, 96))


def test_output_dtype_under_autocast():
    x = torch.randn(2, 8)
    assert output_dtype(x, True) == torch.float32  # no autocast: the input's dtype
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert output_dtype(x, True) == torch.bfloat16
        assert output_dtype(x, False) == torch.float32  # what F.layer_norm returns there
        ln = LayerNorm(8, low_precision_output=True)
        y = ln(x.bfloat16())
        assert y.dtype == torch.bfloat16
        ref = F.layer_norm(x.bfloat16().float(), (8,), ln.weight, ln.bias)
        torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=1e-2)
        assert LayerNorm(8)(x.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('out_dtype', [torch.bfloat16, torch.float32])
def test_half_input_with_autograd_keeps_the_input_not_a_float_copy(bias, out_dtype):
    """A bf16 input with autograd (the PyTorch path): same values and gradients as
    F.layer_norm of its float32 copy, but the backward keeps the bf16 input, not that copy."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 6, 5, 96, generator=g) * 2 + 1).bfloat16().requires_grad_()
    w = torch.randn(96, generator=g).requires_grad_()
    b = torch.randn(96, generator=g).requires_grad_() if bias else None
    dy = torch.randn(4, 6, 5, 96, generator=g)
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer_norm(x, w, b, 1e-5, out_dtype)
    assert y.dtype == out_dtype
    big = [t for t in kept if t.numel() == x.numel()]
    assert big and all(t.dtype == torch.bfloat16 for t in big), [t.dtype for t in big]
    leaves = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad((y.float() * dy).sum(), leaves)
    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    yr = F.layer_norm(ref_leaves[0], (96,), *ref_leaves[1:] + [None] * (not bias), eps=1e-5)
    want = torch.autograd.grad((yr.to(out_dtype).float() * dy).sum(), ref_leaves)
    torch.testing.assert_close(y.float(), yr.to(out_dtype).float())
    for got, ref, name in zip(grads, want, ['x', 'weight', 'bias']):
        assert got.dtype == leaves[['x', 'weight', 'bias'].index(name)].dtype
        torch.testing.assert_close(got.float(), ref.to(got.dtype).float(), rtol=2e-2, atol=1e-3,
                                   msg=name)


SCRIPT = textwrap.dedent('''
    import torch, torch.nn.functional as F
    from mmvision_ssm.ops.layer_norm_triton import layer_norm_triton
    g = torch.Generator().manual_seed(1)
    worst = {}
    for (M, C) in [(37, 96), (5, 200), (130, 7), (1, 1)]:
        for bias in (True, False):
            x = torch.randn(M, C, generator=g, dtype=torch.float64) * 2 + 0.5
            w = torch.randn(C, generator=g, dtype=torch.float64)
            b = torch.randn(C, generator=g, dtype=torch.float64) if bias else None
            dy = torch.randn(M, C, generator=g, dtype=torch.float64)
            leaves = [x, w] + ([b] if bias else [])
            ref = [t.clone().requires_grad_() for t in leaves]
            yr = F.layer_norm(ref[0], (C,), ref[1], ref[2] if bias else None, 1e-5)
            gr = torch.autograd.grad((yr * dy).sum(), ref)
            got = [t.float().clone().requires_grad_() for t in leaves]
            y = layer_norm_triton(got[0], got[1], got[2] if bias else None, 1e-5, torch.float32)
            gg = torch.autograd.grad((y.double() * dy).sum(), got)
            for name, a, r in zip(['y', 'dx', 'dw', 'db'], [y, *gg], [yr, *gr]):
                # C = 1: y = bias and dx = dw = 0 up to rounding; judge those against a floor
                err = float((a.detach().double() - r).norm() / (r.norm() + 1e-3 * r.numel() ** 0.5))
                key = f'{M}x{C} bias={bias} {name}'
                worst[key] = err
                assert torch.isfinite(a).all(), key
    # a non-contiguous (B, H, W, C) map: y and dx keep its shape
    x = torch.randn(3, 96, 4, 5, generator=g, dtype=torch.float64).permute(0, 2, 3, 1)
    w, b = (torch.randn(96, generator=g, dtype=torch.float64) for _ in range(2))
    dy = torch.randn(3, 4, 5, 96, generator=g, dtype=torch.float64)
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    gr = torch.autograd.grad((F.layer_norm(ref[0], (96,), ref[1], ref[2], 1e-5) * dy).sum(), ref)
    got = [t.float().requires_grad_() for t in (x, w, b)]
    y = layer_norm_triton(*got, 1e-5, torch.float32)
    gg = torch.autograd.grad((y.double() * dy).sum(), got)
    assert y.shape == gg[0].shape == x.shape
    for name, a, r in zip(['dx', 'dw', 'db'], gg, gr):
        worst[f'4d {name}'] = float((a.double() - r).norm() / r.norm())
    # bf16 in, bf16 out (what VMamba uses under autocast)
    x = torch.randn(64, 96, generator=g)
    w, b = torch.randn(96, generator=g), torch.randn(96, generator=g)
    y = layer_norm_triton(x.bfloat16(), w, b, 1e-5, torch.bfloat16)
    assert y.dtype == torch.bfloat16
    yr = F.layer_norm(x.bfloat16().float(), (96,), w, b, 1e-5)
    worst['bf16 y'] = float((y.float() - yr).norm() / yr.norm())
    # channels-last map in, contiguous NCHW out (a backbone's output norm, no autograd):
    # several pixel blocks per image, a partial last block, padded channels, both dtypes
    from mmvision_ssm.ops.layer_norm_triton import ln_forward_nchw
    for (bsz, h, w_, C), out_dtype in [((2, 5, 7, 96), torch.float32),
                                       ((3, 9, 4, 13), torch.bfloat16), ((1, 1, 1, 8), torch.float32)]:
        x = torch.randn(bsz, h, w_, C, generator=g) * 2 + 0.5
        w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
        y = ln_forward_nchw(x, w, b, 1e-5, out_dtype)
        assert y.shape == (bsz, C, h, w_) and y.is_contiguous() and y.dtype == out_dtype
        yr = F.layer_norm(x.double(), (C,), w.double(), b.double(), 1e-5).permute(0, 3, 1, 2)
        tag = 'bf16 ' if out_dtype == torch.bfloat16 else ''
        worst[f'{tag}nchw {bsz}x{h}x{w_}x{C}'] = float((y.double() - yr).norm() / yr.norm())
    # a per-channel input bias (the preceding conv's), added inside the forward kernel
    from mmvision_ssm.ops.layer_norm_triton import ln_forward
    x = torch.randn(2, 6, 5, 48, generator=g)
    ib, w, b = (torch.randn(48, generator=g) for _ in range(3))
    for out_dtype in (torch.float32, torch.bfloat16):
        y = ln_forward(x.to(out_dtype), w, b, 1e-5, out_dtype, ib)[0]
        xr = x.to(out_dtype).double() + ib.double()
        yr = F.layer_norm(xr, (48,), w.double(), b.double(), 1e-5)
        worst[f'{"bf16 " if out_dtype == torch.bfloat16 else ""}input bias'] = float(
            (y.double() - yr).norm() / yr.norm())
    bad = {k: v for k, v in worst.items() if v > (1e-2 if 'bf16' in k else 1e-5)}
    print('worst', max(worst.values()), 'bad', bad)
    assert not bad, bad
''')


def test_nchw_output_matches_the_permuted_norm_on_the_torch_path():
    # CPU (the Triton kernel runs in the interpreter test above): the same values as the norm
    # followed by a permuting copy, as a contiguous NCHW map, with autograd too
    from mmvision_ssm.ops.layer_norm import layer_norm_nchw
    g = torch.Generator().manual_seed(2)
    norm = LayerNorm(24, eps=1e-6)
    torch.nn.init.normal_(norm.weight, generator=g)
    x = torch.randn(2, 5, 3, 24, generator=g, requires_grad=True)
    y = norm.forward_nchw(x)
    assert y.shape == (2, 24, 5, 3) and y.is_contiguous()
    torch.testing.assert_close(y, norm(x).permute(0, 3, 1, 2))
    y.sum().backward()
    assert x.grad is not None and norm.weight.grad is not None
    with pytest.raises(ValueError, match='layer_norm_nchw expects a'):
        layer_norm_nchw(x[0], norm.weight, norm.bias)


def test_input_bias_is_added_before_the_norm():
    g = torch.Generator().manual_seed(3)
    x, ib, w, b = (torch.randn(*s, generator=g) for s in ((2, 4, 3, 16), (16,), (16,), (16,)))
    want = F.layer_norm(x + ib, (16,), w, b, 1e-5)
    torch.testing.assert_close(layer_norm(x, w, b, 1e-5, input_bias=ib), want)
    # with autograd the bias gets its gradient (the sum of the input's)
    ib.requires_grad_()
    y = layer_norm(x, w, b, 1e-5, input_bias=ib)
    (y * x).sum().backward()
    xr, ibr = x.clone().requires_grad_(), ib.detach().clone().requires_grad_()
    (F.layer_norm(xr + ibr, (16,), w, b, 1e-5) * x).sum().backward()
    torch.testing.assert_close(ib.grad, ibr.grad)


def test_triton_kernels_in_interpreter():
    pytest.importorskip('triton')
    env = dict(os.environ, TRITON_INTERPRET='1')
    res = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert 'worst' in res.stdout
