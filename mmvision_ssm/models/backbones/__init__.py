"""Dense-prediction backbones, one file per family; plain PyTorch (torch + timm only)."""
from .mamba_vision import MambaVision
from .mlla import MLLA
from .mvit import MViTv2
from .vit import ViT
from .vmamba import VMamba

__all__ = ['VMamba', 'MambaVision', 'MLLA', 'MViTv2', 'ViT']
