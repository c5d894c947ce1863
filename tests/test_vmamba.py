"""VMamba backbone: archs, shapes at odd sizes, freezing, checkpointing, official-weight loading.

Equivalence with the official code is in tests/test_vmamba_official.py (needs the snapshot);
here the official state-dict layouts come from tests/data/vmamba_tiny_official_keys.json.
"""
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from mmvision_ssm.checkpoint import CheckpointMismatchError
from mmvision_ssm.compat import safe_torch_load
from mmvision_ssm.models.backbones.vmamba import ARCH_SETTINGS, VMamba, infer_arch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / 'tests' / 'data' / 'vmamba_tiny_official_keys.json').read_text())
# a small arch of each family for the slower checks
SMALL_V2 = dict(embed_dims=16, depths=(1, 1, 2, 1))
SMALL_V0 = dict(embed_dims=16, depths=(1, 1, 2, 1), forward_type='v0')


def _empty(arch, **kwargs):
    """A model with uninitialised weights (for loading tests: skips the init cost)."""
    with torch.device('meta'):
        model = VMamba(arch, **kwargs)
    return model.to_empty(device='cpu')


def _expected_hw(h, w, stage):
    s = 4 * 2 ** stage
    return math.ceil(h / s), math.ceil(w / s)


# Published parameter counts of the official ImageNet models (M, with the 1000-class head).
PUBLISHED_PARAMS = {'tiny': 30, 'small': 50, 'base': 89, 'v0_tiny': 23, 'v0_small': 44,
                    'v0_base': 76}


@pytest.mark.parametrize('arch', sorted(ARCH_SETTINGS))
def test_every_arch_builds_with_official_size(arch):
    with torch.device('meta'):  # sizes only: no memory, no init time
        model = VMamba(arch)
    s = ARCH_SETTINGS[arch]
    dims = [s['embed_dims'] * 2 ** i for i in range(4)]
    assert model.out_channels == dims
    assert [len(stage.blocks) for stage in model.stages] == list(s['depths'])
    out_norms = sum(2 * d for d in dims)
    head = dims[-1] * 1000 + 1000 + 2 * dims[-1]  # official classifier: norm + linear
    params = sum(p.numel() for p in model.parameters()) - out_norms + head
    assert round(params / 1e6) == PUBLISHED_PARAMS[arch]


@pytest.mark.parametrize('arch', ['tiny', 'v0_tiny'])
def test_tiny_forward_shapes(arch):
    model = VMamba(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 33, 47))
    assert isinstance(outs, tuple) and len(outs) == 4
    for i, out in enumerate(outs):
        assert out.shape == (1, model.out_channels[i], *_expected_hw(33, 47, i))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('arch', [SMALL_V2, SMALL_V0])
@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3), (-1,)])
@pytest.mark.parametrize('size', [(7, 9), (1, 1), (2, 3), (33, 47)])
def test_out_indices_and_odd_sizes(arch, out_indices, size):
    torch.manual_seed(0)
    model = VMamba(arch, out_indices=out_indices).eval()
    idx = [i % 4 for i in out_indices]
    assert model.out_channels == [16 * 2 ** i for i in idx]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    expected = [(2, 16 * 2 ** i, *_expected_hw(*size, i)) for i in idx]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)
    # mmcv's RoIAlign reads raw NCHW memory: channels_last maps would scramble RoI features
    assert all(o.is_contiguous() for o in outs)


def test_outputs_do_not_depend_on_later_stages():
    torch.manual_seed(0)
    full = VMamba(SMALL_V2).eval()
    part = VMamba(SMALL_V2, out_indices=(1,)).eval()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith('out_norms.')}
    part.load_state_dict({**part.state_dict(), **state})
    part.out_norms[1].load_state_dict(full.out_norms[1].state_dict())
    x = torch.randn(1, 3, 30, 26)
    with torch.no_grad():
        torch.testing.assert_close(part(x)[0], full(x)[1])


def test_inference_path_matches_autograd_path():
    # without autograd the convs' biases go into the following norms and the output norms
    # write NCHW themselves: the same maps as the autograd path, contiguous NCHW
    torch.manual_seed(0)
    model = VMamba(SMALL_V2).eval()
    for m in model.modules():  # non-zero conv biases and norm affines (init leaves them 0 / 1)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.LayerNorm)) and m.bias is not None:
            torch.nn.init.normal_(m.bias, std=0.5)
    x = torch.randn(2, 3, 45, 38)
    with torch.no_grad():
        fast = model(x)
    slow = model(x)
    assert len(fast) == len(slow) == 4
    for f, s in zip(fast, slow):
        assert f.is_contiguous() and f.shape == s.shape
        torch.testing.assert_close(f, s.detach(), rtol=1e-5, atol=1e-5)


