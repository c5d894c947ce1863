"""MLLA backbone and MLLAttention plug-in: shapes at any size, dense-prediction knobs, the
linear-attention math against a naive float64 reference, and strict loading of the official
key layout (tests/data/mlla_t_official_keys.json, generated from the official model)."""
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from mmvision_ssm.checkpoint import CheckpointMismatchError
from mmvision_ssm.models.backbones.mlla import MLLA, LinearAttention, MLLABlock, stage_context
from mmvision_ssm.models.plugins import MLLAttention
from mmvision_ssm.ops.linear_attention import _forward as linear_attention_ops

FIXTURE = os.path.join(os.path.dirname(__file__), 'data', 'mlla_t_official_keys.json')
# small but complete: 4 stages, several heads, even head dims
MINI = dict(embed_dims=16, depths=(1, 2, 1, 1), num_heads=(2, 2, 4, 4))


@pytest.fixture(scope='module')
def tiny():
    """One MLLA-T shared by the tests that do not change it (construction costs seconds)."""
    return MLLA('tiny').eval()


@pytest.fixture(scope='module')
def official_t():
    return _official_t_state_dict()


def _uninitialised_tiny():
    """MLLA-T without the (slow) weight init, for tests that load every weight anyway."""
    with torch.device('meta'):
        model = MLLA('tiny')
    return model.to_empty(device='cpu')


def _official_t_state_dict(seed=0):
    with open(FIXTURE) as f:
        layout = json.load(f)['keys']
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randint(0, 100, (), generator=g) if k.endswith('num_batches_tracked')
                else torch.randn(shape, generator=g)) for k, shape in layout.items()}


# --- construction and shapes ----------------------------------------------------------------
@pytest.mark.parametrize('arch,dims,depths', [
    ('tiny', 64, (2, 4, 8, 4)), ('small', 64, (3, 6, 21, 6)), ('base', 96, (3, 6, 21, 6))])
def test_archs_construct(arch, dims, depths):
    with torch.device('meta'):  # the layout only: no memory, no init cost
        model, alias = MLLA(arch), MLLA(arch[0])
    assert model.out_channels == [dims, 2 * dims, 4 * dims, 8 * dims]
    assert tuple(len(stage.blocks) for stage in model.layers) == depths
    assert model.layers[3].downsample is None
    assert alias.depths == model.depths  # short aliases 't', 's', 'b'


def test_tiny_parameter_count_matches_official(tiny, official_t):
    """Ours = official T minus classifier and final norm plus the per-output norms."""
    official = {k: v for k, v in official_t.items()
                if not (k.startswith(('head.', 'norm.')) or k.endswith(
                    ('rotations', 'running_mean', 'running_var', 'num_batches_tracked')))}
    expected = sum(v.numel() for v in official.values()) + 2 * (64 + 128 + 256 + 512)
    assert sum(p.numel() for p in tiny.parameters()) == expected


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match="valid archs are .*'base'.*'small'.*'tiny'"):
        MLLA('huge')


@pytest.mark.parametrize('size', [(37, 53), (9, 7), (1, 1), (64, 32)])
def test_tiny_shapes_any_size(tiny, size):
    model = tiny
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    assert len(outs) == 4
    for i, out in enumerate(outs):
        stride = 2 ** (i + 2)
        assert out.shape == (1, model.out_channels[i], -(-h // stride), -(-w // stride))
        assert torch.isfinite(out).all() and out.is_contiguous()


def test_out_indices_and_norms():
    model = MLLA(MINI, out_indices=(1, 3)).eval()
    assert model.out_channels == [32, 128]
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3') and not hasattr(model, 'norm0')
    outs = model(torch.randn(2, 3, 45, 30))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 6, 4), (2, 128, 2, 1)]
    # outputs of an earlier-ending model agree with the full model's (same weights)
    short = MLLA(MINI, out_indices=(1,)).eval()
    short.load_state_dict({k: v for k, v in model.state_dict().items() if 'norm3' not in k})
    x = torch.randn(1, 3, 20, 24)
    torch.testing.assert_close(short(x)[0], model(x)[0])
    with pytest.raises(ValueError, match='0..3'):
        MLLA(MINI, out_indices=(0, 4))


