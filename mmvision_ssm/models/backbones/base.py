"""What every dense-prediction backbone here shares: output selection, freezing, norm_eval,
and loading pretrained weights strictly. Plain PyTorch: no OpenMMLab import.

A family subclasses :class:`DenseBackbone`, builds its modules, then calls
``self._finish_init()``. It tells the base class its layout through three hooks:
``_stem_modules()``, ``_stage_modules(i)`` and ``convert_checkpoint(state_dict)``.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import LoadReport, load_state_dict_checked, read_checkpoint
from ..cuda_graph import GRAPHED_LN_MIN_TRITON_NUMEL_GRAD, InferenceGraphs, TrainingGraphs
from ..layers import LayerNorm


def check_arch(arch, arch_settings: dict, family: str) -> dict:
    """Resolve ``arch`` (a name or a dict of explicit settings) with a useful error."""
    if isinstance(arch, dict):
        return dict(arch)
    if arch not in arch_settings:
        raise ValueError(f'{family}: unknown arch={arch!r}; valid archs are '
                         f'{sorted(arch_settings)} (or pass a dict of explicit settings)')
    return dict(arch_settings[arch])


def check_out_indices(out_indices: Sequence[int], num_stages: int, family: str) -> tuple:
    """Normalise negative indices and reject anything outside ``range(num_stages)``."""
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    result = []
    for i in out_indices:
        if not -num_stages <= i < num_stages:
            raise ValueError(f'{family}: out_indices={tuple(out_indices)} has {i}, but this arch '
                             f'has {num_stages} stages: use values in 0..{num_stages - 1}')
        result.append(i % num_stages)
    if len(set(result)) != len(result) or result != sorted(result):
        raise ValueError(f'{family}: out_indices={tuple(out_indices)} must be increasing '
                         'and without repeats')
    return tuple(result)


class DenseBackbone(nn.Module):
    """Base class of the backbones: a tuple of NCHW maps at ``out_indices``.

    Args:
        out_indices: stages whose outputs are returned.
        frozen_stages: -1 freezes nothing; 0 the stem; k > 0 the stem and stages 0..k-1
            (the mmdet Swin convention). Frozen parts stay in eval mode and get no gradients.
        norm_eval: keep BatchNorm layers in eval mode while training (frozen statistics).
        pretrained: path of a checkpoint (official layout or ours), a shortcut for
            ``init_cfg=dict(type='Pretrained', checkpoint=path)``.
        init_cfg: mmengine-style dict; ``type='Pretrained'`` with ``checkpoint`` (and optional
            ``strict=False`` for an intended partial load) is honoured by :meth:`init_weights`.
        cuda_graph: run the training forward and backward on CUDA as captured CUDA graphs, one
            per input signature (:mod:`mmvision_ssm.models.cuda_graph`: what it requires).
            Host-bound training steps then run at the GPU's speed; so does inference (no
            autograd), whose outputs are copied out of the graph for the caller.
            The LayerNorms then take the Triton kernels from a lower size
            (``GRAPHED_LN_MIN_TRITON_NUMEL_GRAD``): without host cost they are the faster.
    """

    #: glob patterns of official keys a dense backbone drops (classification head, final norm)
    dropped_keys: tuple = ()
    #: glob patterns of our keys that official checkpoints do not have (per-output norms)
    initialised_keys: tuple = ()
    num_stages: int = 4

    def __init__(self, out_indices=(0, 1, 2, 3), frozen_stages: int = -1, norm_eval: bool = False,
                 pretrained: str | None = None, init_cfg: dict | None = None,
                 cuda_graph: bool = False):
        super().__init__()
        family = type(self).__name__
        self.out_indices = check_out_indices(out_indices, self.num_stages, family)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'{family}: frozen_stages={frozen_stages} must be in '
                             f'-1..{self.num_stages} (-1 freezes nothing)')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if pretrained is not None and init_cfg is not None:
            raise ValueError(f'{family}: give either pretrained or init_cfg, not both')
        if pretrained is not None:
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        self.init_cfg = init_cfg
        self.load_report: LoadReport | None = None
        self.cuda_graph = cuda_graph
        self._training_graphs = TrainingGraphs() if cuda_graph else None
        self._inference_graphs = InferenceGraphs() if cuda_graph else None

    # --- hooks for the families -------------------------------------------------------------
    def _stem_modules(self) -> Iterable[nn.Module]:
        raise NotImplementedError

    def _stage_modules(self, i: int) -> Iterable[nn.Module]:
        """Modules of stage ``i``, including its downsampling and its output norm."""
        raise NotImplementedError

    @classmethod
    def convert_checkpoint(cls, state_dict: dict) -> dict:
        """Map an official state dict to this implementation's keys (identity by default)."""
        return dict(state_dict)

    # --- shared behaviour -----------------------------------------------------------------
    def _finish_init(self):
        if self.cuda_graph:
            if any(getattr(m, 'with_cp', False) for m in self.modules()):
                # checkpointing saves and restores the RNG state, which a graph capture forbids
                raise ValueError(f'{type(self).__name__}: cuda_graph=True cannot be combined '
                                 'with with_cp=True; set one of them to False')
            for m in self.modules():
                if isinstance(m, LayerNorm) and m.min_triton_numel_grad is None:
                    m.min_triton_numel_grad = GRAPHED_LN_MIN_TRITON_NUMEL_GRAD
        self._freeze_stages()

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield from self._stem_modules()
        for i in range(self.frozen_stages):
            yield from self._stage_modules(i)

    def _freeze_stages(self):
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def load_pretrained(self, checkpoint, strict: bool = True,
                        logger: Callable[[str], None] | None = print) -> LoadReport:
        """Load an official (or already converted) checkpoint and return the key report."""
        state = self.convert_checkpoint(read_checkpoint(checkpoint))
        self.load_report = load_state_dict_checked(
            self, state, dropped=self.dropped_keys, initialised=self.initialised_keys,
            strict=strict, logger=logger)
        return self.load_report

    def init_weights(self):
        """Called by mmengine when the detector/segmentor is initialised."""
        cfg = self.init_cfg or {}
        if cfg.get('type') == 'Pretrained':
            if 'checkpoint' not in cfg:
                raise ValueError(f"{type(self).__name__}: init_cfg type='Pretrained' needs a "
                                 "'checkpoint' path")
            self.load_pretrained(cfg['checkpoint'], strict=cfg.get('strict', True))
        elif cfg:
            raise ValueError(f'{type(self).__name__}: init_cfg={cfg} is not supported; use '
                             "dict(type='Pretrained', checkpoint=PATH) or None")

    def forward_features(self, x: torch.Tensor) -> tuple:
        raise NotImplementedError

    @staticmethod
    def output_map(x: torch.Tensor) -> torch.Tensor:
        """An output map as ``forward`` returns it (contiguous NCHW), made so where the family
        produces it: its normed, usually channels-last, original is then freed at once. Copied
        only at the end of the forward, every output existed twice at that moment, which was
        the training step's memory peak (VMamba-T, MLLA-T, MambaVision-T: 92-138 MiB at 224^2
        b64, docs/benchmarks.md run Y2)."""
        return x.contiguous()

    def forward(self, x: torch.Tensor) -> tuple:
        if self.cuda_graph and x.is_cuda and not torch.compiler.is_compiling():
            if not torch.is_grad_enabled():
                out = self._inference_graphs(self, x)
            elif self.training:
                out = self._training_graphs(self, x)
            else:  # eval mode with autograd: eager
                out = None
            if out is not None:
                return tuple(out)
        return self.forward_eager(x)

    def forward_eager(self, x: torch.Tensor) -> tuple:
        # contiguous NCHW, whatever layout the family computes in: mmcv's RoIAlign reads the
        # maps' raw memory as NCHW (no stride handling, CPU and CUDA), so channels-last maps --
        # which the FPN's convs pass on -- silently scramble Mask R-CNN's RoI features. The
        # families return output_map()s already; this keeps the guarantee for any subclass.
        # (A list, not a generator: Dynamo cannot resume a generator after a graph break.)
        return tuple([o.contiguous() for o in self.forward_features(x)])
