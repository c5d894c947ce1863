"""MViTv2 backbone: shapes, equivalence with timm / official code, strict loading.

Official snapshots (optional; the tests skip without them):
- ``MMVISION_SSM_OFFICIAL_MVIT``: a directory holding the ``mvit`` package of
  facebookresearch/mvit (``mvit/models/{attention,common,mvit_model}.py``; ``mvit/models/build.py``
  and ``mvit/utils/{misc,logging}.py`` may be one-line stubs, they only register/log).
- ``MMVISION_SSM_OFFICIAL_DETECTRON2``: a directory holding a package ``d2backbone`` with
  detectron2's ``detectron2/modeling/backbone/{mvit,utils,vit}.py`` unmodified and a stub
  ``backbone.py`` (``Backbone``: ``nn.Module`` with detectron2's ``output_shape``); for ``vit.py``
  also stubs of ``fvcore.nn.weight_init``, ``detectron2.layers`` (Conv2d + norm, channel
  LayerNorm) and ``detectron2.modeling.backbone.fpn`` (``LastLevelMaxPool``).
The official MViTv2-T layout (key -> shape, built from facebookresearch/mvit with
``configs/MVITv2_T.yaml``) is recorded in ``tests/data/mvitv2_t_official_keys.json``.
"""
import json
import os
import re
import sys
import types
from functools import partial

import pytest
import torch
from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg, checkpoint_filter_fn
from torch import nn

from mmvision_ssm.checkpoint import CheckpointMismatchError
from mmvision_ssm.models.backbones.mvit import MViTv2, PoolingAttention

DEPTHS = (1, 2, 2, 1)
TINY = dict(depths=DEPTHS, embed_dim=16, num_heads=1)
DATA = os.path.join(os.path.dirname(__file__), 'data')


def _rel_err(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def _timm(img_size):
    return MultiScaleVit(MultiScaleVitCfg(**TINY), img_size=img_size, num_classes=0).eval()


def _ours(**kwargs):
    kwargs.setdefault('pretrain_img_size', 64)
    return MViTv2(arch=TINY, drop_path_rate=0., **kwargs).eval()


def _without_norms(model):
    model.norm = nn.Identity()
    model.out_norms = nn.ModuleDict({k: nn.Identity() for k in model.out_norms})
    return model


@pytest.mark.parametrize('window_size', [0, 8])
def test_shapes_any_size(window_size):
    torch.manual_seed(0)
    model = _ours(window_size=window_size)
    assert model.out_channels == [16, 32, 64, 128]
    for size in [(5, 7), (33, 50), (100, 64)]:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *size))
        expect = [(1, 16 * 2 ** i, -(-size[0] // (4 * 2 ** i)), -(-size[1] // (4 * 2 ** i)))
                  for i in range(4)]
        assert [tuple(o.shape) for o in outs] == expect
        # mmcv's RoIAlign reads raw NCHW memory: channels-last maps would scramble RoI features
        assert all(o.is_contiguous() for o in outs)


def test_equivalence_with_timm():
    torch.manual_seed(0)
    ref = _timm(64)
    model = _ours()
    report = model.load_pretrained(ref.state_dict(), logger=None)
    assert report.ok and sorted(report.initialised) == sorted(
        f'out_norms.{i}.{p}' for i in range(3) for p in ('weight', 'bias'))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
        trunk = _without_norms(model)(x)  # the shared trunk, fp32
    for a, b in zip(expected, trunk):
        assert _rel_err(a, b) <= 1e-6


def test_relative_positions_adapt_to_input_size():
    """At 96x96 our model (tables stored for 64) equals timm built for 96 with the tables
    resized by timm's own checkpoint filter (the same linear interpolation)."""
    torch.manual_seed(0)
    src = _timm(64).state_dict()
    model = _ours()
    model.load_pretrained(src, logger=None)
    ref = _timm(96)
    ref.load_state_dict(checkpoint_filter_fn({k: v.clone() for k, v in src.items()}, ref))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
        outs = _without_norms(model)(x)
    for a, b in zip(expected, outs):
        assert _rel_err(a, b) <= 1e-6


@pytest.mark.parametrize('stride_q,stride_kv', [(1, 4), (2, 2), (1, 1)])
def test_window_attention_equals_global_when_window_covers_map(stride_q, stride_kv):
    torch.manual_seed(0)
    glob = PoolingAttention(8, 16, 2, rel_pos_len=31, stride_q=stride_q, stride_kv=stride_kv)
    win = PoolingAttention(8, 16, 2, rel_pos_len=31, stride_q=stride_q, stride_kv=stride_kv,
                           window_size=16)
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(win(x), glob(x), rtol=0, atol=1e-6)
    smaller = PoolingAttention(8, 16, 2, rel_pos_len=31, stride_q=stride_q, stride_kv=stride_kv,
                               window_size=8)
    smaller.load_state_dict(glob.state_dict())
    with torch.no_grad():
        assert (smaller(x) - glob(x)).abs().max() > 1e-3


def test_strict_load_official_mvitv2_t_layout():
    with open(os.path.join(DATA, 'mvitv2_t_official_keys.json')) as f:
        layout = json.load(f)
    state = {k: torch.full(v, 0.5) for k, v in layout.items()}
    model = MViTv2('tiny')
    incomplete = {k: v for k, v in state.items() if k != 'blocks.3.attn.pool_k.weight'}
    with pytest.raises(CheckpointMismatchError, match=r'stages\.2\.blocks\.0\.attn\.pool_k'):
        model.load_pretrained({'model_state': incomplete}, logger=None)
    report = model.load_pretrained({'model_state': state, 'epoch': 300}, logger=None)
    assert report.ok and len(report.loaded) == len(layout) - 2
    assert sorted(report.dropped) == ['head.fc.bias', 'head.fc.weight']  # head.projection
    assert model.stages[1].blocks[0].shortcut_proj_attn.weight.shape == (192, 96)
    assert bool((model.stages[2].blocks[4].attn.rel_pos_h == 0.5).all())


def test_frozen_stages_out_indices_and_errors():
    model = _ours(frozen_stages=2, out_indices=(1, 3)).train()
    frozen = {n.split('.')[0] + '.' + n.split('.')[1] for n, p in model.named_parameters()
              if not p.requires_grad}
    assert frozen == {'patch_embed.proj', 'stages.0', 'stages.1', 'out_norms.1'}  # stage 1's norm
    assert not model.stages[1].training and model.stages[2].training
    assert model.out_channels == [32, 128]
    outs = model(torch.randn(1, 3, 40, 40))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 5, 5), (1, 128, 2, 2)]
    with pytest.raises(ValueError, match="'base', 'small', 'tiny'"):
        MViTv2('huge')
    with pytest.raises(ValueError, match='0..3'):
        _ours(out_indices=(4,))
    with pytest.raises(ValueError, match='multiple of its q/kv pooling strides'):
        _ours(window_size=10)


