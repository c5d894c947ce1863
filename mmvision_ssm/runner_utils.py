"""Shared logic of tools/train.py and tools/test.py: one pair of tools for mmdet and mmseg
configs, with the checks that turn common mistakes into one clear message."""
from __future__ import annotations

import difflib
import os
import os.path as osp

from mmengine.config import Config

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


class ConfigError(ValueError):
    """A config (or a --cfg-options override) that cannot work, with the fix in the message."""


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ConfigError(f'{path}: default_scope={scope!r}; this tool runs configs in the mmdet '
                          "or mmseg scope (inherit an 'mmdet::' or 'mmseg::' base config)")
    return cfg


def _suggest(key, candidates) -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in candidates], n=3)
    return f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''


def check_cfg_options(cfg: Config, options: dict) -> None:
    """Reject overrides whose path does not exist in the config.

    A new key is accepted only inside a module dict (one with a ``type``), where it becomes a
    constructor argument that the module itself validates when it is built.
    """
    for dotted in options:
        node, parts = cfg, dotted.split('.')
        for depth, part in enumerate(parts):
            is_last = depth == len(parts) - 1
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f'--cfg-options {dotted}: {".".join(parts[:depth])} is a '
                                      f'list of {len(node)}; use an index in 0..{len(node) - 1}')
                node = node[int(part)]
                continue
            if not hasattr(node, 'keys'):
                raise ConfigError(f'--cfg-options {dotted}: {".".join(parts[:depth])} is a '
                                  f'{type(node).__name__}, not a dict')
            if part not in node:
                if is_last and 'type' in node:
                    break
                where = '.'.join(parts[:depth]) or 'the config'
                raise ConfigError(f'--cfg-options {dotted}: {part!r} is not a key of {where}.'
                                  + _suggest(part, node.keys()))
            node = node[part]


def _dataset_cfgs(dataset_cfg):
    """Yield the leaf dataset configs inside wrappers (RepeatDataset, ConcatDataset, ...)."""
    if dataset_cfg is None:
        return
    if 'datasets' in dataset_cfg:
        for d in dataset_cfg['datasets']:
            yield from _dataset_cfgs(d)
    elif 'dataset' in dataset_cfg:
        yield from _dataset_cfgs(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def prepare_data(cfg: Config, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')):
    """Generate the bundled demo data if the config asks for it, then check every data path."""
    demo = cfg.get('demo_data')
    if demo:
        from .demo import ensure_demo_data
        ensure_demo_data(**demo)
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for ds in _dataset_cfgs(cfg[loader].get('dataset')):
            root = ds.get('data_root') or ''
            paths = [('ann_file', ds.get('ann_file'))]
            paths += [(f'data_prefix.{k}', v) for k, v in (ds.get('data_prefix') or {}).items()]
            for field, rel in paths:
                if not rel:
                    continue
                path = osp.join(root, rel)
                if not osp.exists(path):
                    hint = ('run `python -m mmvision_ssm.demo data/demo` to generate the demo '
                            'data' if demo or 'demo' in str(root) else
                            'download the dataset (README.md, "Data") or point data_root at it with '
                            f'--cfg-options {loader}.dataset.data_root=PATH')
                    raise ConfigError(f'{loader}.dataset.{field}: {path!r} does not exist '
                                      f'(data_root={root!r}); {hint}')


def _classes_of(ds_cfg, scope):
    meta = ds_cfg.get('metainfo') or {}
    if meta.get('classes'):
        return tuple(meta['classes'])
    from mmengine.registry import DATASETS
    with DATASETS.switch_scope_and_registry(scope) as registry:
        cls = registry.get(ds_cfg['type'])
    return tuple((getattr(cls, 'METAINFO', None) or {}).get('classes', ())) or None


def _head_num_classes(model_cfg) -> dict:
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'num_classes' and isinstance(value, int):
                    found[path or 'model'] = value
                walk(value, f'{path}.{key}' if path else key)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}.{i}')
    walk(model_cfg, 'model')
    return found


def check_num_classes(cfg: Config) -> None:
    """The heads must predict as many classes as the dataset has (RPN heads are class-agnostic)."""
    loader = cfg.get('train_dataloader') or cfg.get('test_dataloader')
    if not loader:
        return
    leaves = list(_dataset_cfgs(loader.get('dataset')))
    if not leaves:
        return
    classes = _classes_of(leaves[0], cfg.default_scope)
    if not classes:
        return
    for path, n in _head_num_classes(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict')
                                     else cfg.model).items():
        if 'rpn_head' in path:
            continue
        if n != len(classes):
            raise ConfigError(f'{path}.num_classes={n} but the dataset has {len(classes)} classes '
                              f'{classes[:8]}{"..." if len(classes) > 8 else ""}; set '
                              f'{path}.num_classes={len(classes)} (or the dataset metainfo)')


def setup_amp(cfg: Config) -> None:
    """Mixed precision: bf16 where the GPU has it (no loss scaling, no fp16 overflow in the scan),
    else fp16 with a dynamic loss scale."""
    import torch
    if not torch.cuda.is_available():
        raise ConfigError('--amp needs a CUDA GPU; on CPU train in fp32 (drop --amp)')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if torch.cuda.is_bf16_supported():
        cfg.optim_wrapper.dtype = 'bfloat16'
    else:
        cfg.optim_wrapper.loss_scale = 'dynamic'


def default_work_dir(config_path: str) -> str:
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def use_report_metrics(cfg: Config) -> None:
    """Swap the stock metrics for the subclasses that also return per-class values."""
    swap = {'CocoMetric': 'CocoReportMetric', 'IoUMetric': 'IoUReportMetric'}
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        if not evaluator:
            continue
        metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        for metric in metrics:
            if metric.get('type') in swap:
                metric['type'] = swap[metric['type']]


def init_environment(unsafe_load: bool = False) -> None:
    """Imports and patches every tool needs before a runner is built."""
    import mmvision_ssm  # noqa: F401  registers our modules, hooks and metrics
    from .compat import allow_unsafe_checkpoints, install_mmengine_loader
    install_mmengine_loader()
    if unsafe_load:
        allow_unsafe_checkpoints()
    os.environ.setdefault('MPLBACKEND', 'Agg')


def fix_dist_backend(cfg: Config) -> None:
    """Distributed runs without a GPU: gloo instead of NCCL, and DDP without device ids.

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` unconditionally, so on CPU we
    initialise the (gloo) process group ourselves from torchrun's variables; the Runner then
    sees an initialised group and skips its own set-up.
    """
    import torch
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise ConfigError(f'--launcher {cfg.launcher} without a GPU is not supported; use '
                          'tools/dist_train.sh (torchrun, --launcher pytorch) for CPU runs')
    import torch.distributed as dist
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