def test_frozen_stages_and_norm_eval():
    model = MLLA(MINI, frozen_stages=2, norm_eval=True)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.norm0, model.norm1]
    for m in frozen:
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    assert model.layers[2].training and all(p.requires_grad for p in model.layers[2].parameters())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)  # norm_eval: also the unfrozen ones
    out = model(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in out).backward()
    assert model.layers[0].blocks[0].in_proj.weight.grad is None
    assert model.layers[2].blocks[0].in_proj.weight.grad is not None


def test_with_cp_same_values_and_grads():
    torch.manual_seed(0)
    plain = MLLA(MINI).train()
    ckpt = MLLA(MINI, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 23, 17)
    grads, calls = [], []
    for model in (plain, ckpt):
        count = []
        model.layers[1].blocks[0].attn.register_forward_hook(lambda *args: count.append(1))
        torch.manual_seed(1)  # the same drop-path draws
        out = model(x)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in out).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        calls.append(len(count))
    assert calls == [1, 2]  # checkpointing re-runs (part of) the block during backward
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = MLLA(MINI).eval()
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = model(x)
    for out, r in zip(outs, ref):
        assert out.dtype == torch.bfloat16
        assert ((out.float() - r).abs().max() / r.abs().max()).item() < 5e-2


# --- the math against a naive reference -----------------------------------------------------
def _naive_rope(t, height, width):
    """Official 2-D RoPE, complex form, float64 angles."""
    b, n, c = t.shape
    k_max = c // 4
    theta = 1.0 / (10000 ** (torch.arange(k_max, dtype=torch.float64) / k_max))
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    angles = torch.cat([rows[..., None] * theta, cols[..., None] * theta], -1).reshape(n, c // 2)
    rot = torch.polar(torch.ones_like(angles), angles)
    pairs = torch.view_as_complex(t.reshape(b, n, c // 2, 2).contiguous())
    return torch.view_as_real(pairs * rot).reshape(b, n, c)


def _naive_attention(attn, x):
    b, h, w, c = x.shape
    n, heads = h * w, attn.num_heads
    v = x.reshape(b, n, c)
    q, k = (F.elu(F.linear(v, attn.qk.weight, attn.qk.bias)) + 1).chunk(2, -1)
    q_rope, k_rope = _naive_rope(q, h, w), _naive_rope(k, h, w)
    out = torch.empty_like(v)
    d = c // heads
    for i in range(heads):
        s = slice(i * d, (i + 1) * d)
        z = 1 / (q[..., s] @ k[..., s].mean(1, keepdim=True).transpose(1, 2) + 1e-6)
        out[..., s] = q_rope[..., s] @ (k_rope[..., s].transpose(1, 2) @ v[..., s]) / n * z
    lepe = F.conv2d(x.permute(0, 3, 1, 2), attn.lepe.weight, attn.lepe.bias, padding=1,
                    groups=c)
    return out.reshape(b, h, w, c) + lepe.permute(0, 2, 3, 1)


def _naive_block(sd, x, heads):
    """The official block written plainly, from an official-layout state dict."""
    def lin(t, name):
        return F.linear(t, sd[f'{name}.weight'], sd[f'{name}.bias'])

    def dw(t, name):
        return F.conv2d(t.permute(0, 3, 1, 2), sd[f'{name}.weight'], sd[f'{name}.bias'],
                        padding=1, groups=t.shape[-1]).permute(0, 2, 3, 1)

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f'{name}.weight'], sd[f'{name}.bias'])

    c = x.shape[-1]
    x = x + dw(x, 'cpe1')
    shortcut, xn = x, ln(x, 'norm1')
    gate = F.silu(lin(xn, 'act_proj'))
    y = F.silu(dw(lin(xn, 'in_proj'), 'dwc'))
    attn = LinearAttention(c, heads).double()
    attn.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith('attn.')})
    x = shortcut + lin(_naive_attention(attn, y) * gate, 'out_proj')
    x = x + dw(x, 'cpe2')
    return x + lin(F.gelu(lin(ln(x, 'norm2'), 'mlp.fc1')), 'mlp.fc2')


