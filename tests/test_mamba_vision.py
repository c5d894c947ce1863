"""MambaVision backbone: archs, shapes at any input size, dense-prediction knobs, strict loading.

Kept fast on CPU: every arch is built on the meta device (structure and parameter counts);
forward passes use T/T2 once each at small odd sizes and a tiny arch dict for the extreme aspect
ratios. (With the official windows, T costs about as much at 3x5 as at 224x224 -- stage 3/4 maps
are zero-padded to whole 14x14 / 7x7 windows -- and 4000x64 takes several CPU seconds; the tiny
arch runs the same padding code.) Same-weights equivalence with the
official code: tests/test_mamba_vision_official.py.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from torch import nn

import mmvision_ssm.models.backbones.mamba_vision as mv
from mmvision_ssm.checkpoint import CheckpointMismatchError
from mmvision_ssm.models.backbones.mamba_vision import (
    Attention, MambaVision, MambaVisionMixer, window_partition, window_reverse)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FIXTURE = osp.join(ROOT, 'tests', 'data', 'mamba_vision_t_official_keys.json')
# a tiny arch exercising everything: odd hybrid depth (2 Mamba + 1 attention), layer scale
TINY = dict(dim=16, in_dim=8, depths=(1, 1, 3, 2), num_heads=(1, 2, 2, 4),
            window_size=(8, 8, 4, 3), drop_path_rate=0., layer_scale=0.5)
# parameter counts of the official classification models (head and final BatchNorm included),
# counted from NVlabs/MambaVision's mamba_vision_* entry points
OFFICIAL_PARAMS = {'T': 31794248, 'T2': 35104008, 'S': 50140584, 'B': 97685288,
                   'L': 227961048, 'L2': 241554824, 'L3': 739570472}


def expected_sizes(h, w):
    sizes = []
    h, w = -(-h // 4), -(-w // 4)  # stem: two stride-2 convs, ceil each
    for _ in range(4):
        sizes.append((h, w))
        h, w = -(-h // 2), -(-w // 2)
    return sizes


# --- archs --------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', sorted(OFFICIAL_PARAMS))
def test_arch_matches_official_parameter_count(arch):
    with torch.device('meta'):
        model = MambaVision(arch)
    dims = [model.arch_settings['dim'] * 2 ** i for i in range(4)]
    ours = sum(p.numel() for p in model.parameters())
    head_and_norm = dims[3] * 1000 + 1000 + 2 * dims[3]  # official head + final BN, not ours
    out_norms = sum(2 * d for d in dims)                    # ours, not the official
    assert ours - out_norms + head_and_norm == OFFICIAL_PARAMS[arch]
    assert model.out_channels == dims


def test_arch_aliases_and_errors():
    assert mv.ARCH_SETTINGS['tiny'] == mv.ARCH_SETTINGS['T']
    assert mv.ARCH_SETTINGS['large2'] == mv.ARCH_SETTINGS['L2']
    with pytest.raises(ValueError, match=r"unknown arch='X'.*'L2'.*'T2'"):
        MambaVision('X')
    with pytest.raises(ValueError, match='missing'):
        MambaVision(dict(dim=16, depths=(1, 1, 2, 2), num_heads=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='unknown'):
        MambaVision(dict(TINY, heads=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='window_size'):
        MambaVision(TINY, window_size=(8, 8, 7))
    with pytest.raises(ValueError, match='out_indices'):
        MambaVision(TINY, out_indices=(4,))


@pytest.mark.parametrize('arch,mamba,attn', [('T', (4, 2), (4, 2)), ('S', (4, 3), (3, 2)),
                                             ('T2', (6, 2), (5, 2)), ('L2', (6, 3), (6, 2))])
def test_hybrid_stages_mamba_first_half(arch, mamba, attn):
    """The official rule: Mamba mixers in the first ceil(depth/2) blocks, attention after."""
    with torch.device('meta'):
        model = MambaVision(arch)
    for i, (n_mamba, n_attn) in zip((2, 3), zip(mamba, attn)):
        kinds = [type(b.mixer) for b in model.stages[i].blocks]
        assert kinds == [MambaVisionMixer] * n_mamba + [Attention] * n_attn


def test_settings_defaults_and_overrides():
    with torch.device('meta'):
        t = MambaVision('T')
        b = MambaVision('B', window_size=(8, 8, 112, 56), drop_path_rate=0.5)
        w = MambaVision('T', window_size=32, drop_path_rate=0.)
    assert [s.window_size for s in t.stages] == [8, 8, 14, 7]
    assert t.stages[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert t.stages[2].blocks[0].gamma_1 is None
    assert [s.window_size for s in b.stages][2:] == [112, 56]
    assert b.stages[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.5)
    assert b.stages[2].blocks[0].gamma_1.shape == (512,)
    assert [s.window_size for s in w.stages] == [32] * 4
    assert all(isinstance(m.drop_path, nn.Identity) for s in w.stages for m in s.blocks)


# --- windows ------------------------------------------------------------------------------------
def test_window_partition_order_and_inverse():
    x = torch.randn(2, 5, 6, 9)
    win = window_partition(x, 3)
    assert win.shape == (2 * 2 * 3, 9, 5)
    # window (b=1, row 1, col 2), token t = (r, c) in row-major order
    n = 1 * 6 + 1 * 3 + 2
    for t in range(9):
        r, c = divmod(t, 3)
        assert torch.equal(win[n, t], x[1, :, 3 + r, 6 + c])
    assert torch.equal(window_reverse(win, 3, 6, 9), x)


# --- forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,size', [('T', (3, 5)), ('T2', (37, 61)),
                                       (TINY, (4000, 64)), (TINY, (64, 4000)), (TINY, (1, 1))])
def test_output_shapes_any_size(arch, size):
    model = MambaVision(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    dims = [model.arch_settings['dim'] * 2 ** i for i in range(4)]
    assert [tuple(o.shape) for o in outs] == [(1, c, *s) for c, s in
                                              zip(dims, expected_sizes(*size))]
    assert all(torch.isfinite(o).all() for o in outs)
    # mmcv's RoIAlign reads raw NCHW memory: channels-last maps would scramble RoI features
    assert all(o.is_contiguous() for o in outs)


def test_batch_items_independent_and_channels_last():
    torch.manual_seed(0)
    model = MambaVision(TINY).eval()
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        both = model(x)
        single = model(x[1:])
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    for a, b, c in zip(both, single, cl):
        torch.testing.assert_close(a[1:], b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-5)


def test_out_indices():
    model = MambaVision(TINY, out_indices=(1, 3)).eval()
    assert model.out_channels == [32, 128]
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm3')
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 128]
    early = MambaVision(TINY, out_indices=(0,)).eval()
    called = []
    early.stages[1].register_forward_hook(lambda *a: called.append(1))
    with torch.no_grad():
        assert len(early(torch.randn(1, 3, 32, 32))) == 1
    assert not called  # later stages are skipped


def test_frozen_stages_and_norm_eval():
    model = MambaVision(TINY, frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1], model.norm0, model.norm1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in (model.stages[2], model.norm2) for p in m.parameters())
    assert not model.patch_embed.bn1.training and not model.stages[1].blocks[0].norm1.training
    assert model.stages[2].training
    stem_only = MambaVision(TINY, frozen_stages=0).train()
    assert not any(p.requires_grad for p in stem_only.patch_embed.parameters())
    assert all(p.requires_grad for p in stem_only.stages[0].parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        MambaVision(TINY, frozen_stages=5)

    ne = MambaVision(TINY, norm_eval=True).train()
    bns = [m for m in ne.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert ne.training and ne.stages[2].blocks[0].training


def test_with_cp_same_outputs_and_grads(monkeypatch):
    torch.manual_seed(0)
    plain = MambaVision(TINY).train()
    cp = MambaVision(TINY, with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    calls = []
    real = mv.checkpoint
    monkeypatch.setattr(mv, 'checkpoint', lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(2, 3, 40, 24)
    outs = [sum(o.square().mean() for o in m(x)) for m in (plain, cp)]
    assert len(calls) == sum(TINY['depths'])
    torch.testing.assert_close(outs[0], outs[1])
    for o in outs:
        o.backward()
    for (name, p), q in zip(plain.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


# --- official checkpoints -----------------------------------------------------------------------
def official_t_state_dict(seed=0):
    """A state dict with the exact key layout of the official MambaVision-T (random values)."""
    with open(FIXTURE) as f:
        shapes = json.load(f)
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) if s else torch.tensor(7)) for k, s in shapes.items()}


@pytest.fixture(scope='module')
def model_t():
    # loading tests need real storage, not the (slow) initialisation: every value is overwritten
    with torch.device('meta'):
        model = MambaVision('T')
    return model.to_empty(device='cpu')


def test_official_t_loads_strictly(model_t):
    sd = official_t_state_dict()
    report = model_t.load_pretrained({'state_dict': sd}, logger=None)
    assert sorted(report.dropped) == sorted(k for k in sd if k.startswith(('head.', 'norm.')))
    assert len(report.dropped) == 7
    assert sorted(report.initialised) == [f'norm{i}.{p}' for i in range(4)
                                          for p in ('bias', 'weight')]
    assert len(report.loaded) == len(sd) - 7 and report.ok
    ours = model_t.state_dict()
    assert torch.equal(ours['patch_embed.conv1.weight'], sd['patch_embed.conv_down.0.weight'])
    assert torch.equal(ours['patch_embed.bn2.running_var'],
                       sd['patch_embed.conv_down.4.running_var'])
    assert torch.equal(ours['stages.1.downsample.weight'],
                       sd['levels.1.downsample.reduction.0.weight'])
    assert torch.equal(ours['stages.2.blocks.3.mixer.A_log'], sd['levels.2.blocks.3.mixer.A_log'])


@pytest.mark.parametrize('wrap', [
    lambda sd: {'model': sd},                                              # 'model' nesting
    lambda sd: {'state_dict': {f'module.{k}': v for k, v in sd.items()}},  # DDP
    lambda sd: {f'model.{k}': v for k, v in sd.items()},                   # Hugging Face
    # timm-style training file: the official loaders read 'state_dict', not the EMA
    lambda sd: {'state_dict_ema': {k: v + 1 for k, v in sd.items()}, 'state_dict': sd},
])
def test_official_t_wrappers(model_t, wrap):
    sd = official_t_state_dict(seed=1)
    report = model_t.load_pretrained(wrap(sd), logger=None)
    assert report.ok and len(report.loaded) == len(sd) - 7
    assert torch.equal(model_t.state_dict()['stages.3.blocks.3.mixer.qkv.weight'],
                       sd['levels.3.blocks.3.mixer.qkv.weight'])


@pytest.mark.parametrize('edit,kind', [
    (lambda sd: sd.pop('levels.2.blocks.0.mixer.A_log'), 'MISSING'),
    (lambda sd: sd.__setitem__('levels.2.blocks.0.mixer.bogus', torch.zeros(1)), 'UNEXPECTED'),
    (lambda sd: sd.__setitem__('levels.3.blocks.0.mixer.D', torch.zeros(3)), 'SHAPE MISMATCH'),
])
def test_mismatched_checkpoint_raises(model_t, edit, kind):
    sd = official_t_state_dict()
    edit(sd)
    with pytest.raises(CheckpointMismatchError, match=kind):
        model_t.load_pretrained(sd, logger=None)
    report = model_t.load_pretrained(sd, strict=False, logger=None)
    assert not report.ok


def test_convert_tool_roundtrip(tmp_path, model_t):
    """tools/convert_mamba_vision.py writes `backbone.`-prefixed keys that load strictly, from
    a path, through init_cfg (what mmdet/mmseg configs use)."""
    spec = importlib.util.spec_from_file_location(
        'convert_mamba_vision', osp.join(ROOT, 'tools', 'convert_mamba_vision.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sd = official_t_state_dict(seed=2)
    src, dst = tmp_path / 'official.pth.tar', tmp_path / 'converted.pth'
    torch.save({'state_dict': sd, 'epoch': 300}, src)
    tool.main([str(src), str(dst)])
    saved = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert all(k.startswith('backbone.') for k in saved)
    assert len(saved) == len(sd) - 7
    model_t.init_cfg = dict(type='Pretrained', checkpoint=str(dst))
    model_t.init_weights()
    assert model_t.load_report.ok and not model_t.load_report.dropped
    assert torch.equal(model_t.stages[2].blocks[7].mixer.proj.bias,
                       sd['levels.2.blocks.7.mixer.proj.bias'])


def test_convert_tool_whole_detector(tmp_path):
    """An official fine-tuned detector (MM_mamba_vision backbone with `outnorm{i}`, plus neck and
    heads) converts to our backbone keys; the rest and the meta are kept unchanged."""
    spec = importlib.util.spec_from_file_location(
        'convert_mamba_vision', osp.join(ROOT, 'tools', 'convert_mamba_vision.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sd = {f'backbone.{k}': v for k, v in official_t_state_dict(seed=3).items()
          if not k.startswith(('head.', 'norm.'))}
    sd.update({f'backbone.outnorm{i}.{p}': torch.randn(80 * 2 ** i) for i in range(4)
               for p in ('weight', 'bias')})
    sd['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 80, 1, 1)
    src, dst = tmp_path / 'cascade.pth', tmp_path / 'converted.pth'
    torch.save({'state_dict': sd, 'meta': {'dataset_meta': {'classes': ('person',)}}}, src)
    tool.main([str(src), str(dst)])
    out = torch.load(dst, map_location='cpu', weights_only=True)
    assert out['meta']['dataset_meta'] == {'classes': ('person',)}
    assert out['meta']['arch'] == 'T'
    saved = out['state_dict']
    assert len(saved) == len(sd)
    assert torch.equal(saved['neck.lateral_convs.0.conv.weight'],
                       sd['neck.lateral_convs.0.conv.weight'])
    assert torch.equal(saved['backbone.norm2.bias'], sd['backbone.outnorm2.bias'])
    assert torch.equal(saved['backbone.stages.2.downsample.weight'],
                       sd['backbone.levels.2.downsample.reduction.0.weight'])