def _import_from(env, module):
    root = os.environ.get(env)
    if not root or not os.path.isdir(root):
        pytest.skip(f'official snapshot not available: set {env}')
    if root not in sys.path:
        sys.path.insert(0, root)
    return __import__(module, fromlist=['*'])


def _official_cfg(depths, embed_dim, crop):
    ns = types.SimpleNamespace
    depth, bounds = sum(depths), [sum(depths[:i]) for i in range(1, 4)]
    mul = [[b, 2.0] for b in bounds]
    return ns(DATA=ns(TRAIN_CROP_SIZE=crop, TEST_CROP_SIZE=crop),
              MODEL=ns(NUM_CLASSES=10, DROPOUT_RATE=0.0, HEAD_ACT='softmax', ACT_CHECKPOINT=False),
              MVIT=ns(MODE='conv', POOL_FIRST=False, CLS_EMBED_ON=False, PATCH_KERNEL=[7, 7],
                      PATCH_STRIDE=[4, 4], PATCH_PADDING=[3, 3], EMBED_DIM=embed_dim, NUM_HEADS=1,
                      MLP_RATIO=4.0, QKV_BIAS=True, DROPPATH_RATE=0.0, DEPTH=depth, DIM_MUL=mul,
                      HEAD_MUL=mul, POOL_KV_STRIDE=None, POOL_KV_STRIDE_ADAPTIVE=[4, 4],
                      POOL_Q_STRIDE=[[i, 2, 2] if i in bounds else [i, 1, 1] for i in range(depth)],
                      POOL_KVQ_KERNEL=[3, 3], ZERO_DECAY_POS_CLS=False, USE_ABS_POS=False,
                      REL_POS_SPATIAL=True, REL_POS_ZERO_INIT=False, RESIDUAL_POOLING=True,
                      DIM_MUL_IN_ATT=True))


def test_equivalence_with_official_mvit():
    official = _import_from('MMVISION_SSM_OFFICIAL_MVIT', 'mvit.models.mvit_model')
    torch.manual_seed(0)
    ref = official.MViT(_official_cfg(DEPTHS, 16, 64)).eval()
    model = _ours()
    assert model.load_pretrained({'model_state': ref.state_dict()}, logger=None).ok
    x = torch.randn(2, 3, 64, 64)
    last_blocks = [sum(DEPTHS[:i + 1]) - 1 for i in range(4)]
    with torch.no_grad():
        t, bchw = ref.patch_embed(x)
        hw, expected = list(bchw[-2:]), []
        for i, blk in enumerate(ref.blocks):
            t, hw = blk(t, hw)
            if i in last_blocks:
                expected.append(t.view(2, hw[0], hw[1], -1).permute(0, 3, 1, 2))
        outs = _without_norms(model)(x)
    for a, b in zip(expected, outs):
        assert _rel_err(a, b) <= 1e-6


def test_window_mode_equals_detectron2_mvit():
    """window_size > 0 is detectron2's hybrid window attention, at odd sizes too."""
    d2 = _import_from('MMVISION_SSM_OFFICIAL_DETECTRON2', 'd2backbone.mvit')
    torch.manual_seed(0)
    offsets = [0, 1, 3, 5]
    ref = d2.MViT(img_size=64, embed_dim=16, depth=sum(DEPTHS), num_heads=1,
                  last_block_indexes=(0, 2, 4, 5), adaptive_window_size=16, drop_path_rate=0.,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6), rel_pos_zero_init=False).eval()
    state = {}
    for k, v in ref.state_dict().items():  # detectron2 names -> ours
        if m := re.match(r'blocks\.(\d+)\.(.*)', k):
            b = int(m.group(1))
            s = max(i for i in range(4) if offsets[i] <= b)
            rest = re.sub(r'^proj\.', 'shortcut_proj_attn.', m.group(2))
            k = f'stages.{s}.blocks.{b - offsets[s]}.{rest}'
        elif m := re.match(r'scale(\d)_norm\.(.*)', k):
            i = int(m.group(1)) - 2
            k = (f'out_norms.{i}.' if i < 3 else 'norm.') + m.group(2)
        state[k] = v + 0.1 * torch.randn_like(v) if 'norm' in k else v
    model = _ours(window_size=16)
    model.load_state_dict(state)
    ref.load_state_dict({k: state[k2] for k, k2 in zip(ref.state_dict(), state)})
    for size in [(64, 64), (70, 45)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected, outs = ref(x), model(x)
        for i, out in enumerate(outs):
            assert _rel_err(expected[f'scale{i + 2}'], out) <= 1e-6
