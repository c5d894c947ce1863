"""Throughput, latency and peak memory of backbones, whole detectors/segmentors and references.

    # our backbones (torch + timm only; no OpenMMLab needed)
    python tools/benchmark.py --backbone VMamba MambaVision:T --arch tiny --dtype bf16 \
        --batch 128 --train-batch 64 --shape 224 224 --out bench.json
    # side by side: the official code (snapshots, see below) and timm models
    python tools/benchmark.py --official vmamba mamba_vision mlla --timm convnext_tiny ...
    # a config: its backbone alone, or the whole detector/segmentor (needs mmdet / mmseg)
    python tools/benchmark.py configs/vmamba/maskrcnn_vmamba_t_1x_coco.py --backbone-only
    python tools/benchmark.py configs/vmamba/maskrcnn_vmamba_t_1x_coco.py --shape 800 1344 --batch 2
    # resolution scaling: inference time/memory vs input size, fitted exponent, PNG + table
    python tools/benchmark.py --backbone VMamba MLLA --sweep-resolution 224 512 1024 1536 2048 \
        --dtype bf16 --out sweep.json --plot sweep.png
    python tools/benchmark.py --plot-from sweep.json --plot docs/resolution_scaling.png

Models are named ``ours:<Name>:<arch>``, ``official:<name>``, ``timm:<model>``, ``config:<file>``.
``--backbone NAME:ARCH`` picks an arch per backbone; ``--arch`` applies to those given without.
Official snapshots (git-ignored, never in the package): directories with the official files as
described in tests/test_{vmamba,mamba_vision,mlla}_official.py, found at
``$MMVISION_SSM_OFFICIAL_{VMAMBA,MAMBAVISION,MLLA}`` or ``.snap/{vmamba,mamba_vision,mlla}``.
mamba-ssm (for official VMamba/MambaVision and ``--scan-backend mamba_ssm``) comes from
``$MMVISION_SSM_MAMBA_SRC`` (an in-place build, tools/gpu_build_mamba_ssm.sh).

Training = forward + backward + SGD step on ``sum(out.mean())`` (whole models: their losses).
Measurement details: mmvision_ssm/benchmark.py. Results are appended to ``--out`` (JSON) after
every model, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import importlib.util
import json
import os
import os.path as osp
import platform
import re
import sys
import traceback
import types
from unittest import mock

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import torch  # noqa: E402

from mmvision_ssm.benchmark import (fit_exponent, format_table, measure,  # noqa: E402
                                    sweep_resolution)

OUR_BACKBONES = ('VMamba', 'MambaVision', 'MLLA', 'MViTv2', 'ViT')
TINY_ARCH = {'VMamba': 'tiny', 'MambaVision': 'T', 'MLLA': 'tiny', 'MViTv2': 'tiny', 'ViT': 'base'}


# ----------------------------------------------------------------------------- model builders
#: where ``rev:<REV>:<Name>`` specs find earlier versions of the package (tools/export_revision.sh)
REV_DIR = osp.join(ROOT, '.snap', 'rev')


def import_package(package, module):
    """``package.module`` of ours (``mmvision_ssm``) or of a copy of another revision exported
    by tools/export_revision.sh (``mmvision_ssm_<REV>`` under .snap/rev)."""
    if package != 'mmvision_ssm':  # a renamed copy of another revision (relative imports only)
        if not osp.isdir(osp.join(REV_DIR, package)):
            raise SystemExit(f'{package} not found under {REV_DIR}: run '
                             f'tools/export_revision.sh {package[len("mmvision_ssm_"):]}')
        if REV_DIR not in sys.path:
            sys.path.insert(0, REV_DIR)
    return importlib.import_module(f'{package}.{module}')


def build_ours(name, arch, package='mmvision_ssm', **kwargs):
    backbones = import_package(package, 'models.backbones')
    if name not in OUR_BACKBONES:
        raise ValueError(f'unknown backbone {name!r}; ours are {", ".join(OUR_BACKBONES)}')
    return getattr(backbones, name)(arch=arch or TINY_ARCH[name], **kwargs)


def _snapshot(env, sub):
    path = os.environ.get(env) or osp.join(ROOT, '.snap', sub)
    if not osp.isdir(path):
        raise FileNotFoundError(f'official snapshot not found: set ${env} or create {path}')
    return path


def _mamba_ssm_path():
    src = os.environ.get('MMVISION_SSM_MAMBA_SRC')
    if src and src not in sys.path:
        sys.path.insert(0, src)  # selective_scan_cuda*.so lives at the top of the in-place build
    return src


def _stub(name, **attrs):
    mod = sys.modules.get(name) or types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def build_official_vmamba():
    """Official Backbone_VSSM, VMamba-T (v05_noz) detection/segmentation settings.

    Its selective scan goes through csms6s.SelectiveScanCuda, which picks the first importable of
    its own CUDA extensions (oflex, core: not built here) and mamba-ssm's ``selective_scan_cuda``
    (MMVISION_SSM_MAMBA_SRC); without any it falls back to a Python loop over the sequence.
    Cross-scan/merge: its Triton kernels on CUDA. fvcore and mamba2 imports are stand-ins.
    """
    path = _snapshot('MMVISION_SSM_OFFICIAL_VMAMBA', 'vmamba')
    _mamba_ssm_path()
    _stub('fvcore.nn', FlopCountAnalysis=None, flop_count_str=None, flop_count=None,
          parameter_count=None)
    _stub('fvcore', nn=sys.modules['fvcore.nn'])
    name = 'vmamba_official'

    def no_mamba2(*a, **k):
        raise RuntimeError('Mamba2 path not used')
    _stub(name + '.mamba2').__path__ = []
    _stub(name + '.mamba2.ssd_minimal', selective_scan_chunk_fn=no_mamba2)
    if name not in sys.modules or not hasattr(sys.modules[name], '__file__'):
        spec = importlib.util.spec_from_file_location(
            name, osp.join(path, '__init__.py'), submodule_search_locations=[path])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[name] = pkg
        spec.loader.exec_module(pkg)
    vm = importlib.import_module(name + '.vmamba')
    csms6s = importlib.import_module(name + '.csms6s')
    csm = importlib.import_module(name + '.csm_triton')
    scan = ('oflex' if csms6s.WITH_SELECTIVESCAN_OFLEX else 'core' if
            csms6s.WITH_SELECTIVESCAN_CORE else 'mamba (mamba-ssm selective_scan_cuda)' if
            csms6s.WITH_SELECTIVESCAN_MAMBA else 'torch (Python loop)')
    model = vm.Backbone_VSSM(
        depths=[2, 2, 8, 2], dims=96, ssm_d_state=1, ssm_ratio=1.0, ssm_conv=3,
        ssm_conv_bias=False, forward_type='v05_noz', mlp_ratio=4.0, downsample_version='v3',
        patchembed_version='v2', norm_layer='ln2d', drop_path_rate=0.2)
    model.note = f'scan backend: {scan}; cross-scan: {"triton" if csm.WITH_TRITON else "torch"}'
    return model


def _rearrange(x, pattern, **axes):
    if pattern in ('b l d -> b d l', 'b d l -> b l d'):
        return x.transpose(1, 2)
    if pattern == 'b d l -> (b l) d':
        return x.transpose(1, 2).reshape(-1, x.shape[1])
    if pattern in ('(b l) d -> b d l', '(b l) dstate -> b dstate l'):
        return x.reshape(-1, axes['l'], x.shape[-1]).transpose(1, 2)
    raise NotImplementedError(f'einops stand-in: pattern {pattern!r}')


def _repeat(x, pattern, **axes):
    if pattern == 'n -> d n':
        return x.unsqueeze(0).expand(axes['d'], -1)
    raise NotImplementedError(f'einops stand-in: pattern {pattern!r}')


def _mamba_vision_stand_ins():
    from bench_scan import load_mamba_ssm
    fn = load_mamba_ssm()
    if fn is None:  # our dispatcher (Triton/torch) instead: noted on the model
        from mmvision_ssm.ops import selective_scan

        def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
               return_last_state=False):
            return selective_scan(u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus,
                                  return_last_state=bool(return_last_state))
    mods = {'mamba_ssm': types.ModuleType('mamba_ssm'),
            'mamba_ssm.ops': types.ModuleType('mamba_ssm.ops'),
            'mamba_ssm.ops.selective_scan_interface': types.ModuleType('x')}
    mods['mamba_ssm.ops.selective_scan_interface'].selective_scan_fn = fn

    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls
    # only for the import of the official files (mock.patch.dict restores sys.modules after)
    for name, attrs in [('mmengine', {}), ('mmengine.model', dict(BaseModule=torch.nn.Module)),
                        ('mmengine.runner', dict(load_checkpoint=None)), ('mmcv', {}),
                        ('mmdet', {}), ('mmdet.registry', dict(MODELS=_Registry())),
                        ('mmseg', {}), ('mmseg.registry', dict(MODELS=_Registry()))]:
        mods[name] = types.ModuleType(name)
        mods[name].__dict__.update(attrs)
    if importlib.util.find_spec('einops') is None:  # the patterns the official file uses
        mods['einops'] = types.ModuleType('einops')
        mods['einops'].rearrange, mods['einops'].repeat = _rearrange, _repeat
    return mods, fn


def _official_mamba_vision_module():
    """The official mm_mamba_vision module (imports mamba_vision.py), with mamba-ssm's
    selective_scan_fn (MMVISION_SSM_MAMBA_SRC) and the real einops; returns ({name: module}, fn)."""
    path = _snapshot('MMVISION_SSM_OFFICIAL_MAMBAVISION', 'mamba_vision')
    # imported before patch.dict, which would drop it from sys.modules again on exit: a second
    # import of timm (by our backbones) then re-registers torchvision's operators and fails
    import timm  # noqa: F401
    mods, fn = _mamba_vision_stand_ins()
    pkg = types.ModuleType('_official_mambavision')
    pkg.__path__ = [path]
    with mock.patch.dict(sys.modules, {**mods, '_official_mambavision': pkg}), \
            mock.patch('timm.models.registry.register_model', lambda f: f):
        loaded = {}
        for name in ('registry', 'mamba_vision', 'mm_mamba_vision'):
            spec = importlib.util.spec_from_file_location(f'_official_mambavision.{name}',
                                                          osp.join(path, f'{name}.py'))
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = loaded[name] = module
            spec.loader.exec_module(module)
    return loaded, fn


def build_official_mamba_vision():
    """Official MM_mamba_vision (T, windows 8/8/14/7, per-output LayerNorm2d): the dense backbone."""
    modules, fn = _official_mamba_vision_module()
    model = modules['mm_mamba_vision'].MM_mamba_vision(
        window_size=[8, 8, 14, 7], out_indices=(0, 1, 2, 3), norm_layer='ln2d', dim=80,
        in_dim=32, depths=[1, 3, 8, 4], num_heads=[2, 4, 8, 16], mlp_ratio=4, drop_path_rate=0.2)
    model.note = f'selective_scan_fn: {fn.__module__}.{fn.__name__}'
    return model


def build_official_mlla():
    """Official MLLA-T downstream (mmdet) backbone, out_indices 0-3 (tests/_mlla_official.py)."""
    path = _snapshot('MMVISION_SSM_OFFICIAL_MLLA', 'mlla')
    sys.path.insert(0, osp.join(ROOT, 'tests'))
    from _mlla_official import load_downstream
    module = load_downstream(path)
    if module is None:
        raise FileNotFoundError(f'{path}/mlla_downstream.py absent')
    return module.MLLA(img_size=224, out_indices=(0, 1, 2, 3), embed_dim=64, depths=[2, 4, 8, 4],
                       num_heads=[2, 4, 8, 16], drop_path_rate=0.2)


def build_official_mamba_vision_cls():
    """Official classification MambaVision-T (``mamba_vision_T``: one output, BatchNorm, pooled
    1000-class head): the model the issue's 224^2 reference numbers most likely timed."""
    modules, fn = _official_mamba_vision_module()
    model = modules['mamba_vision'].mamba_vision_T()
    model.note = f'classification model; selective_scan_fn: {fn.__module__}.{fn.__name__}'
    return model


