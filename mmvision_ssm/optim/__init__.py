"""Optimizer helpers. ``LayerDecayOptimWrapperConstructor`` is None without mmengine."""
from .layer_decay import (LayerDecayOptimWrapperConstructor, get_layer_id,
                          layer_decay_lr_scale)

__all__ = ['LayerDecayOptimWrapperConstructor', 'get_layer_id', 'layer_decay_lr_scale']
