"""Parameters and FLOPs of a model, with the ops mmengine's (fvcore's) counter does not know.

    from mmvision_ssm.analysis import count_flops
    res = count_flops(model, (torch.randn(1, 3, 224, 224),))
    res.total, res.by_module, res.by_operator, res.params

Counting convention (fvcore / mmengine ``FlopAnalyzer``): one multiply-add is one FLOP for
convolutions, linear layers and matmuls/einsums; element-wise ops (activations such as ELU/SiLU,
softmax, additions) are not counted; norms count a few FLOPs per element. On top of that:

* the selective scan follows VMamba's / mamba-ssm's own convention (``mmvision_ssm.ops.flops``):
  ``9*b*d*l*n`` (+ ``b*d*l`` for D, + ``b*d*l`` for the gate z), and the cross-scan merge adds
  ``3*b*d*h*w``. The scan term is VMamba's own ``flops_selective_scan_fn`` (which it adds to
  fvcore's counts for its published GFLOPs), so totals compare with the papers; VMamba leaves
  the merge's additions out (a few per cent of the scan's count, well under 1% of a backbone's).
  Note that this convention counts the scan's multiplies and adds separately, not as
  multiply-adds;
* ``aten::scaled_dot_product_attention`` is two matmuls, ``q @ k^T`` and ``attn @ v``:
  ``B*Lq*Lk*(E + Ev)`` with B the product of q's leading (batch, head) dims, E the q/k and Ev the
  v feature size; softmax, scaling and the mask are element-wise and not counted (as for an
  explicit ``matmul -> softmax -> matmul`` attention under fvcore). A causal mask is counted in
  full (what the dense kernels compute);
* convolutions with string padding (``aten::_convolution_mode``) are counted like the others;
* MLLA's linear attention is plain ``matmul``s: fvcore's matmul handle counts them; its
  ELU+1 feature map is element-wise and ignored.

The scan runs inside Python (several aten ops per step on CPU, a Triton or CUDA kernel on GPU),
so a jit trace would show its internals or an opaque ``prim::PythonOp`` per backend. During the
count, :func:`opaque_scans` routes every ``selective_scan``/``cross_selective_scan`` call made
through the :mod:`mmvision_ssm.ops` dispatcher -- whatever the backend -- through one autograd
Function per op, which the trace records as a single ``prim::PythonOp.SelectiveScanOp`` /
``prim::PythonOp.CrossSelectiveScanOp`` node with the op's tensors as inputs; the handles below
read the shapes from those inputs.
"""
import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Dict

import torch
from torch import nn

from .. import ops
from ..ops.flops import cross_selective_scan_flops, selective_scan_flop_handle

# The backends' own autograd Functions: seen in a trace only when something calls a backend
# directly instead of the dispatcher; counting them would miss the ops around them.
BACKEND_SCAN_FUNCTIONS = ('LinearScan', 'SelectiveScanTorch', '_SelectiveScanTriton',
                          '_CrossScanTriton', 'SelectiveScanFn', 'MambaInnerFn')


def _absent(t):
    """Marker for an optional tensor argument that was None (a 1-D empty tensor)."""
    return t.new_empty(0)


def _opt(t):
    return None if t.dim() == 1 and t.numel() == 0 else t


@contextlib.contextmanager
def _untraced():
    """The tracer records autograd Functions called inside another Function's forward (the
    backends' own Functions): pause it so that the wrapper stays a single node."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


class SelectiveScanOp(torch.autograd.Function):
    """Forward-only wrapper: ``ops.selective_scan`` as one traced node (inputs u, delta, A, B,
    C, D, z, delta_bias; None arguments passed as 1-D empty tensors)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                backend, fn):
        with _untraced():
                return fn(u, delta, A, B, C, D=_opt(D), z=_opt(z), delta_bias=_opt(delta_bias),
                      delta_softplus=delta_softplus, return_last_state=return_last_state,
                      backend=backend)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError('opaque_scans() is for counting (forward only); call the model '
                           'outside it to train')