@pytest.mark.parametrize('heads,size', [(1, (5, 7)), (2, (6, 6)), (4, (3, 11)), (2, (1, 1))])
def test_linear_attention_matches_naive(heads, size):
    """Values and every gradient (input, q/k projection, LePE) of the fused attention Function
    (hand-written backward) against autograd through the naive official math, float64."""
    torch.manual_seed(heads)
    attn = LinearAttention(16, heads).double()
    with torch.no_grad():  # ELU inputs of both signs, normalisers away from zero
        attn.qk.bias.uniform_(-0.5, 1.5)
    x = torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True)
    ctx = stage_context(*size, 16, heads, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, ctx), _naive_attention(attn, x), rtol=1e-6, atol=1e-8)
    weight = torch.randn_like(x)
    leaves = [x, *attn.parameters()]
    names = ['x'] + [n for n, _ in attn.named_parameters()]
    grads = torch.autograd.grad((attn(x, ctx) * weight).sum(), leaves)
    # the naive math: its RoPE angles are float64, ours float32 as the official tables
    want = torch.autograd.grad((_naive_attention(attn, x) * weight).sum(), leaves)
    for g, w, name in zip(grads, want, names):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7, msg=lambda m: f'd/d{name}: {m}')
    # the same ops and tables differentiated by autograd: equal to rounding
    b, h, w, c = x.shape
    v = x.reshape(b, h * w, c)
    lepe = F.conv2d(x.permute(0, 3, 1, 2), attn.lepe.weight, attn.lepe.bias, padding=1,
                    groups=c).permute(0, 2, 3, 1).reshape(b, h * w, c)
    plain = linear_attention_ops(attn.qk(v), v, lepe, *ctx)[0].view(b, h, w, c)
    want = torch.autograd.grad((plain * weight).sum(), leaves)
    for g, w, name in zip(grads, want, names):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-13, msg=lambda m: f'd/d{name}: {m}')


def test_block_matches_naive_official_layout():
    """Official-layout weights (separate in_proj/act_proj) -> convert -> our fused block."""
    torch.manual_seed(0)
    c, heads = 16, 2
    official = {k: torch.randn_like(v) * 0.3 for k, v in
                MLLABlock(c, heads).double().state_dict().items()}
    official['in_proj.weight'], official['act_proj.weight'] = official['in_proj.weight'].chunk(2)
    official['in_proj.bias'], official['act_proj.bias'] = official['in_proj.bias'].chunk(2)
    block = MLLABlock(c, heads).double()
    converted = MLLA.convert_checkpoint({f'layers.0.blocks.0.{k}': v for k, v in official.items()})
    block.load_state_dict({k[len('layers.0.blocks.0.'):]: v for k, v in converted.items()})
    x = torch.randn(2, 7, 5, c, dtype=torch.float64, requires_grad=True)
    out = block(x, stage_context(7, 5, c, heads, dtype=torch.float64))
    ref = _naive_block(official, x, heads)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-8)
    # backward too (in-place ops, fused projections, folded CPE identity)
    weight = torch.randn_like(ref)
    grad_ours, = torch.autograd.grad((out * weight).sum(), x)
    grad_ref, = torch.autograd.grad((ref * weight).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-6, atol=1e-8)


# --- official checkpoints ---------------------------------------------------------------------
def test_strict_load_of_official_layout(official_t):
    official = official_t
    model = _uninitialised_tiny()
    ema = {k: torch.zeros_like(v) for k, v in official.items()}  # must not be picked
    report = model.load_pretrained({'model': official, 'state_dict_ema': ema}, logger=None)
    assert report.ok and not report.missing and not report.unexpected
    rotations = [k for k in official if k.endswith('attn.rope.rotations')]
    assert len(rotations) == sum(model.depths)
    assert sorted(report.dropped) == sorted(
        rotations + ['head.weight', 'head.bias', 'norm.weight', 'norm.bias'])
    assert sorted(report.initialised) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    # in_proj and act_proj are stacked in that order; other tensors are copied as they are
    blk = model.layers[2].blocks[5]
    prefix = 'layers.2.blocks.5.'
    torch.testing.assert_close(blk.in_proj.weight, torch.cat(
        [official[prefix + 'in_proj.weight'], official[prefix + 'act_proj.weight']]))
    torch.testing.assert_close(blk.attn.qk.bias, official['layers.2.blocks.5.attn.qk.bias'])
    torch.testing.assert_close(model.patch_embed.conv1.norm.running_var,
                               official['patch_embed.conv1.norm.running_var'])
    # our own (converted) layout, also with a 'backbone.' prefix, loads strictly too
    for i in range(4):
        getattr(model, f'norm{i}').reset_parameters()  # left uninitialised above
    again = _uninitialised_tiny()
    again.load_pretrained({'state_dict': {f'backbone.{k}': v for k, v in
                                          model.state_dict().items()}}, logger=None)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


