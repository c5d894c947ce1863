"""Reading official checkpoints and loading them strictly, with a report people can read.

Every backbone converts an official state dict to its own key layout (a ``convert_*`` function
beside the model) and then loads it here. Only two kinds of difference are expected and named as
such: source keys that are deliberately dropped (a classification head) and model keys that are
newly initialised (per-output norms for dense prediction). Anything else -- a missing weight, an
unexpected weight, a shape mismatch -- is an error unless the caller opts into a partial load.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

# Where official releases nest the weights. The plain weights win over EMA copies: that is what
# the official detection/segmentation loaders use.
_NESTING_KEYS = ('state_dict', 'model', 'model_state', 'module', 'state_dict_ema', 'model_ema')


class CheckpointMismatchError(RuntimeError):
    """Raised when a checkpoint does not match the model it is loaded into."""


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)
    dropped: list = field(default_factory=list)      # in the file, intentionally not used
    initialised: list = field(default_factory=list)  # in the model, intentionally new
    missing: list = field(default_factory=list)      # in the model, absent from the file: error
    unexpected: list = field(default_factory=list)   # in the file, unknown to the model: error
    mismatched: list = field(default_factory=list)   # (key, file shape, model shape): error

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, max_keys: int = 20) -> str:
        def fmt(keys):
            keys = [k if isinstance(k, str) else f'{k[0]}: file {k[1]} vs model {k[2]}' for k in keys]
            more = f' ... (+{len(keys) - max_keys} more)' if len(keys) > max_keys else ''
            return ', '.join(keys[:max_keys]) + more
        lines = [f'loaded {len(self.loaded)} tensors']
        for name, keys in (('dropped (expected: not used by this model)', self.dropped),
                           ('newly initialised (expected: not in the file)', self.initialised),
                           ('MISSING from the file', self.missing),
                           ('UNEXPECTED in the file', self.unexpected),
                           ('SHAPE MISMATCH', self.mismatched)):
            if keys:
                lines.append(f'{name} [{len(keys)}]: {fmt(keys)}')
        return '\n'.join(lines)


def extract_state_dict(obj) -> dict:
    """Return the tensor dict inside an official checkpoint (``model``/``state_dict``/... nesting)."""
    while isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointMismatchError(
        'no tensor dict found in the checkpoint: expected the weights at the top level or under '
        f'one of {_NESTING_KEYS}')


def read_checkpoint(path_or_obj) -> dict:
    """Load a checkpoint file (weights-only, safely) or pass a dict through; return its tensors."""
    if isinstance(path_or_obj, (str, os.PathLike)):
        path = os.fspath(path_or_obj)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'checkpoint not found: {path!r}. Check init_cfg.checkpoint / pretrained; '
                'README.md (model zoo) says where to get the official weights.')
        from .compat import safe_torch_load
        path_or_obj = safe_torch_load(path, map_location='cpu')
    return extract_state_dict(path_or_obj)


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                            dropped: Iterable[str] = (), initialised: Iterable[str] = (),
                            strict: bool = True, logger=None) -> LoadReport:
    """Copy ``state_dict`` into ``model`` and report every difference.

    ``dropped``/``initialised`` are glob patterns of the expected differences. With ``strict``
    (the default) any other difference raises :class:`CheckpointMismatchError` before the model
    is touched; with ``strict=False`` the matching tensors are loaded and the report says the rest.
    """
    dropped, initialised = tuple(dropped), tuple(initialised)
    own = model.state_dict()
    report = LoadReport()
    to_load = {}
    for key, value in state_dict.items():
        if key not in own:
            (report.dropped if _matches(key, dropped) else report.unexpected).append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            to_load[key] = value
            report.loaded.append(key)
    for key in own:
        if key not in state_dict:
            (report.initialised if _matches(key, initialised) else report.missing).append(key)
    if strict and not report.ok:
        raise CheckpointMismatchError(
            f'checkpoint does not match {type(model).__name__}:\n{report.summary()}\n'
            'Pass strict=False (init_cfg=dict(..., strict=False)) only if a partial load is intended.')
    model.load_state_dict(to_load, strict=False)
    if logger is not None:
        logger(f'{type(model).__name__}: {report.summary()}')
    return report


def save_converted(dst: str, state_dict: dict, meta: dict) -> None:
    """Write a converted checkpoint as mmdet/mmseg expect it (``state_dict`` + ``meta``)."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': state_dict, 'meta': meta}, dst)
    print(f'wrote {len(state_dict)} tensors to {dst}')


def check_backbone_state(model_cls, arch, state_dict: dict, label: str) -> tuple[dict, LoadReport]:
    """The converters' check: load ``state_dict`` strictly into ``model_cls(arch)`` (built on
    the meta device and materialised empty -- only the layout matters), print the report, and
    return ``({'backbone.<key>': tensor} for the loaded keys, report)``."""
    with torch.device('meta'):
        model = model_cls(arch)
    model.to_empty(device='cpu')
    report = model.load_pretrained(state_dict, strict=True, logger=None)
    print(f'{label}:\n{report.summary()}')
    return {f'backbone.{k}': state_dict[k].contiguous() for k in report.loaded}, report


def converter_parser(description: str, src_help: str = 'official checkpoint (.pth)'):
    """The converters' shared command line: ``src dst [--unsafe-load]`` (add --arch etc.)."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=src_help)
    parser.add_argument('dst', help='output file for init_cfg / pretrained / load_from')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='allow full unpickling (training files that also store e.g. the '
                             'argparse namespace); only for files you trust')
    return parser


def parse_converter_args(parser, argv=None):
    """Parse, and lift the safe loader's restriction when ``--unsafe-load`` was given."""
    args = parser.parse_args(argv)
    if args.unsafe_load:
        from .compat import allow_unsafe_checkpoints
        allow_unsafe_checkpoints()
    return args
