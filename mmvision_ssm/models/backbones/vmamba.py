"""VMamba (Liu et al., "VMamba: Visual State Space Model") as a dense-prediction backbone.

Two families, both loading the official ImageNet checkpoints of MzeroMiko/VMamba strictly:

* ``tiny`` / ``small`` / ``base`` -- the v2 models used by the official detection and
  segmentation configs (``configs/vssm1``): SS2D ``forward_type='v05_noz'`` (no gate, d_state 1,
  3x3 depthwise conv without bias), an MLP per block, a two-conv stem ("patch-embed v2") and
  3x3 stride-2 conv downsampling ("downsample v3").
* ``v0_tiny`` / ``v0_small`` / ``v0_base`` -- the vanilla VMamba of the first release: gated SS2D
  with d_state 16, no MLP, a 4x4 patchify stem and Swin-style patch merging.

Layout: tokens stay channels-last ``(B, H, W, C)`` from the stem to the outputs, so every linear
layer and LayerNorm works on contiguous memory without permutes (the LayerNorms run on our
kernels, :mod:`mmvision_ssm.ops.layer_norm`; those feeding a Linear emit the autocast dtype);
the depthwise and strided convs see the same memory as a ``channels_last`` NCHW tensor (a free
``permute`` view). The returned maps are copied to contiguous NCHW once: OpenMMLab ops such
as mmcv's RoIAlign index raw NCHW memory. The four-way
2D selective scan (SS2D) is one call of :func:`mmvision_ssm.ops.cross_selective_scan`: the
per-direction projections that the official code applies after cross-scanning the tokens act on
each token alone, so we apply them at each pixel before the scan (same numbers, no four copies
of the feature map).

Official -> ours key names are in :meth:`VMamba.convert_checkpoint`.
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...ops import cross_selective_scan, cross_selective_scan_dt_proj
from ...ops.dwconv_silu import dwconv_silu
from ..layers import LayerNorm, init_linear_and_layernorm, pre_norm_mlp
from .base import DenseBackbone, check_arch

# Official VMamba uses torch's default LayerNorm eps everywhere (ln and ln2d).
LN_EPS = 1e-5

_V2_DEFAULTS = dict(ssm_ratio=2.0, d_state=1, dt_rank='auto', d_conv=3, conv_bias=False,
                    forward_type='v05_noz', mlp_ratio=4.0, patch_embed='v2', downsample='v3',
                    drop_path_rate=0.2)
_V0_DEFAULTS = dict(ssm_ratio=2.0, d_state=16, dt_rank='auto', d_conv=3, conv_bias=True,
                    forward_type='v0', mlp_ratio=0.0, patch_embed='v1', downsample='v1',
                    drop_path_rate=0.2)

# Official configs: classification/configs/vssm/vmambav2v_tiny_224.yaml (T, "s1l8"),
# vmambav2_{small,base}_224.yaml (S/B, "s2l15"), vmambav0_{tiny,small,base}_224.yaml (vanilla).
ARCH_SETTINGS = {
    'tiny': dict(_V2_DEFAULTS, embed_dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0,
                 drop_path_rate=0.2),
    'small': dict(_V2_DEFAULTS, embed_dims=96, depths=(2, 2, 15, 2), ssm_ratio=2.0,
                  drop_path_rate=0.3),
    'base': dict(_V2_DEFAULTS, embed_dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0,
                 drop_path_rate=0.6),
    'v0_tiny': dict(_V0_DEFAULTS, embed_dims=96, depths=(2, 2, 9, 2), drop_path_rate=0.2),
    'v0_small': dict(_V0_DEFAULTS, embed_dims=96, depths=(2, 2, 27, 2), drop_path_rate=0.3),
    'v0_base': dict(_V0_DEFAULTS, embed_dims=128, depths=(2, 2, 27, 2), drop_path_rate=0.5),
}
_ARCH_KEYS = set(_V2_DEFAULTS) | {'embed_dims', 'depths'}


def _resolve_arch(arch) -> dict:
    settings = check_arch(arch, ARCH_SETTINGS, 'VMamba')
    if isinstance(arch, dict):
        unknown = set(settings) - _ARCH_KEYS
        if unknown or not {'embed_dims', 'depths'} <= set(settings):
            raise ValueError(f'VMamba: an arch dict needs embed_dims and depths and may set '
                             f'{sorted(_ARCH_KEYS)}; got unknown keys {sorted(unknown)}')
        base = _V0_DEFAULTS if settings.get('forward_type') == 'v0' else _V2_DEFAULTS
        settings = {**base, **settings}
    if settings['forward_type'] not in ('v0', 'v05_noz'):
        raise ValueError(f"VMamba: forward_type={settings['forward_type']!r} is not supported; "
                         "use 'v05_noz' (VMamba v2) or 'v0' (vanilla VMamba)")
    for key, valid in (('patch_embed', ('v1', 'v2')), ('downsample', ('v1', 'v3'))):
        if settings[key] not in valid:
            raise ValueError(f'VMamba: {key}={settings[key]!r}; valid values are {valid}')
    return settings


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W) view; contiguous input gives a channels_last tensor."""
    return x.permute(0, 3, 1, 2)


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


