"""Layer-wise learning-rate decay (ViTDet / BEiT style) for the ViT and MViTv2 backbones.

Block ``i`` of the backbone (counting MViTv2's blocks across stages) gets layer id ``i + 1``; the
patch/position embeddings get 0; everything else -- output norms, neck, heads -- gets
``num_layers + 1``. A parameter's learning rate is multiplied by
``decay_rate ** (num_layers + 1 - layer_id)``, exactly detectron2's ``get_vit_lr_decay_rate``.

The pure functions need nothing but the standard library. :class:`LayerDecayOptimWrapperConstructor`
wraps them for mmengine configs and exists only when mmengine is installed.
"""
from __future__ import annotations

import re
from typing import Sequence

__all__ = ['get_layer_id', 'layer_decay_lr_scale', 'LayerDecayOptimWrapperConstructor']

_EMBEDDING_NAMES = ('patch_embed', 'pos_embed', 'cls_token')


def get_layer_id(name: str, num_layers: int, stage_depths: Sequence[int] | None = None,
                 prefix: str = 'backbone.') -> int:
    """Layer id of a parameter name: 0 embeddings, ``i + 1`` block i, ``num_layers + 1`` the rest.

    Args:
        name: full parameter name, e.g. ``backbone.blocks.3.attn.qkv.weight`` (ViT) or
            ``backbone.stages.2.blocks.4.mlp.fc1.weight`` (MViTv2).
        num_layers: number of blocks of the backbone.
        stage_depths: blocks per stage, needed for ``stages.<s>.blocks.<j>`` names.
        prefix: where the backbone's parameters live ('' for a bare backbone).
    """
    if not name.startswith(prefix):
        return num_layers + 1
    rest = name[len(prefix):]
    if rest.split('.', 1)[0] in _EMBEDDING_NAMES:
        return 0
    match = re.match(r'blocks\.(\d+)\.', rest)
    if match:
        return int(match.group(1)) + 1
    match = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.', rest)
    if match:
        if stage_depths is None:
            raise ValueError(f'layer decay: {name!r} is in a staged backbone; pass stage_depths')
        stage, block = int(match.group(1)), int(match.group(2))
        return sum(stage_depths[:stage]) + block + 1
    return num_layers + 1


def layer_decay_lr_scale(name: str, decay_rate: float, num_layers: int,
                         stage_depths: Sequence[int] | None = None,
                         prefix: str = 'backbone.') -> float:
    """Learning-rate multiplier ``decay_rate ** (num_layers + 1 - layer_id)`` of a parameter."""
    layer_id = get_layer_id(name, num_layers, stage_depths, prefix)
    return decay_rate ** (num_layers + 1 - layer_id)


def backbone_layout(backbone) -> tuple:
    """(num_layers, stage_depths) of our ViT (``blocks``) or MViTv2 (``stages``/``depths``)."""
    depths = getattr(backbone, 'depths', None)
    if depths is not None:
        return sum(depths), tuple(depths)
    blocks = getattr(backbone, 'blocks', None)
    if blocks is not None:
        return len(blocks), None
    raise ValueError(f'layer decay: cannot find the blocks of {type(backbone).__name__}; give '
                     'paramwise_cfg num_layers (and use a ViT/MViTv2 backbone)')


try:
    from mmengine.optim import DefaultOptimWrapperConstructor
except ImportError:  # plain PyTorch use: only the functions above
    DefaultOptimWrapperConstructor = None

if DefaultOptimWrapperConstructor is None:
    LayerDecayOptimWrapperConstructor = None
else:

    class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
        """mmengine optimizer constructor with layer-wise lr decay on top of the usual
        ``paramwise_cfg`` (``custom_keys``, ``norm_decay_mult``, ... still apply).

        ``paramwise_cfg=dict(layer_decay_rate=0.7, num_layers=12)``; ``num_layers`` may be left
        out and is then read from ``model.backbone``. Each parameter's group lr (the base lr or
        what ``custom_keys`` set) is multiplied by :func:`layer_decay_lr_scale`.
        """

        def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
            paramwise_cfg = dict(paramwise_cfg or {})
            if 'layer_decay_rate' not in paramwise_cfg:
                raise ValueError('LayerDecayOptimWrapperConstructor needs paramwise_cfg='
                                 'dict(layer_decay_rate=..., num_layers=...)')
            super().__init__(optim_wrapper_cfg, paramwise_cfg)
            self.decay_rate = float(paramwise_cfg['layer_decay_rate'])
            self.num_layers = paramwise_cfg.get('num_layers')

        def add_params(self, params: list, module, prefix: str = '', **kwargs) -> None:
            start = len(params)
            super().add_params(params, module, prefix, **kwargs)
            if prefix:  # the recursion into children: scale once, at the top
                return
            backbone = getattr(module, 'backbone', module)
            num_layers, depths = backbone_layout(backbone)
            num_layers = self.num_layers or num_layers
            bb_prefix = 'backbone.' if hasattr(module, 'backbone') else ''
            names = {id(p): n for n, p in module.named_parameters()}
            for group in params[start:]:
                name = names[id(group['params'][0])]
                scale = layer_decay_lr_scale(name, self.decay_rate, num_layers, depths, bb_prefix)
                group['lr'] = group.get('lr', self.base_lr) * scale
