"""Small pieces shared by several backbones."""
from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..ops.layer_norm import layer_norm, layer_norm_nchw, output_dtype
from ..ops.norm_mlp import norm_mlp


def init_linear_and_layernorm(m: nn.Module) -> None:
    """The ViT-style initialisation the official VMamba and MLLA code use (for ``.apply``):
    truncated-normal (std 0.02) Linear weights with zero bias, LayerNorm at identity.
    Convolutions keep PyTorch's default."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dim (same parameters and state-dict keys) on the fast
    kernels of :mod:`mmvision_ssm.ops.layer_norm`.

    ``low_precision_output=True`` is for a norm whose only consumer is a Linear: under autocast
    it returns the autocast dtype directly (the Linear would cast the float32 output of
    ``F.layer_norm`` to it anyway). Otherwise the output dtype is ``F.layer_norm``'s (float32
    under autocast), which keeps residual streams that start at a norm in float32.

    ``min_triton_numel`` / ``min_triton_numel_grad``: from how many elements the Triton kernels
    run without / with autograd (None: the defaults of :mod:`mmvision_ssm.ops.layer_norm`); the
    Functions that recompute this norm (:func:`pre_norm_mlp`) follow the latter.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5,
                 low_precision_output: bool = False, min_triton_numel: int | None = None,
                 min_triton_numel_grad: int | None = None, **kwargs):
        super().__init__(normalized_shape, eps=eps, **kwargs)
        if len(self.normalized_shape) != 1:
            raise ValueError(f'LayerNorm normalises the last dim only; got normalized_shape='
                             f'{self.normalized_shape}')
        self.low_precision_output = low_precision_output
        self.min_triton_numel = min_triton_numel
        self.min_triton_numel_grad = min_triton_numel_grad

    def forward(self, x, input_bias=None):
        """``input_bias``: a per-channel bias to add to x first (see :func:`layer_norm`)."""
        return layer_norm(x, self.weight, self.bias, self.eps,
                          output_dtype(x, self.low_precision_output), self.min_triton_numel,
                          self.min_triton_numel_grad, input_bias)

    def forward_nchw(self, x):
        """The norm of a channels-last map (b, h, w, C) as a contiguous (b, C, h, w) map (for
        a backbone's outputs: one pass where the norm and a permuting copy would take two)."""
        return layer_norm_nchw(x, self.weight, self.bias, self.eps,
                               output_dtype(x, self.low_precision_output), self.min_triton_numel,
                               self.min_triton_numel_grad)


def pre_norm_mlp(norm: nn.LayerNorm, mlp: nn.Module, x: torch.Tensor,
                 fused: bool = True) -> torch.Tensor:
    """``mlp(norm(x))`` for a last-dim LayerNorm and a timm ``Mlp`` with GELU; when ``fused``
    and training with autograd (and no dropout), through :func:`mmvision_ssm.ops.norm_mlp`,
    which keeps half of what the modules would for the backward (it recomputes the cheap
    parts). Elsewhere (``fused=False``, other activations, inference, torch.compile) the modules
    run unchanged. The backbones pass their ``fused_mlp`` switch as ``fused``: on by default in
    VMamba and MLLA (where it takes the memory under 0.7x the official code's); MambaVision
    defaults to the modules, because its 224^2 training steps are host-bound on slow hosts,
    where the Function's extra Python costs more throughput than the memory is worth
    (MambaVision-T: -18 % eager, -4 % of GPU time, for -14 % memory; docs/benchmarks.md, runs
    S-W and Y1)."""
    act = mlp.act
    if (fused and torch.is_grad_enabled() and isinstance(act, nn.GELU)
            and mlp.norm.__class__ is nn.Identity
            and not (mlp.training and (mlp.drop1.p or mlp.drop2.p))
            and isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1
            and norm.weight is not None and not torch.compiler.is_compiling()):
        return norm_mlp(x, norm.weight, norm.bias, norm.eps, mlp.fc1.weight, mlp.fc1.bias,
                        mlp.fc2.weight, mlp.fc2.bias, act.approximate,
                        getattr(norm, 'min_triton_numel_grad', None))
    return mlp(norm(x))