def test_frozen_stages_and_norm_eval():
    model = VMamba(SMALL_V2, frozen_stages=2, norm_eval=True, drop_path_rate=0.3)
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1], model.out_norms[0],
              model.out_norms[1]]
    for m in frozen:
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    for m in (model.stages[2], model.stages[3], model.out_norms[2]):
        assert m.training and all(p.requires_grad for p in m.parameters())
    outs = model(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert model.stages[2].blocks[0].ssm.A_log.grad is not None
    # frozen stages stay deterministic in train mode (no drop path there)
    torch.testing.assert_close(model(torch.ones(1, 3, 32, 32))[0],
                               model(torch.ones(1, 3, 32, 32))[0])
    with pytest.raises(ValueError, match='frozen_stages'):
        VMamba(SMALL_V2, frozen_stages=5)


# activation checkpointing, and delta kept for the backward instead of rebuilt there (the
# default; on the CPU the dispatcher composes the projection and the scan; the Triton
# Function is checked against that composition in test_ops_triton_interpret.py)
@pytest.mark.parametrize('arch', [SMALL_V2, SMALL_V0])
@pytest.mark.parametrize('variant', [dict(with_cp=True), dict(recompute_delta=False)])
def test_memory_options_same_outputs_and_grads(arch, variant):
    torch.manual_seed(0)
    ref = VMamba(arch, drop_path_rate=0.2).train()
    assert ref.stages[0].blocks[0].ssm.recompute_delta  # the default
    cp = VMamba(arch, drop_path_rate=0.2, **variant).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 23, 29)
    results = []
    for model in (ref, cp):
        torch.manual_seed(1)  # same drop-path draws; checkpointing replays them in backward
        outs = model(x)
        sum((o * o).mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    (outs_ref, grads_ref), (outs_cp, grads_cp) = results
    for a, b in zip(outs_ref, outs_cp):
        torch.testing.assert_close(a, b)
    assert grads_ref.keys() == grads_cp.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_cp[name], grads_ref[name], msg=name)


def test_bfloat16_forward():
    torch.manual_seed(0)
    model = VMamba(SMALL_V2).eval()
    x = torch.randn(1, 3, 37, 41)
    with torch.no_grad():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    for r, o in zip(ref, out):
        assert o.dtype == torch.bfloat16 and o.shape == r.shape
        assert (o.float() - r).abs().max() <= 0.1 * r.abs().max()


def test_errors_are_explicit():
    with pytest.raises(ValueError, match=r"unknown arch='huge'.*'base'.*'tiny'.*'v0_tiny'"):
        VMamba('huge')
    with pytest.raises(ValueError, match='0..3'):
        VMamba(SMALL_V2, out_indices=(0, 4))
    with pytest.raises(ValueError, match='increasing'):
        VMamba(SMALL_V2, out_indices=(2, 1))
    with pytest.raises(ValueError, match="unknown keys \\['heads'\\]"):
        VMamba(dict(SMALL_V2, heads=3))
    with pytest.raises(ValueError, match='forward_type'):
        VMamba(dict(SMALL_V2, forward_type='v3'))


# --- official checkpoints ---------------------------------------------------------------------
def _official_state_dict(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in FIXTURE[layout].items()}


@pytest.mark.parametrize('layout,arch', [('tiny', 'tiny'), ('v0_tiny', 'v0_tiny'),
                                         ('v0_tiny_2024_01', 'v0_tiny')])
def test_official_layout_loads_strictly(layout, arch):
    official = _official_state_dict(layout)
    assert infer_arch(official) == arch
    model = _empty(arch)
    report = model.load_pretrained(official, logger=None)
    assert report.ok
    assert sorted(report.dropped) == ['classifier.head.bias', 'classifier.head.weight',
                                      'classifier.norm.bias', 'classifier.norm.weight']
    assert sorted(report.initialised) == sorted(f'out_norms.{i}.{p}' for i in range(4)
                                                for p in ('weight', 'bias'))
    assert len(report.loaded) == len(official) - 4 == len(model.state_dict()) - 8
    # values land where the official model uses them
    ours = model.state_dict()
    old = layout.endswith('2024_01')
    block = 'layers.2.blocks.1.' + ('self_attention.' if old else 'op.')
    torch.testing.assert_close(ours['stages.2.blocks.1.ssm.A_log'], official[block + 'A_logs'])
    torch.testing.assert_close(ours['stages.2.blocks.1.ssm.dt_proj_weight'],
                               official[block + 'dt_projs_weight'])
    torch.testing.assert_close(ours['stages.2.blocks.1.ssm.conv.weight'],
                               official[block + 'conv2d.weight'])
    stem = 'patch_embed.' + ('norm' if old else '2')
    stem_ours = 'patch_embed.' + ('norm1' if arch == 'tiny' else 'norm')
    torch.testing.assert_close(ours[stem_ours + '.weight'], official[stem + '.weight'])


