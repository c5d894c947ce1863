"""A neck followed by plug-in blocks on chosen output levels (OpenMMLab glue).

    neck=dict(type='NeckWithPlugins',
              neck=dict(type='FPN', in_channels=[...], out_channels=256, num_outs=5),
              plugins=[dict(level=0, cfg=dict(type='MLLAttention', channels=256))])

Level 0 is the largest (stride-4) map. Each plug-in maps (N, C, H, W) -> (N, C, H, W).
"""
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn


class NeckWithPlugins(BaseModule):

    def __init__(self, neck: dict, plugins: list, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.neck = MODELS.build(neck)
        self.plugins = nn.ModuleDict()
        for i, plugin in enumerate(plugins):
            if not isinstance(plugin, dict) or set(plugin) != {'level', 'cfg'}:
                raise ValueError(f'NeckWithPlugins: plugins[{i}]={plugin!r} must be '
                                 "dict(level=INT, cfg=dict(type=..., ...))")
            self.plugins[str(plugin['level'])] = MODELS.build(plugin['cfg'])

    def forward(self, inputs):
        outs = list(self.neck(inputs))
        for level, plugin in self.plugins.items():
            index = int(level)
            if not -len(outs) <= index < len(outs):
                raise IndexError(f'NeckWithPlugins: plugin level {index} but the neck returns '
                                 f'{len(outs)} levels')
            outs[index] = plugin(outs[index])
        return tuple(outs)