OFFICIAL = {'vmamba': build_official_vmamba, 'mamba_vision': build_official_mamba_vision,
            'mamba_vision_cls': build_official_mamba_vision_cls, 'mlla': build_official_mlla}


def build_timm(name, **kwargs):
    import timm
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def _name_arch_options(spec, rest):
    """'Name[:arch[:k=v,k=v]]' -> (name, arch or None, {k: literal v})."""
    name, _, rest = rest.partition(':')
    arch, _, opts = rest.partition(':')
    kwargs = {}
    # commas inside brackets belong to the value: window_size=(8,8,112,56)
    for item in filter(None, re.split(r',(?![^()\[\]]*[)\]])', opts)):
        key, eq, value = item.partition('=')
        try:
            if not eq or not key.isidentifier():
                raise ValueError
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise SystemExit(f'model {spec!r}: option {item!r} is not key=<Python literal>, '
                             'e.g. fused_mlp=True')
    return name, arch or None, kwargs


def build_spec(spec, drop_path=None):
    """The model named ``ours:<Name>[:<arch>[:key=value,...]]``, ``rev:<REV>:<Name>[:<arch>...]``
    (ours as of git revision REV, exported by tools/export_revision.sh: before/after comparisons
    in one process), ``official:<name>`` or ``timm:<model>`` (the names of the other speed
    tools); ``key=value`` pairs are constructor keywords (Python literals), e.g.
    ``ours:MLLA:tiny:fused_mlp=True``;
    ``drop_path`` sets ours' and timm's stochastic-depth rate (the official builders keep the
    rates of the official configs)."""
    kind, _, rest = spec.partition(':')
    kw = {} if drop_path is None else dict(drop_path_rate=drop_path)
    if kind == 'ours':
        name, arch, opts = _name_arch_options(spec, rest)
        return build_ours(name, arch, **kw, **opts)
    if kind == 'rev':
        rev, _, rest = rest.partition(':')
        name, arch, opts = _name_arch_options(spec, rest)
        return build_ours(name, arch, package=f'mmvision_ssm_{rev}', **kw, **opts)
    if kind == 'official':
        return OFFICIAL[rest]()
    if kind == 'timm':
        return build_timm(rest, **kw)
    raise SystemExit(f'model {spec!r}: expected ours:NAME[:ARCH], rev:REV:NAME[:ARCH], '
                     'official:NAME or timm:NAME')


