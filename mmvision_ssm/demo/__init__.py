"""Bundled demo data: a deterministic generator of shapes on textured backgrounds, written in
the real on-disk formats (COCO instances JSON, ADE20K-style images/ + annotations/ PNGs)."""
from .shapes import CLASSES, SEG_CLASSES, ensure_demo_data, generate_demo_data

__all__ = ['CLASSES', 'SEG_CLASSES', 'ensure_demo_data', 'generate_demo_data']
