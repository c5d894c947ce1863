"""``MLLAttention``: one MLLA block as a drop-in module on an NCHW feature map.

The MLLA design notes in ../shared/seeds put such a block after the largest detection level
(YOLOv8's P5 output). Here it is a plain module (N, C, H, W) -> (N, C, H, W) for any H, W, so
it can follow a neck level (see ``NeckWithPlugins`` and
``configs/mlla/mask-rcnn_r50_fpn_mlla-attn_1x_coco.py``) or sit inside a head.

It is the full residual MLLA block of the backbone -- CPE, input gate, depthwise conv + SiLU,
multi-head linear attention with ELU+1 feature maps, 2-D RoPE for the actual map size and LePE,
output gating, then CPE + MLP -- not the seed's reduced variant (which reshapes NCHW memory as
tokens without a permute and assumes square maps).
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones.mlla import MLLABlock, stage_context
from ..layers import init_linear_and_layernorm

__all__ = ['MLLAttention']


class MLLAttention(nn.Module):
    """Residual MLLA block on a (N, C, H, W) map; output has the input's shape.

    Args:
        channels: C. Must be divisible by 4 and by ``num_heads`` with an even head dim.
        num_heads: attention heads (FPN's 256 channels with 8 heads: head dim 32, as MLLA's).
        mlp_ratio: hidden width of the MLP relative to C.
        qkv_bias: bias of the q/k projection.
        drop_path: stochastic depth on both residual branches.
        with_cp: activation checkpointing (non-reentrant) while training.
    """

    def __init__(self, channels: int, num_heads: int = 8, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0, with_cp: bool = False):
        super().__init__()
        self.channels, self.num_heads, self.with_cp = channels, num_heads, with_cp
        self.block = MLLABlock(channels, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                               drop_path=drop_path)
        self.block.apply(init_linear_and_layernorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'MLLAttention(channels={self.channels}) expects (N, '
                             f'{self.channels}, H, W), got {tuple(x.shape)}')
        tokens = x.permute(0, 2, 3, 1)
        ctx = stage_context(x.shape[2], x.shape[3], self.channels, self.num_heads,
                            device=x.device, dtype=x.dtype)
        if self.with_cp and torch.is_grad_enabled():
            out = torch.utils.checkpoint.checkpoint(self.block, tokens, ctx, use_reentrant=False)
        else:
            out = self.block(tokens, ctx)
        return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, num_heads={self.num_heads}'
