"""OpenMMLab registration: a thin layer over the plain PyTorch modules.

Everything goes into mmengine's *root* registries. mmdet's and mmseg's registries are children of
those and look a type up in their parent when they do not have it, so one registration serves
``default_scope='mmdet'`` and ``default_scope='mmseg'`` configs alike, without importing either.
"""
import importlib.util

from mmengine.registry import HOOKS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from .compat import install_mmengine_loader
from .engine.report_hook import EvalReportHook
from .models.backbones import MLLA, MambaVision, MViTv2, ViT, VMamba
from .models.necks import SimpleFeaturePyramid
from .models.necks.neck_with_plugins import NeckWithPlugins
from .models.plugins import MLLAttention
from .optim import LayerDecayOptimWrapperConstructor

BACKBONES = (VMamba, MambaVision, MLLA, MViTv2, ViT)
NECKS = (SimpleFeaturePyramid, NeckWithPlugins)
PLUGINS = (MLLAttention,)

for _module in BACKBONES + NECKS + PLUGINS:
    MODELS.register_module(module=_module)
OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=LayerDecayOptimWrapperConstructor)
HOOKS.register_module(module=EvalReportHook)

if importlib.util.find_spec('mmdet') is not None:
    from .evaluation.coco_report_metric import CocoReportMetric
    METRICS.register_module(module=CocoReportMetric)
if importlib.util.find_spec('mmseg') is not None:
    from .evaluation.iou_report_metric import IoUReportMetric
    METRICS.register_module(module=IoUReportMetric)

# Resuming and load_from go through mmengine's CheckpointLoader: make it safe for torch >= 2.6.
install_mmengine_loader()
