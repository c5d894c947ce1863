"""Stand-alone blocks that plug into necks and heads (plain PyTorch modules)."""
from .mlla_attention import MLLAttention

__all__ = ['MLLAttention']