def test_official_layout_mismatches_raise():
    model = _empty('tiny')
    official = _official_state_dict('tiny')
    missing = dict(official)
    del missing['layers.1.blocks.0.op.Ds']
    with pytest.raises(CheckpointMismatchError, match=r'MISSING.*stages\.1\.blocks\.0\.ssm\.D'):
        model.load_pretrained(missing, logger=None)
    extra = dict(official, **{'layers.0.blocks.0.op.x_proj_bias': torch.zeros(4, 8)})
    with pytest.raises(CheckpointMismatchError, match=r'UNEXPECTED.*x_proj_bias'):
        model.load_pretrained(extra, logger=None)
    with pytest.raises(CheckpointMismatchError, match='SHAPE MISMATCH'):
        _empty('small').load_pretrained(official, logger=None)
    report = model.load_pretrained(missing, strict=False, logger=None)
    assert report.missing == ['stages.1.blocks.0.ssm.D']


def test_linear2d_and_detector_checkpoints():
    """1x1-conv shaped linear weights (official Linear2d) and ``backbone.``-prefixed files load."""
    official = _official_state_dict('tiny')
    official['layers.0.blocks.0.op.in_proj.weight'] = official[
        'layers.0.blocks.0.op.in_proj.weight'][:, :, None, None]
    model = _empty('tiny')
    assert model.load_pretrained(official, logger=None).ok
    detector = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    detector['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    other = _empty('tiny')
    report = other.load_pretrained({'state_dict': detector, 'meta': {}}, logger=None)
    assert report.ok and not report.initialised and not report.dropped
    torch.testing.assert_close(other.state_dict()['stages.3.blocks.1.ssm.D'],
                               model.state_dict()['stages.3.blocks.1.ssm.D'])


def _fake_yacs_config():
    """An object pickled as yacs.config.CfgNode, like the ``config`` of official checkpoints."""
    mod = types.ModuleType('yacs.config')
    cfg_node = type('CfgNode', (dict,), {'__module__': 'yacs.config'})
    mod.CfgNode = cfg_node
    return mod, cfg_node({'MODEL': cfg_node({'TYPE': 'vssm'}), 'DATA': cfg_node({'IMG_SIZE': 224})})


def test_convert_tool_writes_a_strictly_loadable_file(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location('convert_vmamba',
                                                  ROOT / 'tools' / 'convert_vmamba.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    official = _official_state_dict('v0_tiny_2024_01')
    ema = {k: v + 1 for k, v in official.items()}
    yacs_mod, config = _fake_yacs_config()
    monkeypatch.setitem(sys.modules, 'yacs', types.ModuleType('yacs'))
    monkeypatch.setitem(sys.modules, 'yacs.config', yacs_mod)
    src = tmp_path / 'vssmtiny_dp01_ckpt_epoch_292.pth'
    torch.save({'model': official, 'model_ema': ema, 'config': config, 'epoch': 292}, src)
    monkeypatch.delitem(sys.modules, 'yacs.config')  # reading must not need yacs
    dst = tmp_path / 'out' / 'vmamba_v0_tiny.pth'
    tool.main([str(src), str(dst)])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['arch'] == 'v0_tiny'
    assert all(k.startswith('backbone.') for k in saved['state_dict'])
    model = _empty('v0_tiny')
    report = model.load_pretrained(str(dst), logger=None)
    assert report.ok and not report.dropped and len(report.initialised) == 8
    torch.testing.assert_close(model.state_dict()['stages.0.blocks.1.ssm.x_proj_weight'],
                               official['layers.0.blocks.1.self_attention.x_proj_weight'])
    ema_dst = tmp_path / 'ema.pth'
    tool.main([str(src), str(ema_dst), '--key', 'model_ema', '--arch', 'v0_tiny'])
    torch.testing.assert_close(
        torch.load(ema_dst, weights_only=True)['state_dict']['backbone.stages.0.blocks.1.ssm.D'],
        ema['layers.0.blocks.1.self_attention.Ds'])
    # the official file itself works as init_cfg too, with the 'model' (not EMA) weights
    direct = _empty('v0_tiny', init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    direct.init_weights()
    assert safe_torch_load(src)['config']['MODEL']['TYPE'] == 'vssm'  # yacs read as a dict
    torch.testing.assert_close(direct.state_dict()['stages.0.blocks.1.ssm.x_proj_weight'],
                               official['layers.0.blocks.1.self_attention.x_proj_weight'])
