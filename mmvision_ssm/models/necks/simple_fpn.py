"""ViTDet's simple feature pyramid: strides 4/8/16/32 (+ extra levels) from a stride-16 map.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection" (ECCV 2022),
section 3: scale 4 = two stride-2 deconvolutions (LN + GELU between), scale 2 = one
deconvolution, scale 1 = identity, scale 1/2 = 2x2 max pooling; each level then goes through a
1x1 and a 3x3 convolution, both followed by a channel LayerNorm. Plain PyTorch (no OpenMMLab).
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn
from torch.nn import functional as F

__all__ = ['SimpleFeaturePyramid']


def _conv_ln(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill, as ViTDet
    return nn.Sequential(conv, LayerNorm2d(out_channels))


class SimpleFeaturePyramid(nn.Module):
    """Stride-16 map(s) -> ``num_outs`` maps of ``out_channels`` at strides 4, 8, 16, 32, 64, ...

    Args:
        in_channels: channels of the input map(s) (the ViT width).
        out_channels: channels of every output level.
        scale_factors: up/down-sampling of each level relative to the input (4, 2, 1, 0.5 give
            strides 4, 8, 16, 32 from a stride-16 map).
        num_outs: number of outputs; levels beyond ``len(scale_factors)`` are stride-2
            subsamplings of the last one (mmdet FPN / detectron2 ``LastLevelMaxPool``), e.g. 5
            for Mask R-CNN's RPN (P6).

    ``forward`` takes a tensor, a 1-tuple (one map for all levels, ViTDet) or a tuple with one
    map per scale factor (e.g. ViT ``out_indices=(2, 5, 8, 11)``). Odd sizes give ceil-div
    strides (the pooling uses ``ceil_mode``).
    """

    def __init__(self, in_channels: int = 768, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int | None = None):
        super().__init__()
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_outs = num_outs or len(self.scale_factors)
        if self.num_outs < len(self.scale_factors):
            raise ValueError(f'SimpleFeaturePyramid: num_outs={num_outs} is smaller than the '
                             f'{len(self.scale_factors)} scale_factors {self.scale_factors}')
        self.in_channels, self.out_channels = in_channels, out_channels
        c = in_channels
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(c, c // 2, 2, stride=2), LayerNorm2d(c // 2),
                          nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2)]
                dim = c // 4
            elif scale == 2.0:
                layers, dim = [nn.ConvTranspose2d(c, c // 2, 2, stride=2)], c // 2
            elif scale == 1.0:
                layers, dim = [], c
            elif scale == 0.5:
                layers, dim = [nn.MaxPool2d(2, stride=2, ceil_mode=True)], c
            else:
                raise ValueError(f'SimpleFeaturePyramid: scale factor {scale} is not supported; '
                                 'use 4.0, 2.0, 1.0 or 0.5')
            self.stages.append(nn.Sequential(*layers, _conv_ln(dim, out_channels, 1),
                                             _conv_ln(out_channels, out_channels, 3)))

    def forward(self, inputs) -> tuple:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        if len(inputs) == 1:
            inputs = tuple(inputs) * len(self.stages)
        elif len(inputs) != len(self.stages):
            raise ValueError(f'SimpleFeaturePyramid: got {len(inputs)} input maps; give 1 (shared '
                             f'by all levels) or {len(self.stages)} (one per scale factor)')
        # contiguous NCHW: LayerNorm2d returns a channels-last view, and mmcv's RoIAlign reads
        # raw NCHW memory (a channels-last level would scramble the RoI features)
        outs = [stage(x).contiguous() for stage, x in zip(self.stages, inputs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