@pytest.mark.parametrize('edit,match', [
    (lambda sd: sd.pop('layers.1.blocks.0.cpe2.weight'), 'MISSING'),
    (lambda sd: sd.__setitem__('layers.1.blocks.0.extra', torch.zeros(1)), 'UNEXPECTED'),
    (lambda sd: sd.__setitem__('layers.0.blocks.0.attn.qk.weight', torch.zeros(3, 64)),
     'SHAPE MISMATCH'),
    (lambda sd: sd.pop('layers.0.blocks.1.in_proj.bias'), 'act_proj without'),
])
def test_strict_load_rejects_differences(tiny, official_t, edit, match):
    official = dict(official_t)
    edit(official)
    model = tiny
    before = model.layers[0].blocks[0].out_proj.weight.clone()
    with pytest.raises(CheckpointMismatchError, match=match):
        model.load_pretrained(official, logger=None)
    assert torch.equal(model.layers[0].blocks[0].out_proj.weight, before)  # untouched


def test_small_arch_rejects_tiny_checkpoint(official_t):
    with torch.device('meta'):  # the check happens before any tensor is copied
        small = MLLA('small')
    with pytest.raises(CheckpointMismatchError, match='MISSING'):
        small.load_pretrained(official_t, logger=None)


# --- MLLAttention plug-in --------------------------------------------------------------------
@pytest.mark.parametrize('size', [(1, 1), (5, 3), (13, 20)])
def test_mlla_attention_shape_and_gradient(size):
    torch.manual_seed(0)
    block = MLLAttention(32, num_heads=4)
    x = torch.randn(2, 32, *size, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape and out.is_contiguous()
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in block.parameters())


def test_mlla_attention_is_the_block_on_nchw():
    torch.manual_seed(0)
    plugin = MLLAttention(16, num_heads=2).eval()
    x = torch.randn(1, 16, 6, 9)
    ref = plugin.block(x.permute(0, 2, 3, 1), stage_context(6, 9, 16, 2))
    torch.testing.assert_close(plugin(x), ref.permute(0, 3, 1, 2))
    cp = MLLAttention(16, num_heads=2, with_cp=True).train()
    cp.load_state_dict(plugin.state_dict())
    torch.testing.assert_close(cp(x.requires_grad_()), plugin.train()(x))


def test_mlla_attention_errors():
    with pytest.raises(ValueError, match='divisible by 4'):
        MLLAttention(30, num_heads=3)
    with pytest.raises(ValueError, match=r'expects \(N, 16, H, W\)'):
        MLLAttention(16, num_heads=2)(torch.randn(1, 8, 4, 4))