# --- stems and downsampling (channels-last in, channels-last out) ---------------------------
def _conv_norm(conv: nn.Conv2d, norm: LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm`` over the channels of ``conv(x)`` (NCHW in, channels-last out). Without autograd
    the conv's bias goes into the norm's kernel: ATen's cuDNN convolution adds a bias in a
    separate pass over the map (five such passes, 2.4 % of VMamba-T's 224^2 b128 inference on
    the GPU, run AO)."""
    if conv.bias is None or torch.is_grad_enabled():
        return norm(_to_nhwc(conv(x)))
    y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return norm(_to_nhwc(y), input_bias=conv.bias)


class PatchEmbedV1(nn.Module):
    """4x4 stride-4 patchify conv + LayerNorm (vanilla VMamba). Pads to a multiple of 4."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dims, eps=LN_EPS)

    def forward(self, x):
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return self.norm(_to_nhwc(x))


class PatchEmbedV2(nn.Module):
    """Two 3x3 stride-2 convs, each followed by LayerNorm, GELU in between (VMamba v2)."""

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        hidden = embed_dims // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1)
        self.norm1 = LayerNorm(hidden, eps=LN_EPS, low_precision_output=True)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, embed_dims, 3, stride=2, padding=1)
        self.norm2 = LayerNorm(embed_dims, eps=LN_EPS)

    def forward(self, x):
        x = self.act(_conv_norm(self.conv1, self.norm1,
                                x.contiguous(memory_format=torch.channels_last)))
        return _conv_norm(self.conv2, self.norm2, _to_nchw(x))


class ConvDownsample(nn.Module):
    """3x3 stride-2 conv + LayerNorm (VMamba v2 "downsample v3")."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = LayerNorm(out_dim, eps=LN_EPS)

    def forward(self, x):
        return _conv_norm(self.conv, self.norm, _to_nchw(x))


class PatchMerging(nn.Module):
    """Swin patch merging (vanilla VMamba): 2x2 neighbours -> LayerNorm -> linear. Pads odd sizes
    at the bottom/right, as the official code does."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = LayerNorm(4 * dim, eps=LN_EPS, low_precision_output=True)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # official channel order: (even row, even col), (odd, even), (even, odd), (odd, odd)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


