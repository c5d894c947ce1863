"""ViT backbone (ViTDet style) and the simple feature pyramid neck.

Equivalence is checked against timm's ``VisionTransformer`` with the same weights (fp32) and,
when the snapshot is there, against detectron2's ViTDet ``ViT`` and ``SimpleFeaturePyramid``
(``MMVISION_SSM_OFFICIAL_DETECTRON2``: see tests/test_mvit.py for the directory layout). The
checkpoint layout of timm's ``vit_base_patch16_224.augreg_in21k`` is recorded in
``tests/data/vit_base_patch16_224_augreg_in21k.json`` (key -> shape, generated from timm).
"""
import json
import os
import sys
from functools import partial

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mmvision_ssm.checkpoint import CheckpointMismatchError
from mmvision_ssm.models.backbones.vit import ViT, window_partition, window_unpartition
from mmvision_ssm.models.necks import SimpleFeaturePyramid

TINY = dict(embed_dim=32, depth=4, num_heads=2, global_blocks=(1, 3))
DATA = os.path.join(os.path.dirname(__file__), 'data')


def _timm_vit(img_size=64, **kwargs):
    model = VisionTransformer(img_size=img_size, patch_size=16, embed_dim=32, depth=4, num_heads=2,
                              **kwargs).eval()
    with torch.no_grad():  # non-trivial norms/biases, so a wrong mapping cannot pass
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _rel_err(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def test_shapes_any_size():
    torch.manual_seed(0)
    model = ViT(arch=TINY, window_size=3, out_indices=(1, 3)).eval()
    assert model.out_channels == [32, 32]
    for size in [(5, 7), (16, 16), (33, 50), (100, 64)]:
        with torch.no_grad():
            outs = model(torch.randn(2, 3, *size))
        expect = (-(-size[0] // 16), -(-size[1] // 16))
        assert [tuple(o.shape) for o in outs] == [(2, 32, *expect)] * 2
        # mmcv's RoIAlign reads raw NCHW memory: channels-last maps would scramble RoI features
        assert all(o.is_contiguous() for o in outs)


def test_equivalence_with_timm_global_attention():
    torch.manual_seed(0)
    ref = _timm_vit(class_token=False, global_pool='avg', fc_norm=False, num_classes=0,
                    dynamic_img_size=True)
    model = ViT(arch=TINY, pretrain_img_size=64, window_size=0, drop_path_rate=0.,
                pos_embed_antialias=True).eval()  # timm's resampling
    report = model.load_pretrained(ref.state_dict(), logger=None)
    assert report.ok and not report.initialised
    for size in [(64, 64), (80, 112)]:  # the second one resamples the position embedding
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = ref.forward_features(x).unflatten(1, (size[0] // 16, size[1] // 16))
            out = model(x)[0].permute(0, 2, 3, 1)
        assert _rel_err(expected, out) <= 1e-6


def test_window_attention_equals_global_when_window_covers_map():
    torch.manual_seed(0)
    glob = ViT(arch=TINY, window_size=0, drop_path_rate=0.).eval()
    win = ViT(arch=TINY, window_size=4, drop_path_rate=0.).eval()
    win.load_state_dict(glob.state_dict())
    # 4x4 map: windows exactly cover it; 2x3 map: the 4-window is clipped to the map
    for size in [(64, 64), (32, 48)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(win(x)[0], glob(x)[0], rtol=0, atol=1e-6)
    # on a larger map the windows really restrict attention
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        assert (win(x)[0] - glob(x)[0]).abs().max() > 1e-3


def test_window_partition_roundtrip_with_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, (2, 3))
    assert windows.shape == (2 * 3 * 3, 6, 3) and padded == (6, 9)
    assert torch.equal(windows[0].view(2, 3, 3), x[0, :2, :3])
    assert torch.equal(window_unpartition(windows, (2, 3), padded, (5, 7)), x)


def test_loads_timm_checkpoint_with_cls_token_and_head():
    torch.manual_seed(0)
    # timm layout with cls token, head, and position embedding at another grid (32 px -> 2x2)
    ref = _timm_vit(img_size=32, num_classes=10)
    model = ViT(arch=TINY, pretrain_img_size=64, window_size=0)
    report = model.load_pretrained(ref.state_dict(), logger=None)
    assert report.ok
    assert sorted(report.dropped) == ['cls_token', 'head.bias', 'head.weight']
    assert report.initialised == []
    assert model.pos_embed.shape == (1, 16, 32)  # resampled from 2x2 without the cls entry
    sd = ref.state_dict()
    assert torch.equal(model.blocks[3].mlp.fc2.weight, sd['blocks.3.mlp.fc2.weight'])
    assert torch.equal(model.norm.weight, sd['norm.weight'])
    # without the last block as an output the final norm is not used: dropped, not an error
    report = ViT(arch=TINY, pretrain_img_size=64, out_indices=(1,)).load_pretrained(sd, logger=None)
    assert report.ok and {'norm.weight', 'norm.bias'} <= set(report.dropped)
    # a missing block weight is an error, not a silent partial load
    del sd['blocks.2.attn.qkv.weight']
    with pytest.raises(CheckpointMismatchError, match='blocks.2.attn.qkv.weight'):
        ViT(arch=TINY, pretrain_img_size=64).load_pretrained(sd, logger=None)


def test_cls_position_is_stripped_from_pretrained_pos_embed():
    torch.manual_seed(0)
    ref = _timm_vit(img_size=64, num_classes=0)
    model = ViT(arch=TINY, pretrain_img_size=64)
    model.load_pretrained(ref.state_dict(), logger=None)
    assert torch.equal(model.pos_embed, ref.pos_embed[:, 1:])


def test_vit_b_strict_load_from_recorded_timm_layout():
    """ViT-B against the key -> shape layout of timm's vit_base_patch16_224.augreg_in21k."""
    with open(os.path.join(DATA, 'vit_base_patch16_224_augreg_in21k.json')) as f:
        layout = json.load(f)
    state = {k: torch.zeros(v) for k, v in layout.items()}
    model = ViT(arch='base', out_indices=(3, 11))
    report = model.load_pretrained(state, logger=None)
    assert report.ok
    assert sorted(report.dropped) == ['cls_token', 'head.bias', 'head.weight']
    assert sorted(report.initialised) == ['out_norms.3.bias', 'out_norms.3.weight']
    assert model.out_channels == [768, 768]


def test_frozen_stages_and_with_cp():
    torch.manual_seed(0)
    model = ViT(arch=TINY, frozen_stages=2, with_cp=True, drop_path_rate=0.).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert 'pos_embed' in frozen and 'patch_embed.proj.weight' in frozen
    assert 'blocks.1.mlp.fc1.weight' in frozen and 'blocks.2.mlp.fc1.weight' not in frozen
    assert not model.blocks[0].training and model.blocks[2].training
    x = torch.randn(1, 3, 48, 40)
    out = model(x)[0]
    out.sum().backward()
    plain = ViT(arch=TINY, frozen_stages=2, with_cp=False, drop_path_rate=0.).train()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(x)[0], out)


def test_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="'base', 'large', 'small'"):
        ViT(arch='huge')
    with pytest.raises(ValueError, match='0..3'):
        ViT(arch=TINY, out_indices=(4,))


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (8, 8)])
def test_simple_feature_pyramid_shapes(size):
    neck = SimpleFeaturePyramid(32, 16, num_outs=5)
    outs = neck((torch.randn(2, 32, *size),))
    h, w = size
    expect = [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), (-(-h // 2), -(-w // 2)),
              (-(-h // 4), -(-w // 4))]
    assert [tuple(o.shape[2:]) for o in outs] == expect
    assert all(o.shape[:2] == (2, 16) for o in outs)
    # mmcv's RoIAlign reads raw NCHW memory: channels-last levels would scramble RoI features
    assert all(o.is_contiguous() for o in outs)


def test_simple_feature_pyramid_one_map_per_level_and_errors():
    neck = SimpleFeaturePyramid(32, 8)
    maps = [torch.randn(1, 32, 4, 6) for _ in range(4)]
    outs = neck(tuple(maps))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 24), (1, 8, 8, 12), (1, 8, 4, 6),
                                              (1, 8, 2, 3)]
    # level 2 (scale 1) is computed from its own map: 1x1 conv + LN, 3x3 conv + LN
    torch.testing.assert_close(outs[2], neck.stages[2](maps[2]))
    with pytest.raises(ValueError, match='give 1'):
        neck(tuple(maps[:2]))
    with pytest.raises(ValueError, match='scale factor 3.0'):
        SimpleFeaturePyramid(32, 8, scale_factors=(3.0,))


def test_vit_with_neck_end_to_end_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(ViT(arch=TINY, window_size=2), SimpleFeaturePyramid(32, 8, num_outs=5))
    outs = model(torch.randn(1, 3, 50, 70))
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    sum(o.sum() for o in outs).backward()
    assert model[0].pos_embed.grad is not None
    assert model[0].blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_equivalence_with_detectron2_vitdet():
    """ViTDet semantics (window padding, position-embedding resizing) and its pyramid."""
    root = os.environ.get('MMVISION_SSM_OFFICIAL_DETECTRON2')
    if not root or not os.path.isdir(root):
        pytest.skip('official snapshot not available: set MMVISION_SSM_OFFICIAL_DETECTRON2')
    if root not in sys.path:
        sys.path.insert(0, root)
    from d2backbone.vit import ViT as D2ViT
    from d2backbone.vit import SimpleFeaturePyramid as D2SFP
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool
    torch.manual_seed(0)
    net = D2ViT(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2, drop_path_rate=0.,
                window_size=3, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                window_block_indexes=[0, 2], use_rel_pos=False, pretrain_img_size=64,
                pretrain_use_cls_token=True, out_feature='last_feat')
    ref = D2SFP(net=net, in_feature='last_feat', out_channels=8, norm='LN',
                scale_factors=(4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool()).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = ViT(arch=TINY, window_size=3, pretrain_img_size=64, drop_path_rate=0.).eval()
    report = model.load_pretrained(net.state_dict(), logger=None)  # cls position included
    assert report.ok and sorted(report.initialised) == ['norm.bias', 'norm.weight']
    model.norm = nn.Identity()  # ViTDet has no final norm
    neck = SimpleFeaturePyramid(32, 8, num_outs=5).eval()
    src = [v for k, v in ref.state_dict().items() if not k.startswith('net.')]
    dst = neck.state_dict()
    assert [tuple(v.shape) for v in src] == [tuple(v.shape) for v in dst.values()]
    neck.load_state_dict(dict(zip(dst, src)))  # same modules in the same order
    for size in [(64, 64), (96, 160), (80, 48)]:  # map 4x4 (window padding), 6x10, 5x3
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            feat = model(x)[0]
            assert _rel_err(net(x)['last_feat'], feat) <= 1e-6
            if size[0] % 32 == 0 and size[1] % 32 == 0:  # detectron2 needs stride-32 inputs
                expected = ref(x)
                for i, out in enumerate(neck(feat)):  # its LayerNorm is a stub: 1e-5
                    assert _rel_err(expected[f'p{i + 2}'], out) <= 1e-5


def test_trunk_layout_contiguous_and_pos_cache_follows_parameter():
    """The token map entering the blocks is contiguous NHWC (the patch embedding's NHWC output is
    a permuted view); the no-grad position-embedding cache is dropped when the parameter changes
    and gives the same result as resampling afresh."""
    model = ViT(arch=TINY, window_size=0, pretrain_img_size=64, drop_path_rate=0.).eval()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    x = torch.randn(2, 3, 80, 48)  # 5x3 grid != the 4x4 pre-training grid: resampled
    with torch.no_grad():
        first = model(x)[0]
        again = model(x)[0]
        model.pos_embed.add_(1.0)  # in-place update, as an optimizer step does
        changed = model(x)[0]
    fresh = model(x)[0]  # with autograd: never cached
    assert seen and all(seen)
    assert torch.equal(first, again)
    assert not torch.allclose(changed, first)
    torch.testing.assert_close(changed, fresh.detach(), rtol=0, atol=0)