# ----------------------------------------------------------------------------- configs
def _load_config(path):
    try:
        from mmengine.config import Config
    except ImportError as err:
        raise SystemExit(f'reading a config needs mmengine ({err}); without OpenMMLab use '
                         '--backbone NAME --arch ARCH') from err
    return Config.fromfile(path)


def build_config_backbone(path):
    """The config's backbone alone, built from model.backbone (ours: no OpenMMLab registry)."""
    cfg = _load_config(path)
    bb = dict(cfg.model.backbone)
    bb.pop('init_cfg', None)  # random weights: no checkpoint needed to time it
    bb.pop('pretrained', None)
    kind = bb.pop('type')
    if kind in OUR_BACKBONES:
        from mmvision_ssm.models import backbones
        return getattr(backbones, kind)(**bb)
    import mmvision_ssm.openmmlab  # noqa: F401  (registers ours; the others come from mmdet/seg)
    from mmengine.registry import MODELS
    return MODELS.build(dict(type=kind, **bb))


class WholeModel(torch.nn.Module):
    """A detector/segmentor on a fixed synthetic batch: predict in eval(), losses in train()."""

    def __init__(self, model, scope):
        super().__init__()
        self.model, self.scope, self.data = model, scope, {}

    def prepare(self, batch, shape, device):
        self.model.to(device)
        for training in (False, True):
            self.data[training] = self.model.data_preprocessor(
                _synthetic_batch(self.scope, self.model, batch, shape, device), training)

    def forward(self):
        data = self.data[self.training]
        return self.model(**data, mode='loss' if self.training else 'predict')