# --- SS2D -------------------------------------------------------------------------------------
class SS2D(nn.Module):
    """2D selective scan over four directions (row-major, column-major and their reverses).

    Per direction k the official code projects each scanned token with ``x_proj_weight[k]`` to
    (dt_rank + 2 d_state) values, expands the dt part with ``dt_proj_weight[k]``, runs a
    selective scan and merges the four outputs back onto the grid. The projections are per-token,
    so we compute them at each pixel and hand the spatial maps to the fused cross-scan op.

    Args:
        dim: model channels. ssm_ratio: inner channels / dim. d_state: SSM state size.
        dt_rank: rank of the dt projection ('auto' = ceil(dim / 16)).
        d_conv: depthwise conv kernel size. conv_bias: bias in that conv.
        gated: multiply the output by SiLU(z) from a second half of ``in_proj`` (vanilla v0).
        scan_backend: forwarded to the scan op (None: chosen by device/dtype).
        recompute_delta: keep dts, not delta, for the backward (see :class:`VMamba`).
    """

    num_directions = 4

    def __init__(self, dim: int, ssm_ratio: float = 2.0, d_state: int = 1, dt_rank='auto',
                 d_conv: int = 3, conv_bias: bool = False, gated: bool = False,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 scan_backend: str | None = None, recompute_delta: bool = True):
        super().__init__()
        k = self.num_directions
        inner = int(ssm_ratio * dim)
        self.d_inner, self.d_state, self.gated = inner, int(d_state), gated
        self.dt_rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        self.scan_backend = scan_backend
        self.recompute_delta = recompute_delta

        self.in_proj = nn.Linear(dim, inner * (2 if gated else 1), bias=False)
        self.conv = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner,
                              bias=conv_bias)
        self.act = nn.SiLU()
        # Per-direction projections, stacked as in the official checkpoints.
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * self.d_state, inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(k, inner, self.dt_rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(k, inner))
        self.A_log = nn.Parameter(torch.empty(k * inner, self.d_state))
        self.D = nn.Parameter(torch.empty(k * inner))
        self.out_norm = LayerNorm(inner, eps=LN_EPS, low_precision_output=True)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        # masks the stacked dt projections into one block-diagonal weight (not a parameter)
        self.register_buffer('direction_eye', torch.eye(k).view(k, 1, k, 1), persistent=False)
        self._init_ssm(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_ssm(self, dt_min, dt_max, dt_init_floor):
        """Mamba's initialisation: S4D-real A, D = 1, dt in [dt_min, dt_max] via the bias."""
        bound = self.d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        nn.init.uniform_(self.dt_proj_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.dt_proj_bias.shape) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_log.copy_(torch.log(a).expand_as(self.A_log))
        self.D.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, dim) -> (B, H, W, dim)."""
        x = self.in_proj(x)
        if self.gated:
            x, z = x.chunk(2, dim=-1)
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            # keeps only the conv's input for the backward (recomputes the conv there): one
            # map less per block than autograd's conv + SiLU (~190 MiB of VMamba-T's b64 peak)
            x = dwconv_silu(x, self.conv.weight, self.conv.bias, self.conv.padding[0])
        else:
            x = _to_nhwc(self.act(self.conv(_to_nchw(x))))  # depthwise conv, channels_last memory

        b, h, w, d = x.shape
        k, r, n = self.num_directions, self.dt_rank, self.d_state
        x_dbl = F.linear(x, self.x_proj_weight.reshape(k * (r + 2 * n), d)).view(b, h, w, k, -1)
        dts, Bs, Cs = x_dbl.split([r, n, n], dim=-1)
        # all four dt projections as one GEMM with a block-diagonal weight: delta is written once,
        # already in the (b, h, w, 4, d) layout the scan reads (the zero blocks add exact zeros).
        # The weight is one masked broadcast, (4, d, 1, r) x (4, 1, 4, 1) -> (4d, 4r): two
        # kernels forward and backward, where torch.block_diag launches one per block.
        dt_weight = (self.dt_proj_weight.unsqueeze(2) * self.direction_eye).view(k * d, k * r)
        dts, A = dts.reshape(b, h, w, k * r), -torch.exp(self.A_log.float())
        scan_args = dict(D=self.D.float(), delta_bias=self.dt_proj_bias.reshape(-1).float(),
                         delta_softplus=True, backend=self.scan_backend)
        if self.recompute_delta and torch.is_grad_enabled():
            # the scan keeps the dt projection's input for its backward, not delta (4 r
            # instead of 4 d values a pixel), and rebuilds delta there
            y = cross_selective_scan_dt_proj(x, dts, dt_weight, A, Bs, Cs, **scan_args)
        else:
            delta = F.linear(dts, dt_weight).view(b, h, w, k, d)
            y = cross_selective_scan(x, delta, A, Bs, Cs, channels_last=True, **scan_args)
        y = self.out_norm(y.to(x.dtype))
        if self.gated:
            y = y * self.act(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """x + SS2D(LN(x)), then x + MLP(LN(x)) when ``mlp_ratio > 0``; channels-last."""

    def __init__(self, dim: int, drop_path: float = 0.0, mlp_ratio: float = 4.0,
                 fused_mlp: bool = True, **ssm_kwargs):
        super().__init__()
        self.fused_mlp = fused_mlp
        self.norm1 = LayerNorm(dim, eps=LN_EPS, low_precision_output=True)
        self.ssm = SS2D(dim, **ssm_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = LayerNorm(dim, eps=LN_EPS, low_precision_output=True)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        else:
            self.norm2 = self.mlp = None

    def forward(self, x):
        x = x + self.drop_path(self.ssm(self.norm1(x)))
        if self.mlp is not None:
            x = x + self.drop_path(pre_norm_mlp(self.norm2, self.mlp, x, self.fused_mlp))
        return x


class VSSStage(nn.Module):
    """Blocks of one resolution, then the downsampling to the next one (official layout)."""

    def __init__(self, blocks: list, downsample: nn.Module | None, with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.with_cp = with_cp

    def forward_blocks(self, x):
        for blk in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x


# --- the backbone -----------------------------------------------------------------------------
class VMamba(DenseBackbone):
    """VMamba backbone: a tuple of NCHW maps at strides 4, 8, 16, 32 (``out_indices``).

    Args:
        arch: 'tiny', 'small', 'base' (VMamba v2, as in the official detection/segmentation
            configs), 'v0_tiny', 'v0_small', 'v0_base' (vanilla VMamba), or a dict with
            ``embed_dims`` and ``depths`` and optionally ``ssm_ratio``, ``d_state``, ``dt_rank``,
            ``d_conv``, ``conv_bias``, ``forward_type`` ('v05_noz' | 'v0'), ``mlp_ratio``,
            ``patch_embed`` ('v1' | 'v2'), ``downsample`` ('v1' | 'v3'), ``drop_path_rate``.
        in_channels: image channels.
        drop_path_rate: stochastic depth at the last block (None: the arch's value).
        with_cp: activation checkpointing per block (saves memory, recomputes in backward).
        cuda_graph: graphed training forward/backward (:class:`DenseBackbone`).
        scan_backend: force a scan backend of :mod:`mmvision_ssm.ops` (None: automatic).
        recompute_delta: in training, the cross scan keeps the dt projection's input and
            rebuilds delta in its backward with one GEMM, instead of keeping delta (4 dt_rank
            instead of 4 * d_inner values a pixel: 4 maps of d_inner less per block; Triton
            backend, :func:`mmvision_ssm.ops.cross_selective_scan_dt_proj`). Same values and
            gradients; VMamba-T's training peak falls by ~17 % (0.50 GiB at 1344x800 b2, 0.76
            GiB at 224^2 b64) for ~1 % of throughput (docs/benchmarks.md, run BN).
        fused_mlp: train the blocks' norm + MLP through ``ops.norm_mlp`` (keeps half the MLP's
            activations for backward; same outputs and gradients, see
            ``models.layers.pre_norm_mlp``); False runs the modules.
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see :class:`DenseBackbone`.
            Stages after the last of ``out_indices`` are built (for strict loading) but not run.
    """

    arch_settings = ARCH_SETTINGS
    #: the official classification head and its final norm
    dropped_keys = ('classifier.*',)
    #: one LayerNorm per returned map, new for dense prediction
    initialised_keys = ('out_norms.*',)

    def __init__(self, arch='tiny', in_channels: int = 3, out_indices=(0, 1, 2, 3),
                 drop_path_rate: float | None = None, with_cp: bool = False,
                 frozen_stages: int = -1, norm_eval: bool = False, scan_backend: str | None = None,
                 fused_mlp: bool = True, pretrained: str | None = None,
                 init_cfg: dict | None = None, cuda_graph: bool = False,
                 recompute_delta: bool = True):
        s = _resolve_arch(arch)
        self.num_stages = len(s['depths'])
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg,
                         cuda_graph=cuda_graph)
        self.arch = s
        dims = s['embed_dims']
        if isinstance(dims, int):
            dims = [dims * 2 ** i for i in range(self.num_stages)]
        self.dims = list(dims)
        self.out_channels = [self.dims[i] for i in self.out_indices]
        self.feature_info = [dict(num_chs=self.dims[i], reduction=4 * 2 ** i, module=f'stages.{i}')
                             for i in range(self.num_stages)]
        rate = s['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        # on the CPU even under a torch.device('meta') context: the rates become python floats
        dpr = torch.linspace(0, rate, sum(s['depths']), device='cpu').split(list(s['depths']))

        if s['patch_embed'] == 'v2':
            self.patch_embed = PatchEmbedV2(in_channels, self.dims[0])
        else:
            self.patch_embed = PatchEmbedV1(in_channels, self.dims[0])
        ssm_kwargs = dict(ssm_ratio=s['ssm_ratio'], d_state=s['d_state'], dt_rank=s['dt_rank'],
                          d_conv=s['d_conv'], conv_bias=s['conv_bias'],
                          gated=s['forward_type'] == 'v0', scan_backend=scan_backend,
                          recompute_delta=recompute_delta)
        self.stages = nn.ModuleList()
        for i, depth in enumerate(s['depths']):
            blocks = [VSSBlock(self.dims[i], drop_path=float(dpr[i][j]), mlp_ratio=s['mlp_ratio'],
                               fused_mlp=fused_mlp, **ssm_kwargs) for j in range(depth)]
            downsample = None
            if i < self.num_stages - 1:
                down_cls = ConvDownsample if s['downsample'] == 'v3' else PatchMerging
                downsample = down_cls(self.dims[i], self.dims[i + 1])
            self.stages.append(VSSStage(blocks, downsample, with_cp=with_cp))
        self.out_norms = nn.ModuleList(
            LayerNorm(self.dims[i], eps=LN_EPS) if i in self.out_indices else nn.Identity()
            for i in range(self.num_stages))
        self.apply(init_linear_and_layernorm)
        self._finish_init()

    # --- DenseBackbone hooks ---
    def _stem_modules(self):
        return [self.patch_embed]

    def _stage_modules(self, i: int):
        return [self.stages[i], self.out_norms[i]]

    def _output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage i's normed output as a contiguous NCHW map (``DenseBackbone.output_map``);
        without autograd the norm's kernel writes it so (no separate permuting copy)."""
        if torch.is_grad_enabled():
            return self.output_map(_to_nchw(self.out_norms[i](x)))
        return self.out_norms[i].forward_nchw(x)

    def forward_features(self, x: torch.Tensor) -> list:
        x = self.patch_embed(x)
        outs = []
        last = self.out_indices[-1]
        for i, stage in enumerate(self.stages):
            x = stage.forward_blocks(x)
            if i in self.out_indices:
                outs.append(self._output(i, x))
            if i == last:
                break
            x = stage.downsample(x)
        return outs

    # --- official weights ---
    @classmethod
    def convert_checkpoint(cls, state_dict: dict) -> dict:
        """Official VMamba keys (current and older releases) -> ours. Keys already in our
        layout pass through; a detector checkpoint (``backbone.*``) is reduced to its backbone."""
        sd = dict(state_dict)
        if any(k.startswith('backbone.') for k in sd):
            sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
        if sd and all(k.startswith('module.') for k in sd):
            sd = {k[len('module.'):]: v for k, v in sd.items()}
        stem_v2 = any(k.startswith('patch_embed.5.') for k in sd)
        out = {}
        for key, value in sd.items():
            key = _convert_key(key, stem_v2)
            if value.ndim == 4 and key.endswith(_LINEAR_WEIGHTS):
                value = value.flatten(1)  # official Linear2d weights may be saved as 1x1 convs
            out[key] = value
        return out


