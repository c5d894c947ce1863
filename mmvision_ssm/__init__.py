"""mmvision_ssm: vision state-space backbones for MMDetection 3.x / MMSegmentation 1.x.

``import mmvision_ssm`` (what a config's ``custom_imports`` does) registers the backbones, necks
and hooks into mmengine's root registries, which the mmdet and mmseg scopes both search. Without
mmengine installed nothing is registered and the plain PyTorch modules still import.
"""
from .version import __version__

try:
    import mmengine  # noqa: F401
except ImportError:  # plain-PyTorch use (e.g. GPU benchmarks without OpenMMLab)
    pass
else:
    from . import openmmlab  # noqa: F401

__all__ = ['__version__']
