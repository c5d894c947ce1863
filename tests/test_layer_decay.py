"""Layer-wise lr decay: name -> layer id -> lr scale, and the mmengine constructor."""
import pytest
from torch import nn

from mmvision_ssm.models.backbones.mvit import MViTv2
from mmvision_ssm.models.backbones.vit import ViT
from mmvision_ssm.optim.layer_decay import get_layer_id, layer_decay_lr_scale


def test_vit_layer_ids_match_vitdet():
    n = 12
    assert get_layer_id('backbone.pos_embed', n) == 0
    assert get_layer_id('backbone.patch_embed.proj.weight', n) == 0
    assert get_layer_id('backbone.blocks.0.attn.qkv.weight', n) == 1
    assert get_layer_id('backbone.blocks.11.mlp.fc2.bias', n) == 12
    assert get_layer_id('backbone.norm.weight', n) == 13
    assert get_layer_id('neck.stages.0.0.weight', n) == 13
    assert get_layer_id('roi_head.bbox_head.fc_cls.weight', n) == 13
    # detectron2's get_vit_lr_decay_rate(name, 0.7, 12) values
    assert layer_decay_lr_scale('backbone.pos_embed', 0.7, n) == pytest.approx(0.7 ** 13)
    assert layer_decay_lr_scale('backbone.blocks.11.attn.proj.weight', 0.7, n) == pytest.approx(0.7)
    assert layer_decay_lr_scale('decode_head.conv_seg.weight', 0.7, n) == 1.0


def test_mvit_layer_ids_count_blocks_across_stages():
    depths = (1, 2, 5, 2)
    assert get_layer_id('backbone.stages.0.blocks.0.attn.qkv.weight', 10, depths) == 1
    assert get_layer_id('backbone.stages.1.blocks.1.norm1.weight', 10, depths) == 3
    assert get_layer_id('backbone.stages.3.blocks.1.mlp.fc1.weight', 10, depths) == 10
    assert get_layer_id('backbone.out_norms.0.weight', 10, depths) == 11
    with pytest.raises(ValueError, match='stage_depths'):
        get_layer_id('backbone.stages.0.blocks.0.attn.qkv.weight', 10)


def test_every_parameter_of_our_backbones_gets_a_valid_id():
    vit = ViT(arch=dict(embed_dim=16, depth=3, num_heads=2), out_indices=(1, 2))
    ids = {n: get_layer_id(n, 3, prefix='') for n, _ in vit.named_parameters()}
    assert ids['blocks.2.attn.qkv.weight'] == 3 and ids['out_norms.1.weight'] == 4
    assert set(ids.values()) == {0, 1, 2, 3, 4}
    mvit = MViTv2(arch=dict(depths=(1, 1, 2, 1), embed_dim=8, num_heads=1))
    ids = [get_layer_id(n, 5, mvit.depths, prefix='') for n, _ in mvit.named_parameters()]
    assert set(ids) == {0, 1, 2, 3, 4, 5, 6}


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ViT(arch=dict(embed_dim=16, depth=3, num_heads=2), window_size=0)
        self.head = nn.Linear(16, 2)


def test_mmengine_constructor_scales_group_lrs():
    pytest.importorskip('mmengine')
    from mmvision_ssm.optim import LayerDecayOptimWrapperConstructor
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1)),
        paramwise_cfg=dict(layer_decay_rate=0.5, num_layers=3, norm_decay_mult=0.,
                           custom_keys={'pos_embed': dict(decay_mult=0.)}))
    model = _Detector()
    wrapper = constructor(model)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(g['params'][0])]: g for g in wrapper.optimizer.param_groups}
    assert len(groups) == len(names)
    assert groups['backbone.pos_embed']['lr'] == pytest.approx(1e-3 * 0.5 ** 4)
    assert groups['backbone.pos_embed']['weight_decay'] == 0
    assert groups['backbone.blocks.0.attn.qkv.weight']['lr'] == pytest.approx(1e-3 * 0.5 ** 3)
    assert groups['backbone.blocks.0.attn.qkv.weight']['weight_decay'] == pytest.approx(0.1)
    assert groups['backbone.blocks.2.norm1.weight']['weight_decay'] == 0
    assert groups['head.weight']['lr'] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match='layer_decay_rate'):
        LayerDecayOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-3)))