def _num_classes(model):
    for name in ('roi_head', 'decode_head', 'bbox_head'):
        head = getattr(model, name, None)
        if head is None:
            continue
        head = getattr(head, 'bbox_head', head)
        head = head[-1] if isinstance(head, torch.nn.ModuleList) else head
        if hasattr(head, 'num_classes'):
            return head.num_classes
    return 2


def _synthetic_batch(scope, model, batch, shape, device):
    h, w = shape
    gen = torch.Generator().manual_seed(0)
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        torch.manual_seed(0)
        data = demo_mm_inputs(batch_size=batch, image_shapes=(3, h, w), num_items=[5] * batch,
                              num_classes=_num_classes(model), with_mask=True)
        return data
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, _num_classes(model), (1, h, w),
                                                    generator=gen))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def losses_sum(losses):
    """mmengine's parse_losses rule: sum every entry whose key contains 'loss'."""
    total = 0
    for k, v in losses.items():
        if 'loss' in k:
            total = total + (sum(t.mean() for t in v) if isinstance(v, (list, tuple))
                             else v.mean())
    return total


def build_config_model(path):
    cfg = _load_config(path)
    import mmvision_ssm.openmmlab  # noqa: F401
    scope = 'mmseg' if 'Segmentor' in cfg.model.type or 'decode_head' in cfg.model else 'mmdet'
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=True)
    from mmengine.registry import MODELS
    model_cfg = cfg.model
    model_cfg.backbone.pop('init_cfg', None)
    model_cfg.backbone.pop('pretrained', None)
    model_cfg.pop('pretrained', None)
    return WholeModel(MODELS.build(model_cfg), scope)


