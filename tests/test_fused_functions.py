"""The small memory-saving autograd Functions of mmvision_ssm.ops (each keeps less for the
backward and recomputes the rest there) against the plain ops: values and every gradient in
float64, dtypes under bf16 autocast, and that they keep what their docstrings say."""
import pytest
import torch
import torch.nn.functional as F

from mmvision_ssm.ops.dwconv_silu import dwconv_silu
from mmvision_ssm.ops.gated_linear import gated_linear
from mmvision_ssm.ops.norm_mlp import norm_linear

F64 = torch.float64


def _grads(fn, leaves, weight):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    out = fn(*leaves)
    grads = torch.autograd.grad((out.double() * weight).sum(), leaves)
    return out, grads


def _kept_bytes(fn, leaves):
    """Bytes of the tensors autograd keeps for the backward that are not the leaves themselves
    or views of them."""
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    storages = {t.untyped_storage().data_ptr() for t in leaves}
    kept = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in storages:
            kept[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves)
    return sum(kept.values())


def _cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 12, generator=g, dtype=F64)
    # a strided input, as the blocks pass a half of a projection
    x_half = torch.randn(2, 5, 7, 24, generator=g, dtype=F64)[..., :12]
    dw = torch.randn(12, 1, 3, 3, generator=g, dtype=F64)
    dw5 = torch.randn(12, 1, 5, 5, generator=g, dtype=F64)
    db = torch.randn(12, generator=g, dtype=F64)
    w, b = torch.randn(10, 12, generator=g, dtype=F64), torch.randn(10, generator=g, dtype=F64)
    nw, nb = torch.randn(12, generator=g, dtype=F64), torch.randn(12, generator=g, dtype=F64)
    gate = torch.randn(2, 5, 7, 12, generator=g, dtype=F64)

    def dw_ref(x, w, b, pad):
        return F.silu(F.conv2d(x.permute(0, 3, 1, 2), w, b, padding=pad,
                               groups=12)).permute(0, 2, 3, 1)

    return {
        'dwconv_silu': (lambda x, w, b: dwconv_silu(x, w, b, 1),
                        lambda x, w, b: dw_ref(x, w, b, 1), [x_half, dw, db]),
        'dwconv_silu 5x5 no bias': (lambda x, w: dwconv_silu(x, w, None, 2),
                                    lambda x, w: dw_ref(x, w, None, 2), [x, dw5]),
        'gated_linear': (gated_linear, lambda x, g, w, b: F.linear(x * F.silu(g), w, b),
                         [x_half, gate, w, b]),
        'gated_linear no bias': (lambda x, g, w: gated_linear(x, g, w),
                                 lambda x, g, w: F.linear(x * F.silu(g), w), [x, gate, w]),
        'norm_linear': (lambda x, nw, nb, w, b: norm_linear(x, nw, nb, 1e-5, w, b),
                        lambda x, nw, nb, w, b: F.linear(F.layer_norm(x, (12,), nw, nb), w, b),
                        [x, nw, nb, w, b]),
    }


@pytest.mark.parametrize('name', list(_cases()))
def test_values_and_gradients_float64(name):
    fused, plain, leaves = _cases()[name]
    weight = torch.randn_like(plain(*leaves))
    out, grads = _grads(fused, leaves, weight)
    ref, want = _grads(plain, leaves, weight)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for i, (a, b) in enumerate(zip(grads, want)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f'input {i}: {m}')


@pytest.mark.parametrize('name', list(_cases()))
def test_keep_less_than_autograd(name):
    fused, plain, leaves = _cases()[name]
    assert _kept_bytes(fused, leaves) < _kept_bytes(plain, leaves)


@pytest.mark.parametrize('name', list(_cases()))
def test_dtypes_under_autocast(name):
    """bf16 autocast with float32 leaves: the output in the autocast dtype as the plain ops
    give it, each gradient in its leaf's dtype, values close to the plain ops'."""
    fused, plain, leaves = _cases()[name]
    leaves = [t.float() for t in leaves]
    weight = torch.randn_like(plain(*leaves)).double()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, grads = _grads(fused, leaves, weight)
        ref, want = _grads(plain, leaves, weight)
    assert out.dtype == ref.dtype
    for a, b, leaf in zip(grads, want, leaves):
        assert a.dtype == leaf.dtype
        assert ((a - b).norm() / b.norm()).item() < 2e-2
    assert ((out.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-2


def test_no_grad_paths_are_the_plain_ops():
    for name, (fused, plain, leaves) in _cases().items():
        with torch.no_grad():
            torch.testing.assert_close(fused(*leaves), plain(*leaves), rtol=1e-12, atol=1e-12)
