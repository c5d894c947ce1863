"""Same weights, same outputs: our MambaVision against the official NVlabs code (fp32, CPU).

Needs the official files, found through the environment variable
``MMVISION_SSM_OFFICIAL_MAMBAVISION`` = a directory holding (from github.com/NVlabs/MambaVision)::

    mamba_vision.py     <- mambavision/models/mamba_vision.py      (classification model)
    registry.py         <- mambavision/models/registry.py          (imported by the above)
    mm_mamba_vision.py  <- object_detection/tools/mamba_vision.py  (MM_mamba_vision, the
                           detection/segmentation backbone with per-output norms)

e.g. ``git --git-dir=<MambaVision>.git show HEAD:mambavision/models/mamba_vision.py >
$DIR/mamba_vision.py`` (and likewise for the other two). Without it every test here is skipped.

The official files import packages this environment need not have; while (and only while) they are
imported, ``sys.modules`` gets small stand-ins: ``mamba_ssm...selective_scan_fn`` routed to our
float reference scan ``mmvision_ssm.ops.selective_scan(..., backend='ref')``, the few ``einops``
patterns the file uses, and empty mmengine/mmdet/mmseg/mmcv registries. Everything else (timm
layers, the model code) is the official code as released.

The weights are the official model's own initialisation plus noise on every norm, bias, layer
scale and SSM parameter (so no term is trivially 1 or 0), copied through
``MambaVision.convert_checkpoint`` and loaded strictly.
"""
import importlib.util
import json
import os
import os.path as osp
import sys
import types
from unittest import mock

import pytest
import torch

from mmvision_ssm.models.backbones.mamba_vision import MambaVision

ENV = 'MMVISION_SSM_OFFICIAL_MAMBAVISION'
OFFICIAL_DIR = os.environ.get(ENV)
FIXTURE = osp.join(osp.dirname(__file__), 'data', 'mamba_vision_t_official_keys.json')
TOL = 1e-5

pytestmark = pytest.mark.skipif(
    not (OFFICIAL_DIR and osp.isfile(osp.join(OFFICIAL_DIR, 'mamba_vision.py'))),
    reason=f'official MambaVision snapshot absent: set {ENV} to a directory with the official '
           'mamba_vision.py, registry.py and mm_mamba_vision.py (see this module docstring)')


# --- stand-ins for what the official files import --------------------------------------------
def _selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    from mmvision_ssm.ops import selective_scan
    return selective_scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                          delta_softplus=delta_softplus,
                          return_last_state=bool(return_last_state), backend='ref')


def _rearrange(x, pattern, **axes):
    # exactly the patterns of the official mamba_vision.py
    if pattern in ('b l d -> b d l', 'b d l -> b l d'):
        return x.transpose(1, 2)
    if pattern == 'b d l -> (b l) d':
        return x.transpose(1, 2).reshape(-1, x.shape[1])
    if pattern in ('(b l) d -> b d l', '(b l) dstate -> b dstate l'):
        return x.reshape(-1, axes['l'], x.shape[-1]).transpose(1, 2)
    raise NotImplementedError(f'einops stand-in: pattern {pattern!r}')


def _repeat(x, pattern, **axes):
    if pattern == 'n -> d n':
        return x.unsqueeze(0).expand(axes['d'], -1)
    raise NotImplementedError(f'einops stand-in: pattern {pattern!r}')


class _Registry:
    def register_module(self, *args, **kwargs):
        return lambda cls: cls


def _stand_ins():
    mods = {}

    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
        return m

    mod('mamba_ssm')
    mod('mamba_ssm.ops')
    mod('mamba_ssm.ops.selective_scan_interface', selective_scan_fn=_selective_scan_fn)
    mod('einops', rearrange=_rearrange, repeat=_repeat)
    mod('mmengine')
    mod('mmengine.model', BaseModule=torch.nn.Module)
    mod('mmengine.runner', load_checkpoint=None)
    mod('mmcv')
    for name in ('mmdet', 'mmseg'):
        mod(name)
        mod(f'{name}.registry', MODELS=_Registry())
    return mods


_OFFICIAL = {}


def official(name):
    """Import an official file under a private package name, with the stand-ins in place."""
    if name not in _OFFICIAL:
        pkg = types.ModuleType('_official_mambavision')
        pkg.__path__ = [OFFICIAL_DIR]
        with mock.patch.dict(sys.modules, {**_stand_ins(), '_official_mambavision': pkg}), \
                mock.patch('timm.models.registry.register_model', lambda fn: fn):
            spec = importlib.util.spec_from_file_location(
                f'_official_mambavision.{name}', osp.join(OFFICIAL_DIR, f'{name}.py'))
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        _OFFICIAL[name] = module
    return _OFFICIAL[name]


