"""Small pieces shared by several backbones."""
from timm.layers import trunc_normal_
from torch import nn


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
