"""Small pieces shared by several backbones."""
from timm.layers import trunc_normal_
from torch import nn

from ..ops.layer_norm import layer_norm, output_dtype


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
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5,
                 low_precision_output: bool = False, min_triton_numel: int | None = None,
                 **kwargs):
        super().__init__(normalized_shape, eps=eps, **kwargs)
        if len(self.normalized_shape) != 1:
            raise ValueError(f'LayerNorm normalises the last dim only; got normalized_shape='
                             f'{self.normalized_shape}')
        self.low_precision_output = low_precision_output
        self.min_triton_numel = min_triton_numel

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps,
                          output_dtype(x, self.low_precision_output), self.min_triton_numel)