# --- helpers -----------------------------------------------------------------------------------
ARCH_KW = {  # the official entry points' settings (mamba_vision_T/S/B)
    'T': dict(dim=80, in_dim=32, depths=[1, 3, 8, 4], num_heads=[2, 4, 8, 16], mlp_ratio=4),
    'S': dict(dim=96, in_dim=64, depths=[3, 3, 7, 5], num_heads=[2, 4, 8, 16], mlp_ratio=4),
    'B': dict(dim=128, in_dim=64, depths=[3, 3, 10, 5], num_heads=[2, 4, 8, 16], mlp_ratio=4,
              layer_scale=1e-5, layer_scale_conv=None),
}


def perturb_(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith('running_var'):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.dim() == 1 or name.endswith('A_log'):
                t.add_(0.1 * noise)
    return model


def rel_err(ours, ref):
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def capture_official_levels(model):
    """Each official level's output before its downsampling (what the dense backbone returns)."""
    feats = {}
    for i, level in enumerate(model.levels):
        if level.downsample is not None:
            level.downsample.register_forward_pre_hook(
                lambda m, args, i=i: feats.__setitem__(i, args[0]))
        else:
            level.register_forward_hook(lambda m, args, out, i=i: feats.__setitem__(i, out))
    return feats


def capture_our_stages(model):
    feats = {}
    for i in model.out_indices:
        getattr(model, f'norm{i}').register_forward_pre_hook(
            lambda m, args, i=i: feats.__setitem__(i, args[0]))
    return feats


# --- tests -------------------------------------------------------------------------------------
def test_fixture_matches_official_t():
    """tests/data/mamba_vision_t_official_keys.json (used in CI) is the official layout."""
    off = official('mamba_vision').MambaVision(window_size=[8, 8, 14, 7], **ARCH_KW['T'])
    with open(FIXTURE) as f:
        fixture = json.load(f)
    assert fixture == {k: list(v.shape) for k, v in off.state_dict().items()}


@pytest.mark.parametrize('size,window', [
    ((224, 224), (8, 8, 14, 7)), ((97, 131), (8, 8, 14, 7)), ((5, 3), (8, 8, 14, 7)),
    ((45, 29), (8, 8, 64, 32)),  # segmentation windows: 3x2 / 2x1 maps padded to 64x64 / 32x32
])
def test_detection_backbone_t(size, window):
    """Official MM_mamba_vision (T, per-output LayerNorm2d) vs ours: all four outputs."""
    torch.manual_seed(0)
    off = official('mm_mamba_vision').MM_mamba_vision(
        window_size=list(window), out_indices=(0, 1, 2, 3), norm_layer='ln2d', **ARCH_KW['T'])
    perturb_(off).eval()
    ours = MambaVision('T', window_size=window).eval()
    report = ours.load_pretrained(off.state_dict(), logger=None)
    assert report.ok and not report.dropped and not report.initialised
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref, out = off(x), ours(x)
    errs = [rel_err(o, r) for o, r in zip(out, ref)]
    print(f'MambaVision-T detection backbone {size} windows {window}: max rel err per output '
          f'{errs}')
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert max(errs) <= TOL


@pytest.mark.parametrize('arch,size,window', [
    ('T', (224, 224), (8, 8, 14, 7)),
    ('S', (75, 61), (8, 8, 5, 3)),  # odd depths (7, 5); small windows: several padded windows
    ('B', (64, 96), (8, 8, 14, 7)),  # layer scale
])
def test_classification_checkpoint(arch, size, window):
    """An ImageNet-layout state dict (head and final norm included) loads with the head dropped
    and the output norms initialised; the stage features match the official ones."""
    torch.manual_seed(0)
    off = official('mamba_vision').MambaVision(window_size=list(window), **ARCH_KW[arch])
    perturb_(off).eval()
    ours = MambaVision(arch, window_size=window).eval()
    report = ours.load_pretrained({'state_dict': off.state_dict()}, logger=None)
    assert sorted(report.dropped) == sorted(k for k in off.state_dict()
                                            if k.startswith(('head.', 'norm.')))
    assert sorted(report.initialised) == [f'norm{i}.{p}' for i in range(4)
                                          for p in ('bias', 'weight')]
    feats_off, feats_ours = capture_official_levels(off), capture_our_stages(ours)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        off(x), ours(x)
    errs = [rel_err(feats_ours[i], feats_off[i]) for i in range(4)]
    print(f'MambaVision-{arch} {size} windows {window}: max rel err per stage {errs}')
    assert [feats_ours[i].shape for i in range(4)] == [feats_off[i].shape for i in range(4)]
    assert max(errs) <= TOL
