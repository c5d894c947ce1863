"""The fused pre-norm MLP (ops/norm_mlp.py, models/layers.py:pre_norm_mlp)."""
import copy
import os.path as osp
import sys

import pytest
import torch
from timm.layers import Mlp
from torch import nn

from mmvision_ssm.models.layers import LayerNorm, pre_norm_mlp
from mmvision_ssm.ops.norm_mlp import norm_mlp

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
from saved_activations import saved_bytes  # noqa: E402  (tools/saved_activations.py)


def _leaves(c=6, hidden=10, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
    return (r(2, 3, 5, c), r(c), r(c) if bias else None, r(hidden, c),
            r(hidden) if bias else None, r(c, hidden), r(c) if bias else None)


@pytest.mark.parametrize('approximate', ['none', 'tanh'])
@pytest.mark.parametrize('bias', [True, False])
def test_norm_mlp_gradcheck(approximate, bias):
    x, nw, nb, w1, b1, w2, b2 = _leaves(bias=bias)
    leaves = [t for t in (x, nw, nb, w1, b1, w2, b2) if t is not None]

    def fn(*args):
        it = iter(args)
        a = [next(it) if t is not None else None for t in (x, nw, nb, w1, b1, w2, b2)]
        return norm_mlp(a[0], a[1], a[2], 1e-5, *a[3:], approximate=approximate)
    assert torch.autograd.gradcheck(fn, leaves)


def _modules(width=32, ratio=4, seed=0, norm_cls=nn.LayerNorm):
    torch.manual_seed(seed)
    norm, mlp = norm_cls(width), Mlp(width, width * ratio)
    with torch.no_grad():  # not the identity init: the norm's parameters must matter
        norm.weight.normal_()
        norm.bias.normal_()
    return norm, mlp


@pytest.mark.parametrize('autocast,x_dtype', [(False, torch.float32), (True, torch.float32),
                                              (True, torch.bfloat16)])
@pytest.mark.parametrize('norm_cls', [nn.LayerNorm, LayerNorm])
def test_pre_norm_mlp_matches_the_modules(autocast, x_dtype, norm_cls):
    """Same output dtype, and values and gradients (input and all six parameters) as accurate
    as ``mlp(norm(x))``'s: both measured against the modules in float64 (float32, and bf16
    autocast with a float32 or a bf16 stream)."""
    norm, mlp = _modules(norm_cls=norm_cls)
    x = (torch.randn(2, 7, 9, 32) * 3 + 1).to(x_dtype)

    def run(fused, dtype=None):
        n, m = (norm, mlp) if dtype is None else (copy.deepcopy(norm).to(dtype),
                                                  copy.deepcopy(mlp).to(dtype))
        xx = x.detach().to(dtype or x.dtype).requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast and dtype is None):
            y = pre_norm_mlp(n, m, xx) if fused else m(n(xx))
        assert (y.grad_fn.name() == '_NormMlpBackward') == fused
        cot = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
        params = [xx, n.weight, n.bias, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias]
        return [y] + list(torch.autograd.grad(y, params, cot))

    want = run(False, torch.float64)
    modules, fused = run(False), run(True)
    for i, (a, b, w) in enumerate(zip(fused, modules, want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        err_fused, err_modules = ((t.double() - w).norm() / w.norm() for t in (a, b))
        assert err_fused <= 1.5 * err_modules + 1e-6, (i, err_fused, err_modules)


def test_pre_norm_mlp_falls_back_where_it_does_not_apply():
    norm, mlp = _modules()
    x = torch.randn(2, 4, 4, 32, requires_grad=True)
    with torch.no_grad():  # inference: the modules (fast norm kernels), no autograd Function
        assert torch.equal(pre_norm_mlp(norm, mlp, x), mlp(norm(x)))
    assert pre_norm_mlp(norm, mlp, x).grad_fn.name() == '_NormMlpBackward'
    assert pre_norm_mlp(norm, mlp, x, fused=False).grad_fn.name() != '_NormMlpBackward'
    relu_mlp = Mlp(32, 64, act_layer=nn.ReLU)
    assert pre_norm_mlp(norm, relu_mlp, x).grad_fn.name() != '_NormMlpBackward'
    drop_mlp = Mlp(32, 64, drop=0.1).train()
    assert pre_norm_mlp(norm, drop_mlp, x).grad_fn.name() != '_NormMlpBackward'
    assert pre_norm_mlp(norm, drop_mlp.eval(), x).grad_fn.name() == '_NormMlpBackward'


def test_pre_norm_mlp_keeps_half_the_bytes_for_backward():
    """The point of the Function: with an MLP ratio of 4 the modules keep the norm's input, the
    normalised tokens, fc1's output and GELU's output (1 + 1 + 4 + 4 maps); the Function keeps
    the input and fc1's output (1 + 4) plus row statistics."""
    norm, mlp = _modules(width=64)

    class Unfused(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.mlp = norm, mlp

        def forward(self, x):
            return self.mlp(self.norm(x))

    class Fused(Unfused):
        def forward(self, x):
            return pre_norm_mlp(self.norm, self.mlp, x)

    def activations(model):  # what grows with the batch (the weights' casts do not)
        one, two = (saved_bytes(model, torch.randn(b, 16, 16, 64, dtype=torch.bfloat16,
                                                   requires_grad=True), torch.bfloat16)[0]
                    for b in (2, 4))
        return two - one

    unfused, fused = activations(Unfused()), activations(Fused())
    map_bytes = 2 * 16 * 16 * 64 * 2  # one bf16 map of two more samples
    assert unfused >= 10 * map_bytes
    assert fused <= 0.55 * unfused, (fused, unfused)


@pytest.mark.parametrize('name, arch', [('VMamba', dict(embed_dims=16, depths=(1, 1, 1, 1))),
                                        ('MambaVision', dict(dim=16, in_dim=8, depths=(1, 1, 2, 2),
                                                             num_heads=(1, 1, 2, 2),
                                                             window_size=(4, 4, 4, 2))),
                                        ('MLLA', dict(embed_dims=16, depths=(1, 1, 1, 1),
                                                      num_heads=(1, 1, 2, 2)))])
def test_backbone_fused_mlp_switch(name, arch):
    """``fused_mlp`` changes what a training forward keeps, not what it computes: same outputs
    and parameter gradients as the modules (float64), fewer saved bytes."""
    from mmvision_ssm.models import backbones
    torch.manual_seed(0)
    kw = dict(arch=arch, drop_path_rate=0.0)
    fused = getattr(backbones, name)(fused_mlp=True, **kw).double().train()
    plain = getattr(backbones, name)(fused_mlp=False, **kw).double().train()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 37, 45, dtype=torch.float64)
    outs = []
    for model in (fused, plain):
        y = model(x)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum()
            for o in y).backward()
        outs.append((y, {k: p.grad for k, p in model.named_parameters()}))
    (yf, gf), (yp, gp) = outs
    for a, b in zip(yf, yp):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert gf.keys() == gp.keys()
    for k in gf:
        torch.testing.assert_close(gf[k], gp[k], rtol=1e-7, atol=1e-9, msg=k)
    kept = [saved_bytes(m.float(), torch.randn(2, 3, 64, 64), torch.float32)[0]
            for m in (fused, plain)]
    assert kept[0] < kept[1], kept