# --- tools/convert_mlla.py -------------------------------------------------------------------
def _converter():
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), '..', 'tools', 'convert_mlla.py')
    spec = importlib.util.spec_from_file_location('convert_mlla', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_tool(tmp_path, official_t, capsys):
    src, dst = tmp_path / 'MLLA_T.pth', tmp_path / 'out' / 'mlla_t.pth'
    ema = {k: torch.zeros_like(v) for k, v in official_t.items()}
    torch.save({'model': official_t, 'state_dict_ema': ema, 'epoch': 300}, src)
    _converter().main([str(src), str(dst)])
    printed = capsys.readouterr().out
    assert 'MLLA tiny' in printed and '[model]' in printed and 'newly initialised' in printed
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['arch'] == 'tiny'
    state = saved['state_dict']
    assert all(k.startswith('backbone.') for k in state)
    assert not any('rotations' in k or 'act_proj' in k or k.startswith('backbone.head')
                   for k in state)
    model = _uninitialised_tiny()
    report = model.load_pretrained(str(dst), logger=None)  # strict, from the file
    assert report.ok and not report.dropped and len(report.initialised) == 8
    torch.testing.assert_close(model.layers[3].blocks[3].mlp.fc2.weight,  # 'model', not EMA
                               official_t['layers.3.blocks.3.mlp.fc2.weight'])
    with pytest.raises(KeyError, match="no 'model_ema' entry"):
        _converter().convert(str(src), key='model_ema')


# --- the attention branch's memory-saving Functions -----------------------------------------
def _block_pair(c=16, heads=2, fused_mlp=False):
    torch.manual_seed(0)
    fused = MLLABlock(c, heads, fused_attn=True, fused_mlp=fused_mlp).train()
    plain = MLLABlock(c, heads, fused_attn=False, fused_mlp=fused_mlp).train()
    with torch.no_grad():  # non-trivial norms and biases
        for p in fused.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def _values_and_grads(block, x, ctx):
    x = x.detach().requires_grad_()
    y = block(x, ctx)
    y.float().mul(torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, x.grad, {k: p.grad for k, p in block.named_parameters()}


def test_fused_attention_branch_same_values_and_gradients():
    """``fused_attn`` (norm1+in_proj, dwconv+SiLU, RoPE attention, gated out_proj as Functions
    with hand-written backwards) computes what the recorded ops do: float64, every gradient."""
    fused, plain = (m.double() for m in _block_pair())
    x = torch.randn(2, 7, 5, 16, dtype=torch.float64)
    ctx = stage_context(7, 5, 16, 2, dtype=torch.float64)
    (yf, gxf, gf), (yp, gxp, gp) = (_values_and_grads(m, x, ctx) for m in (fused, plain))
    torch.testing.assert_close(yf, yp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gxf, gxp, rtol=1e-10, atol=1e-12)
    assert gf.keys() == gp.keys()
    for k in gf:
        torch.testing.assert_close(gf[k], gp[k], rtol=1e-10, atol=1e-12, msg=k)


def test_fused_attention_branch_under_autocast():
    """bf16 autocast: the Functions return bf16 like the recorded ops, float32 parameter
    gradients, and agree with them to bf16 rounding."""
    fused, plain = _block_pair()
    x = torch.randn(2, 9, 6, 16)
    ctx = stage_context(9, 6, 16, 2, dtype=torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        (yf, gxf, gf), (yp, gxp, gp) = (_values_and_grads(m, x, ctx) for m in (fused, plain))
    assert yf.dtype == yp.dtype
    assert gxf.dtype == torch.float32
    for a, b, name in [(yf, yp, 'y'), (gxf, gxp, 'x')] + [(gf[k], gp[k], k) for k in gf]:
        assert a.dtype == b.dtype, name
        err = ((a.float() - b.float()).norm() / b.float().norm()).item()
        assert err < 3e-2, (name, err)


def test_fused_attention_branch_keeps_less():
    """What a training forward keeps per block, in token maps (bf16, growing with the batch):
    the recorded ops keep 28 (and small row statistics), the fused attention branch and MLP 15:
    block input, norm input, in_proj output (2), SiLU output, q/k (2), attention output, CPE2
    input, the MLP's input and hidden (5)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'tools'))
    from saved_activations import saved_bytes  # tools/saved_activations.py
    (fused, plain), c = _block_pair(c=32, fused_mlp=True), 32
    plain.fused_mlp = False
    ctx = stage_context(8, 8, c, 2, dtype=torch.bfloat16)

    class Wrap(torch.nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return self.block(x, ctx)

    def maps(block):
        one, two = (saved_bytes(Wrap(block), torch.randn(b, 8, 8, c, dtype=torch.bfloat16,
                                                         requires_grad=True), torch.bfloat16)[0]
                    for b in (2, 4))
        return (two - one) / (2 * 8 * 8 * c * 2)

    plain_maps, fused_maps = maps(plain), maps(fused)
    # (up to a map's fraction: row statistics, kv, normalisers)
    assert plain_maps >= 28, plain_maps
    assert fused_maps <= 16, fused_maps