class CrossSelectiveScanOp(torch.autograd.Function):
    """Forward-only wrapper: ``ops.cross_selective_scan`` as one traced node (inputs x, delta,
    A, B, C, D, delta_bias)."""

    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last, backend,
                fn):
        with _untraced():
            return fn(x, delta, A, B, C, D=_opt(D), delta_bias=_opt(delta_bias),
                      delta_softplus=delta_softplus, channels_last=channels_last,
                      backend=backend)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError('opaque_scans() is for counting (forward only); call the model '
                           'outside it to train')


def _counted_selective_scan(fn):
    def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, backend=None):
        D, z, delta_bias = (_absent(u) if t is None else t for t in (D, z, delta_bias))
        return SelectiveScanOp.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                     return_last_state, backend, fn)
    return selective_scan


def _counted_cross_selective_scan(fn):
    def cross_selective_scan(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                             channels_last=False, backend=None):
        D, delta_bias = (_absent(x) if t is None else t for t in (D, delta_bias))
        return CrossSelectiveScanOp.apply(x, delta, A, B, C, D, delta_bias, delta_softplus,
                                          channels_last, backend, fn)
    return cross_selective_scan


@contextlib.contextmanager
def opaque_scans():
    """Within the block, every module global bound to ``mmvision_ssm.ops.selective_scan`` or
    ``cross_selective_scan`` (model files import them by name) calls the traced wrappers."""
    originals = {id(ops.selective_scan): _counted_selective_scan(ops.selective_scan),
                 id(ops.cross_selective_scan): _counted_cross_selective_scan(
                     ops.cross_selective_scan)}
    patched = []
    for mod in list(sys.modules.values()):
        namespace = getattr(mod, '__dict__', None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            if callable(value) and id(value) in originals:
                patched.append((namespace, name, value))
                namespace[name] = originals[id(value)]
    try:
        yield
    finally:
        for namespace, name, value in patched:
            namespace[name] = value


def _shape(v):
    try:
        return tuple(v.type().sizes())
    except Exception:  # not a complete tensor type
        return None


class _Shape:
    def __init__(self, shape):
        self.shape = shape


def selective_scan_op_handle(inputs, outputs):
    """Handle for ``prim::PythonOp.SelectiveScanOp`` (see :func:`opaque_scans`)."""
    shapes = [_shape(v) for v in inputs[:8]]
    args = [None if s is None or (len(s) == 1 and s[0] == 0) else _Shape(s) for s in shapes]
    return Counter({'selective_scan': selective_scan_flop_handle(args)})


def cross_selective_scan_op_handle(inputs, outputs):
    """Handle for ``prim::PythonOp.CrossSelectiveScanOp``: b from x, d and n from A (4*d, n),
    h*w = x.numel() / (b*d) whatever x's layout."""
    x, A, D = (_shape(inputs[i]) for i in (0, 2, 5))
    b, d, n = x[0], A[0] // 4, A[1]
    hw = prod(x) // (b * d)
    with_D = D is not None and D != (0,)
    return Counter({'selective_scan': cross_selective_scan_flops(b, d, hw, 1, n, with_D=with_D)})


def sdpa_flop_handle(inputs, outputs):
    """``aten::scaled_dot_product_attention``: two matmuls, B*Lq*Lk*(E + Ev) multiply-adds."""
    q, k, v = (_shape(inputs[i]) for i in range(3))
    batch = prod(q[:-2])
    return Counter({'scaled_dot_product_attention': batch * q[-2] * k[-2] * (q[-1] + v[-1])})


def conv_mode_flop_handle(inputs, outputs):
    """``aten::_convolution_mode`` (a convolution with ``padding='same'/'valid'``, which fvcore's
    ``aten::_convolution`` handle misses): batch * out positions * weight size multiply-adds."""
    x, wt, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    return Counter({'conv': x[0] * prod(wt) * prod(out[2:])})


def _backend_function_handle(name):
    def handle(inputs, outputs):
        raise RuntimeError(
            f'the trace contains the scan backend Function {name!r}: a module calls a scan '
            'backend directly. Call mmvision_ssm.ops.selective_scan / cross_selective_scan (the '
            'dispatcher) so that the whole scan is counted with its documented convention.')
    return handle


def extra_op_handles() -> Dict[str, object]:
    """The handles :func:`count_flops` adds to mmengine's ``FlopAnalyzer``."""
    handles = {
        'prim::PythonOp.SelectiveScanOp': selective_scan_op_handle,
        'prim::PythonOp.CrossSelectiveScanOp': cross_selective_scan_op_handle,
        'aten::scaled_dot_product_attention': sdpa_flop_handle,
        'aten::_convolution_mode': conv_mode_flop_handle,
    }
    for name in BACKEND_SCAN_FUNCTIONS:
        handles[f'prim::PythonOp.{name}'] = _backend_function_handle(name)
    return handles


@dataclass
class FlopResult:
    total: int
    params: int
    by_module: Dict[str, int]            # every module name ('' is the root) -> FLOPs
    by_operator: Dict[str, int]          # op name -> FLOPs (whole model)
    params_by_module: Dict[str, int]
    unsupported: Dict[str, int] = field(default_factory=dict)  # op -> occurrences (uncounted)

    def rows(self, depth=1):
        """[(name, params, flops)] of the modules at most ``depth`` levels below the root, in
        model order, leaving out those with neither parameters nor FLOPs."""
        names = [n for n in self.params_by_module if n and n.count('.') < depth]
        names += [n for n in self.by_module if n and n.count('.') < depth and n not in names]
        rows = [(n, self.params_by_module.get(n, 0), self.by_module.get(n, 0)) for n in names]
        return [r for r in rows if r[1] or r[2]]


def count_flops(model: nn.Module, inputs: tuple, warn_unsupported: bool = False) -> FlopResult:
    """Trace ``model(*inputs)`` once (no grad) and count FLOPs with the extra handles."""
    from mmengine.analysis import FlopAnalyzer, parameter_count

    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**extra_op_handles())
    analyzer.unsupported_ops_warnings(warn_unsupported).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with torch.no_grad(), opaque_scans():
        total = analyzer.total()
        by_module = dict(analyzer.by_module())
        by_operator = dict(analyzer.by_operator())
        unsupported = dict(analyzer.unsupported_ops())
    params = parameter_count(model)
    return FlopResult(total=int(total), params=int(params['']), by_module=by_module,
                      by_operator=by_operator, params_by_module=dict(params),
                      unsupported=unsupported)