def infer_arch(state_dict: Mapping) -> str:
    """Name of the arch whose layout a state dict (official or ours) has, or a ValueError."""
    sd = VMamba.convert_checkpoint(state_dict)
    depths, stage = [], 0
    while any(k.startswith(f'stages.{stage}.blocks.') for k in sd):
        depths.append(len({k.split('.')[3] for k in sd if k.startswith(f'stages.{stage}.blocks.')}))
        stage += 1
    found = dict(depths=tuple(depths))
    if depths:
        prefix = 'stages.0.blocks.0.'
        found['embed_dims'] = sd[prefix + 'norm1.weight'].shape[0]
        inner = sd[prefix + 'ssm.x_proj_weight'].shape[-1]
        found['forward_type'] = ('v0' if sd[prefix + 'ssm.in_proj.weight'].shape[0] == 2 * inner
                                 else 'v05_noz')
        found['ssm_ratio'] = inner / found['embed_dims']
        found['d_state'] = sd[prefix + 'ssm.A_log'].shape[-1]
    for name, s in ARCH_SETTINGS.items():
        if all(s[k] == v for k, v in found.items()) and len(found) > 1:
            return name
    raise ValueError(f'VMamba: no arch has the layout of this checkpoint ({found}); valid archs '
                     f'are {sorted(ARCH_SETTINGS)}')