# ----------------------------------------------------------------------------- CLI
def model_specs(args):
    specs = []
    if args.config:
        specs.append(('config:' + args.config + (' (backbone)' if args.backbone_only else ''),
                      (lambda: build_config_backbone(args.config)) if args.backbone_only
                      else (lambda: build_config_model(args.config))))
    for b in args.backbone or []:
        name, _, arch = b.partition(':')
        arch = arch or args.arch or TINY_ARCH.get(name)
        specs.append((f'ours:{name}:{arch}', lambda n=name, a=arch: build_ours(n, a)))
    for o in args.official or []:
        if o not in OFFICIAL:
            raise SystemExit(f'--official: unknown {o!r}; choose from {", ".join(OFFICIAL)}')
        specs.append((f'official:{o}', OFFICIAL[o]))
    for t in args.timm or []:
        specs.append((f'timm:{t}', lambda t=t: build_timm(t)))
    if not specs:
        raise SystemExit('nothing to benchmark: give a config, --backbone, --official or --timm')
    return specs


def environment():
    env = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               python=platform.python_version(), torch=torch.__version__,
               command=' '.join([osp.basename(sys.executable)] + sys.argv),
               scan_backend_env=os.environ.get('MMVISION_SSM_SCAN_BACKEND'))
    src = _mamba_ssm_path()
    if src:  # registers mamba_ssm (bare namespace if its __init__'s model zoo cannot import)
        from bench_scan import load_mamba_ssm
        load_mamba_ssm()
        info = osp.join(src, 'PKG-INFO')
        if osp.isfile(info):
            env['mamba_ssm'] = next((ln.split(':', 1)[1].strip() for ln in open(info)
                                     if ln.startswith('Version:')), None)
    for pkg in ('triton', 'timm', 'mamba_ssm'):
        if env.get(pkg):
            continue
        try:
            env[pkg] = importlib.import_module(pkg).__version__
        except Exception:  # noqa: BLE001  (not installed / namespace stand-in)
            env[pkg] = None
    if torch.cuda.is_available():
        env['device'] = torch.cuda.get_device_name()
        env['cuda'] = torch.version.cuda
    else:
        env['device'] = f'cpu ({torch.get_num_threads()} threads)'
    return env