def _synthetic_data_samples(scope, h, w):
    """One data sample with the meta-information the heads read in 'tensor' mode."""
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0), img_id=0)
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta)]
    from mmseg.structures import SegDataSample
    return [SegDataSample(metainfo=meta)]


def build_model_from_cfg(cfg):
    """The model of an mmdet/mmseg config, built with mmengine's registry in the config's scope,
    in eval mode with SyncBN reverted (no weights loaded, no dataset needed)."""
    import mmvision_ssm  # noqa: F401  (registers the backbones)
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(cfg.get('default_scope'))
    model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def config_flops(cfg, shape, backbone_only=False, batch=1) -> FlopResult:
    """FLOPs of ``cfg.model`` on a synthetic (batch, 3, H, W) input.

    The whole model runs in its 'tensor' mode (``model._forward``: backbone, neck and heads up
    to the raw head outputs -- for two-stage detectors the RoI heads on the RPN's proposals);
    ``backbone_only`` counts ``model.backbone`` alone.
    """
    h, w = shape
    if h < 1 or w < 1:
        raise ValueError(f'--shape must be positive, got {h} x {w}')
    model = build_model_from_cfg(cfg)
    channels = cfg.model.get('backbone', {}).get('in_channels', 3)
    x = torch.randn(batch, channels, h, w)
    if backbone_only:
        if not hasattr(model, 'backbone'):
            raise ValueError(f'{type(model).__name__} has no backbone attribute')
        return count_flops(model.backbone, (x, ))
    if not hasattr(model, '_forward'):
        raise ValueError(f'{type(model).__name__} has no _forward (tensor mode); use '
                         '--backbone-only')
    samples = _synthetic_data_samples(cfg.get('default_scope'), h, w) * batch
    model.forward = lambda inputs: model._forward(inputs, samples)
    try:
        return count_flops(model, (x, ))
    finally:
        del model.forward