_LINEAR_WEIGHTS = ('in_proj.weight', 'out_proj.weight', 'mlp.fc1.weight', 'mlp.fc2.weight',
                   'reduction.weight')

# Names the official loader (VSSM._load_from_state_dict) renames from early releases.
_OLD_NAMES = [
    (re.compile(r'^patch_embed\.proj\.'), 'patch_embed.0.'),
    (re.compile(r'^patch_embed\.norm\.'), 'patch_embed.2.'),
    (re.compile(r'^(layers\.\d+\.blocks\.\d+\.)ln_1\.'), r'\1norm.'),
    (re.compile(r'^(layers\.\d+\.blocks\.\d+\.)self_attention\.'), r'\1op.'),
    (re.compile(r'^norm\.'), 'classifier.norm.'),
    (re.compile(r'^head\.'), 'classifier.head.'),
]
_STEM_V1 = {'0': 'proj', '2': 'norm'}
_STEM_V2 = {'0': 'conv1', '2': 'norm1', '5': 'conv2', '7': 'norm2'}
_SSM_PARAMS = {'conv2d': 'conv', 'dt_projs_weight': 'dt_proj_weight',
               'dt_projs_bias': 'dt_proj_bias', 'A_logs': 'A_log', 'Ds': 'D'}
_DOWNSAMPLE_V3 = {'1': 'conv', '3': 'norm'}