def _run_one(name, build, args, record):
    try:
        model = build()
    except Exception as err:  # noqa: BLE001  (one broken reference must not stop the others)
        traceback.print_exc()
        record(dict(name=name, error=f'build: {type(err).__name__}: {err}'))
        return
    note = getattr(model, 'note', None)
    if note:
        print(f'[{name}] {note}', flush=True)
    if args.compile:  # static shapes: one graph per measured case, no dynamic-shape kernels
        model = torch.compile(model, dynamic=False)
    device = torch.device(args.device)
    if args.sweep_resolution:
        def on_point(p):
            p['name'] = name
            print(f"[{name}] {p['size']}^2: " + (p['error'] if 'error' in p else
                  f"{p['latency_ms']:.2f} ms, {p['peak_mem_gib']} GiB"), flush=True)
        res = sweep_resolution(model, args.sweep_resolution, dtype=args.dtype, batch=args.batch,
                               iters=args.iters, warmup=args.warmup, device=device,
                               fit_min=args.fit_min, on_result=on_point)
        res.update(name=name, note=note, kind='sweep')
        record(res)
        return
    inner = model._orig_mod if hasattr(model, '_orig_mod') else model
    for mode in args.mode:
        batch = args.train_batch if (mode == 'train' and args.train_batch) else args.batch
        kw = {}
        if isinstance(inner, WholeModel):
            inner.prepare(batch, tuple(args.shape), device)
            kw = dict(make_input=lambda *a: (), loss_fn=losses_sum)
        try:
            r = measure(model, batch, tuple(args.shape), mode=mode, dtype=args.dtype,
                        iters=args.iters, warmup=args.warmup, device=device, **kw)
        except Exception as err:  # noqa: BLE001  (OOM, unsupported shape: record and go on)
            traceback.print_exc()
            r = dict(mode=mode, dtype=args.dtype, batch=batch, shape=list(args.shape),
                     error=f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}')
        r.update(name=name, note=note, compile=args.compile, kind='measure')
        record(r)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    del model


def merge_sweeps(paths, fit_min):
    """The sweep records of several JSON files, merged per model name (points sorted by size,
    a later file's point replacing an earlier one of the same size), exponent refitted over the
    sizes >= fit_min."""
    merged, env = {}, None
    for path in paths:
        with open(path) as f:
            for rec in json.load(f):
                if rec.get('kind') != 'sweep':
                    continue
                env = env or rec.get('env')
                cur = merged.setdefault(rec['name'], dict(rec, points=[]))
                sizes = {p['size'] for p in rec['points']}
                cur['points'] = sorted([p for p in cur['points'] if p['size'] not in sizes]
                                       + rec['points'], key=lambda p: p['size'])
    out = []
    for rec in merged.values():
        pts = [(p['pixels'], p['latency_ms']) for p in rec['points']
               if 'latency_ms' in p and p['size'] >= fit_min]
        rec.update(fit_min=fit_min, env=env,
                   exponent=fit_exponent(*zip(*pts))[0] if len(pts) >= 2 else None)
        out.append(rec)
    return out


