"""Necks. Plain-PyTorch ones are exported here; ``neck_with_plugins`` needs mmengine and is
imported by ``mmvision_ssm.openmmlab``."""
from .simple_fpn import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid']