def _convert_key(key: str, stem_v2: bool) -> str:
    for pattern, repl in _OLD_NAMES:
        key = pattern.sub(repl, key)
    m = re.match(r'^patch_embed\.(\d+)\.(.*)$', key)
    if m:
        names = _STEM_V2 if stem_v2 else _STEM_V1
        return f'patch_embed.{names.get(m[1], m[1])}.{m[2]}'
    m = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.(norm|op|norm2|mlp)\.(.*)$', key)
    if m:
        stage, block, part, rest = m.groups()
        if part == 'op':
            head, _, tail = rest.partition('.')
            rest = _SSM_PARAMS.get(head, head) + (f'.{tail}' if tail else '')
        part = {'norm': 'norm1', 'op': 'ssm'}.get(part, part)
        return f'stages.{stage}.blocks.{block}.{part}.{rest}'
    m = re.match(r'^layers\.(\d+)\.downsample\.(\w+)\.(.*)$', key)
    if m:
        stage, name, rest = m.groups()
        return f'stages.{stage}.downsample.{_DOWNSAMPLE_V3.get(name, name)}.{rest}'
    m = re.match(r'^outnorm(\d+)\.(.*)$', key)  # the official detection/segmentation wrapper
    if m:
        return f'out_norms.{m[1]}.{m[2]}'
    return key
