"""Load the official MLLA code from a snapshot directory (see tests/test_mlla_official.py).

The snapshot holds ``mlla.py`` (official ``models/mlla.py``) and optionally
``mlla_downstream.py`` (official ``downstream/detection/mmdet/models/backbones/mlla.py``). The
downstream file imports mmdet 2.x / mmcv 1.x internals only for registration and checkpoint
loading; those three imports are replaced by stand-ins, the model code itself runs unchanged.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

ENV = 'MMVISION_SSM_OFFICIAL_MLLA'


def snapshot_dir() -> str | None:
    path = os.environ.get(ENV)
    return path if path and os.path.isfile(os.path.join(path, 'mlla.py')) else None


def load_classification(path: str):
    spec = importlib.util.spec_from_file_location('official_mlla', os.path.join(path, 'mlla.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_MMDET_IMPORTS = {
    'from ..builder import BACKBONES':
        'BACKBONES = type("Registry", (), '
        '{"register_module": staticmethod(lambda *a, **k: (lambda cls: cls))})',
    'from ...utils import get_root_logger': 'get_root_logger = lambda: None',
    'from mmcv.runner import _load_checkpoint': '_load_checkpoint = None',
}


def load_downstream(path: str):
    file = os.path.join(path, 'mlla_downstream.py')
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        source = f.read()
    for line, stand_in in _MMDET_IMPORTS.items():
        if line not in source:
            raise RuntimeError(f'{file}: expected the line {line!r} (official file changed?)')
        source = source.replace(line, stand_in)
    module = types.ModuleType('official_mlla_downstream')
    module.__file__ = file
    exec(compile(source, file, 'exec'), module.__dict__)
    sys.modules.setdefault(module.__name__, module)
    return module
