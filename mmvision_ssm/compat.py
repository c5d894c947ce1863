"""Safe checkpoint loading for torch >= 2.6 (``weights_only=True`` by default).

mmengine 0.10.7 calls ``torch.load(path)`` with no ``weights_only``, so under torch >= 2.6 resuming
from its own checkpoints fails: they pickle a few non-tensor objects (the message hub's
``HistoryBuffer`` with numpy arrays, numpy scalars in runtime info). Rather than turning
weights-only loading off, we allow-list exactly those types and keep the safe unpickler. A file
that needs anything else fails with :class:`UnsafeCheckpointError`, which names the object and the
explicit opt-in (``allow_unsafe_checkpoints()`` / ``--unsafe-load`` in tools) for trusted files.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import torch

_ALLOW_UNSAFE = False


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs arbitrary unpickling, which is off unless explicitly allowed."""


def allow_unsafe_checkpoints(allow: bool = True) -> None:
    """Opt in to full (arbitrary code) unpickling for checkpoints you trust."""
    global _ALLOW_UNSAFE
    _ALLOW_UNSAFE = bool(allow)


def _numpy_globals() -> list:
    multiarray = getattr(np, '_core', None) or np.core  # numpy 2 renamed core -> _core
    found = [np.ndarray, np.dtype, multiarray.multiarray._reconstruct, multiarray.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes through their classes (np.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return found


def _history_buffer_getattr_factory(history_buffer_cls):
    """A ``getattr`` that only fetches public methods of mmengine's ``HistoryBuffer``.

    A HistoryBuffer pickles its statistics methods as ``getattr(buffer, 'mean')``; allowing the
    real ``builtins.getattr`` would let a crafted file reach any attribute of any allowed object.
    """
    def restricted_getattr(obj, name):
        if (obj is history_buffer_cls or isinstance(obj, history_buffer_cls)) \
                and isinstance(name, str) and not name.startswith('_'):
            return getattr(obj, name)
        raise pickle.UnpicklingError(
            f'getattr({type(obj).__name__}, {name!r}) is not allowed by the safe loader')
    return restricted_getattr


def safe_globals() -> list:
    """The non-tensor types found in mmengine's own checkpoints (and harmless to rebuild), plus
    the yacs ``config`` that official Swin-lineage training checkpoints (VMamba, MLLA) pickle:
    it is rebuilt as a plain ``OrderedDict`` (same items, no yacs import, no code run)."""
    allowed = _numpy_globals() + [(OrderedDict, 'yacs.config.CfgNode')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return allowed
    getattr_fn = _history_buffer_getattr_factory(HistoryBuffer)
    allowed += [HistoryBuffer, (getattr_fn, 'builtins.getattr'), (getattr_fn, '__builtin__.getattr')]
    return allowed


def safe_torch_load(f, map_location=None):
    """``torch.load`` with ``weights_only=True`` plus the allow-list; clear error otherwise."""
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _ALLOW_UNSAFE:
            if hasattr(f, 'seek'):
                f.seek(0)
            return torch.load(f, map_location=map_location, weights_only=False)
        name = f if isinstance(f, (str, os.PathLike)) else type(f).__name__
        raise UnsafeCheckpointError(
            f'{name}: this checkpoint contains objects outside the safe allow-list, so it was '
            f'not unpickled ({str(err).splitlines()[0]}). If you trust the file, load it with '
            '--unsafe-load (tools/train.py, tools/test.py) or call '
            'mmvision_ssm.compat.allow_unsafe_checkpoints() first.') from err


def _load_from_local(filename, map_location):
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def install_mmengine_loader() -> None:
    """Make mmengine's checkpoint loading (``load_from``, ``--resume``, ``load_checkpoint``) use
    :func:`safe_torch_load` for local files, through mmengine's own scheme registry."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)