def plot_sweep(results, png):
    """Log-log inference time and peak memory vs pixels, one line per model, exponents in the
    legend; returns the Markdown table."""
    sweeps = [r for r in results if r.get('kind') == 'sweep']
    lines = ['| model | ' + ' | '.join(f'{p["size"]}²' for p in sweeps[0]['points'])
             + ' | exponent (fit ≥ %d²) |' % sweeps[0]['fit_min'],
             '| --- ' * (len(sweeps[0]['points']) + 2) + '|'] if sweeps else []
    for s in sweeps:
        cells = []
        for p in s['points']:
            cells.append('OOM' if 'error' in p else
                         f"{p['latency_ms']:.2f} ms / {p['peak_mem_gib']:.2f} GiB"
                         if p.get('peak_mem_gib') is not None else f"{p['latency_ms']:.2f} ms")
        k = '-' if s['exponent'] is None else f"{s['exponent']:.2f}"
        lines.append(f"| {s['name']} | " + ' | '.join(cells) + f' | {k} |')
    if png and sweeps:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
        for s in sweeps:
            pts = [p for p in s['points'] if 'latency_ms' in p]
            px = [p['pixels'] / 1e6 for p in pts]
            label = s['name'].split(':', 1)[-1] + (
                '' if s['exponent'] is None else f" (k={s['exponent']:.2f})")
            ax_t.loglog(px, [p['latency_ms'] for p in pts], 'o-', label=label)
            if all(p.get('peak_mem_gib') is not None for p in pts):
                ax_m.loglog(px, [p['peak_mem_gib'] for p in pts], 'o-', label=label)
        ax_t.set(xlabel='megapixels (batch 1)', ylabel='inference latency, median ms',
                 title='time vs input size (time ∝ pixels^k)')
        ax_m.set(xlabel='megapixels (batch 1)', ylabel='peak memory, GiB',
                 title='peak memory vs input size')
        for ax in (ax_t, ax_m):
            ax.grid(True, which='both', alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        env = results[0].get('env', {}) if results else {}
        fig.suptitle(f"{env.get('device', '')}, {sweeps[0]['dtype']}, torch {env.get('torch', '')}",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        print(f'plot written to {png}')
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', help='an mmdet/mmseg config file (needs mmengine)')
    p.add_argument('--backbone-only', action='store_true', help="time the config's backbone only")
    p.add_argument('--backbone', nargs='+', help=f'ours: NAME[:ARCH], NAME in {OUR_BACKBONES}')
    p.add_argument('--arch', help='arch for --backbone entries without one (default: tiny)')
    p.add_argument('--official', nargs='+', help=f'official code: {", ".join(OFFICIAL)}')
    p.add_argument('--timm', nargs='+', help='timm model names (num_classes=0, random weights)')
    p.add_argument('--mode', nargs='+', default=['infer', 'train'], choices=['infer', 'train'])
    p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--train-batch', type=int, help='batch for training (default --batch)')
    p.add_argument('--shape', type=int, nargs='+', default=[224, 224], help='H [W]')
    p.add_argument('--iters', type=int, default=20, help='timed iterations (median over them)')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--compile', action='store_true', help='torch.compile the model')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='torch.set_num_threads (CPU runs)')
    p.add_argument('--scan-backend', help='sets $MMVISION_SSM_SCAN_BACKEND (ref, torch, cpu, '
                                          'triton, mamba_ssm)')
    p.add_argument('--sweep-resolution', type=int, nargs='+', metavar='SIZE',
                   help='inference time/memory at SIZExSIZE for each size (batch --batch)')
    p.add_argument('--fit-min', type=int, default=512, help='fit the exponent over sizes >= this')
    p.add_argument('--plot', help='PNG for the resolution sweep')
    p.add_argument('--plot-from', nargs='+', metavar='JSON',
                   help='only render the plot/table from earlier sweep JSON files (merged per '
                        'model, later files win at equal sizes; exponent refitted over >= '
                        '--fit-min)')
    p.add_argument('--out', help='JSON file (list of results; appended to as they come)')
    p.add_argument('--append', action='store_true', help='add to an existing --out file')
    args = p.parse_args(argv)
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2:
        p.error('--shape takes H or H W')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.plot_from:
        results = merge_sweeps(args.plot_from, args.fit_min)
        print(plot_sweep(results, args.plot))
        return results
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scan_backend:
        os.environ['MMVISION_SSM_SCAN_BACKEND'] = args.scan_backend
    env = environment()
    results = []
    if args.out and args.append and osp.isfile(args.out):
        with open(args.out) as f:
            results = json.load(f)
    start = len(results)

    def record(r):
        r['env'] = env
        r['scan_backend'] = args.scan_backend
        results.append(r)
        if args.out:
            with open(args.out, 'w') as f:
                json.dump(results, f, indent=1)
        if r.get('kind') == 'measure' or 'error' in r and 'points' not in r:
            print(format_table([r]).splitlines()[-1], flush=True)

    print(f"{env['device']}; torch {env['torch']}; triton {env['triton']}; timm {env['timm']}",
          flush=True)
    for name, build in model_specs(args):
        _run_one(name, build, args, record)
    mine = results[start:]
    if args.sweep_resolution:
        print(plot_sweep(mine, args.plot))
    else:
        print(format_table([r for r in mine if r.get('kind') == 'measure' or 'error' in r]))
    return mine


if __name__ == '__main__':
    main()
