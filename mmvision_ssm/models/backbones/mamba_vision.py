"""MambaVision (Hatamizadeh & Kautz, CVPR 2025) as a dense-prediction backbone.

Layout (official ``NVlabs/MambaVision``): a two-conv stem (stride 4), two stages of residual
conv blocks, then two hybrid stages whose blocks run on non-overlapping windows -- the first
half of each hybrid stage's blocks use the MambaVision mixer (a selective scan over the window's
tokens in row-major order), the rest windowed self-attention. A 3x3 stride-2 conv ends stages
0-2; the features returned for stage ``i`` are taken before that downsampling.

Same weights, same outputs as the official code (checked in tests/test_mamba_vision_official.py),
including two official quirks kept on purpose: windows are zero-padded up to a whole window and
the padded tokens take part in the scan and the attention (no mask); and the mixer adds
``dt_proj``'s bias twice (once in the linear layer, once as the scan's ``delta_bias``).

Plain PyTorch + timm: no OpenMMLab import here.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...ops import selective_scan
from ..layers import pre_norm_mlp
from .base import DenseBackbone, check_arch

# Official settings (mambavision/models/mamba_vision.py, mamba_vision_* entry points). The
# windows are the ImageNet ones; the official detection configs use (8, 8, 112, 56) and the
# segmentation configs (8, 8, 64, 32) (S: (8, 8, 160, 56)) -- pass ``window_size``.
_T = dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16),
          window_size=(8, 8, 14, 7), mlp_ratio=4., drop_path_rate=0.2, layer_scale=None)
_T2 = dict(_T, depths=(1, 3, 11, 4))
_S = dict(_T, dim=96, in_dim=64, depths=(3, 3, 7, 5))
_B = dict(_T, dim=128, in_dim=64, depths=(3, 3, 10, 5), drop_path_rate=0.3, layer_scale=1e-5)
_L = dict(_B, dim=196, num_heads=(4, 8, 16, 32))
_L2 = dict(_L, depths=(3, 3, 12, 5))
_L3 = dict(_L, dim=256, depths=(3, 3, 20, 10), window_size=(8, 8, 16, 8), drop_path_rate=0.5)
ARCH_SETTINGS = {'T': _T, 'T2': _T2, 'S': _S, 'B': _B, 'L': _L, 'L2': _L2, 'L3': _L3,
                 'tiny': _T, 'tiny2': _T2, 'small': _S, 'base': _B, 'large': _L,
                 'large2': _L2, 'large3': _L3}
_REQUIRED_KEYS = ('dim', 'in_dim', 'depths', 'num_heads')
_OPTIONAL_KEYS = ('window_size', 'mlp_ratio', 'drop_path_rate', 'layer_scale')


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of ``ws`` -> (B * windows, ws * ws, C), row-major
    (for a channels-last map the permute is free)."""
    b, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).reshape(b, h // ws, ws, w // ws, ws, c)
    return x.transpose(2, 3).reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * windows, ws * ws, C) -> (B, C, H, W) in the
    channels-last memory format (a free view when one window covers the map)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Stride-4 stem: two 3x3 stride-2 conv-BN-ReLU."""

    def __init__(self, in_chans: int = 3, in_dim: int = 32, dim: int = 80):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_dim, eps=1e-4)
        self.conv2 = nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim, eps=1e-4)

    def forward(self, x):
        # channels-last from here on (see MambaVision.forward_features); the first conv stays
        # NCHW: with 3 input channels its NHWC weight gradient is the slower one. In-place
        # ReLUs: BatchNorm's backward needs its input, not its output, so no copy is kept
        x = self.conv1(x).contiguous(memory_format=torch.channels_last)
        x = F.relu(self.bn1(x), inplace=True)
        return F.relu(self.bn2(self.conv2(x)), inplace=True)


class ConvBlock(nn.Module):
    """Residual conv3x3-BN-GELU(tanh)-conv3x3-BN, with optional layer scale."""

    def __init__(self, dim: int, drop_path: float = 0., layer_scale: float | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim)
        self.act1 = nn.GELU(approximate='tanh')
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale else None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x):
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class MambaVisionMixer(nn.Module):
    """The MambaVision token mixer on (N, L, C) token sequences.

    ``in_proj`` splits into a scan branch and a gate-free branch of ``d_inner // 2`` channels
    each; both get a non-causal depthwise conv and SiLU; the scan branch runs a selective scan
    (``d_state`` per channel, per-token B/C, skip ``D``), and the two are concatenated.
    """

    def __init__(self, d_model: int, d_state: int = 8, d_conv: int = 3, expand: int = 1,
                 dt_rank: int | str = 'auto', scan_backend: str | None = None):
        super().__init__()
        d_inner = int(expand * d_model)
        self.d_half = d_inner // 2
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == 'auto' else dt_rank
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
        self.x_proj = nn.Linear(self.d_half, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_half, bias=True)
        # no Mamba-style dt init: MambaVision's weight init re-initialises every Linear layer,
        # dt_proj included (see MambaVision._init_module)
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_half, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_half))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # 'same' padding: the official conv is non-causal (the scan itself is causal)
        self.conv1d_x = nn.Conv1d(self.d_half, self.d_half, d_conv, padding='same',
                                  groups=self.d_half, bias=False)
        self.conv1d_z = nn.Conv1d(self.d_half, self.d_half, d_conv, padding='same',
                                  groups=self.d_half, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x).transpose(1, 2)  # (N, d_inner, L)
        u, z = xz.chunk(2, dim=1)
        u = F.silu(self.conv1d_x(u))
        z = F.silu(self.conv1d_z(z))
        dt, b, c = self.x_proj(u.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj(dt).transpose(1, 2)  # already includes the bias ...
        y = selective_scan(
            u, dt, -torch.exp(self.A_log.float()), b.transpose(1, 2).contiguous(),
            c.transpose(1, 2).contiguous(), self.D.float(),
            delta_bias=self.dt_proj.bias.float(),  # ... added again here, as the official code does
            delta_softplus=True, backend=self.scan_backend)
        return self.out_proj(torch.cat([y.to(z.dtype), z], dim=1).transpose(1, 2))


class Attention(nn.Module):
    """Multi-head self-attention over each window's tokens (N, L, C)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'MambaVision: dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, l, c = x.shape
        q, k, v = self.qkv(x).reshape(n, l, 3, self.num_heads, c // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, l, c)))


class HybridBlock(nn.Module):
    """Pre-norm residual block: (Mamba mixer | attention) then MLP, optional layer scale."""

    def __init__(self, dim: int, num_heads: int, use_attention: bool, mlp_ratio: float = 4.,
                 drop_path: float = 0., layer_scale: float | None = None,
                 scan_backend: str | None = None, fused_mlp: bool = False):
        super().__init__()
        self.fused_mlp = fused_mlp
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = (Attention(dim, num_heads) if use_attention else
                      MambaVisionMixer(dim, d_state=8, d_conv=3, expand=1,
                                       scan_backend=scan_backend))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale else None
        self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale else None

    def forward(self, x):
        y = self.mixer(self.norm1(x))
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = pre_norm_mlp(self.norm2, self.mlp, x, self.fused_mlp)
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)


class MambaVisionStage(nn.Module):
    """Conv blocks (``hybrid=False``) or windowed hybrid blocks, then an optional downsample.

    Returns ``(input of the next stage, this stage's feature map)``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, hybrid: bool,
                 downsample: bool, mlp_ratio: float = 4., drop_path=None,
                 layer_scale: float | None = None, with_cp: bool = False,
                 scan_backend: str | None = None, fused_mlp: bool = False):
        super().__init__()
        drop_path = [0.] * depth if drop_path is None else list(drop_path)
        self.hybrid = hybrid
        self.window_size = window_size
        self.with_cp = with_cp
        if hybrid:
            # the official `depth // 2` rule: Mamba mixers in the first ceil(depth / 2) blocks
            first_attn = (depth + 1) // 2
            self.blocks = nn.ModuleList(
                HybridBlock(dim, num_heads, j >= first_attn, mlp_ratio, drop_path[j],
                            layer_scale, scan_backend, fused_mlp) for j in range(depth))
        else:
            # the released models use no layer scale in conv blocks (layer_scale_conv=None)
            self.blocks = nn.ModuleList(ConvBlock(dim, drop_path[j]) for j in range(depth))
        self.downsample = nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False) if downsample else None

    def _run_blocks(self, x):
        for blk in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x):
        if self.hybrid:
            h, w = x.shape[-2:]
            ws = self.window_size
            x = F.pad(x, (0, (-w) % ws, 0, (-h) % ws))  # zeros, as the official code pads
            hp, wp = x.shape[-2:]
            x = self._run_blocks(window_partition(x, ws))
            x = window_reverse(x, ws, hp, wp)[:, :, :h, :w]
        else:
            x = self._run_blocks(x)
        out = x
        if self.downsample is not None:
            x = self.downsample(x)
        return x, out


class MambaVision(DenseBackbone):
    """MambaVision backbone: a tuple of NCHW maps (strides 4, 8, 16, 32) at ``out_indices``.

    Args:
        arch: 'T', 'T2', 'S', 'B', 'L', 'L2', 'L3' (or 'tiny', 'tiny2', 'small', 'base',
            'large', 'large2', 'large3'), or a dict with ``dim``, ``in_dim``, ``depths``,
            ``num_heads`` and optionally ``window_size``, ``mlp_ratio``, ``drop_path_rate``,
            ``layer_scale``.
        window_size: int or 4 per-stage ints; None keeps the arch's (ImageNet) windows. Windows
            of stages 0-1 are unused (conv stages). Feature maps are zero-padded to whole windows.
        drop_path_rate: None keeps the arch's default.
        out_norm: per-output norm, 'ln2d' (channel LayerNorm, as the official detection and
            segmentation backbone) or 'bn'.
        with_cp: activation checkpointing per block (saves memory when training).
        cuda_graph: graphed training forward/backward (:class:`DenseBackbone`).
        scan_backend: forces a ``mmvision_ssm.ops.selective_scan`` backend (None: dispatcher).
        fused_mlp: train the hybrid blocks' norm + MLP through ``ops.norm_mlp`` (keeps half
            the MLP's activations for backward, recomputes the norm and GELU; same outputs and
            gradients, see ``models.layers.pre_norm_mlp``).
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see ``DenseBackbone``.
    """

    #: official classification head and final BatchNorm: unused for dense prediction
    dropped_keys = ('head.*', 'norm.*')
    #: per-output norms are new; ``num_batches_tracked`` is absent from some exports (the
    #: official loader ignores it too)
    initialised_keys = ('norm[0-3].*', '*.num_batches_tracked')

    def __init__(self, arch='T', window_size=None, drop_path_rate: float | None = None,
                 in_chans: int = 3, out_indices=(0, 1, 2, 3), out_norm: str = 'ln2d',
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 scan_backend: str | None = None, fused_mlp: bool = False,
                 pretrained: str | None = None, init_cfg: dict | None = None,
                 cuda_graph: bool = False):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg,
                         cuda_graph=cuda_graph)
        cfg = self._resolve_arch(arch)
        depths, heads = tuple(cfg['depths']), tuple(cfg['num_heads'])
        window_size = cfg['window_size'] if window_size is None else window_size
        if isinstance(window_size, int):
            window_size = (window_size,) * 4
        window_size = tuple(window_size)
        if len(window_size) != 4 or any(int(w) < 1 for w in window_size):
            raise ValueError(f'MambaVision: window_size={window_size} must be a positive int '
                             'or 4 positive ints (one per stage)')
        if drop_path_rate is None:
            drop_path_rate = cfg['drop_path_rate']
        dims = [cfg['dim'] * 2 ** i for i in range(4)]
        self.arch_settings = dict(cfg, window_size=window_size, drop_path_rate=drop_path_rate)
        self.out_channels = [dims[i] for i in self.out_indices]
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_chans, cfg['in_dim'], cfg['dim'])
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.stages = nn.ModuleList()
        for i in range(4):
            start = sum(depths[:i])
            self.stages.append(MambaVisionStage(
                dims[i], depths[i], heads[i], int(window_size[i]), hybrid=i >= 2,
                downsample=i < 3, mlp_ratio=cfg['mlp_ratio'],
                drop_path=dpr[start:start + depths[i]], layer_scale=cfg['layer_scale'],
                with_cp=with_cp, scan_backend=scan_backend, fused_mlp=fused_mlp))
        if out_norm not in ('ln2d', 'bn'):
            raise ValueError(f"MambaVision: out_norm={out_norm!r}; use 'ln2d' or 'bn'")
        for i in self.out_indices:
            # eps 1e-5 as the official LayerNorm2d (timm's defaults to 1e-6)
            self.add_module(f'norm{i}', LayerNorm2d(dims[i], eps=1e-5) if out_norm == 'ln2d'
                            else nn.BatchNorm2d(dims[i]))
        self.apply(self._init_module)
        self._finish_init()

    @staticmethod
    def _resolve_arch(arch) -> dict:
        cfg = check_arch(arch, ARCH_SETTINGS, 'MambaVision')
        if isinstance(arch, dict):
            missing = [k for k in _REQUIRED_KEYS if k not in cfg]
            unknown = sorted(set(cfg) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
            if missing or unknown:
                raise ValueError(f'MambaVision: arch dict missing {missing} / unknown {unknown}; '
                                 f'required {list(_REQUIRED_KEYS)}, optional '
                                 f'{list(_OPTIONAL_KEYS)}')
            cfg = {**_T, **cfg}
        if len(cfg['depths']) != 4 or len(cfg['num_heads']) != 4:
            raise ValueError('MambaVision: depths and num_heads need 4 entries (4 stages)')
        return cfg

    @staticmethod
    def _init_module(m):
        # the official initialisation (it also re-initialises dt_proj, as Linear)
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # --- DenseBackbone hooks ----------------------------------------------------------------
    def _stem_modules(self):
        return [self.patch_embed]

    def _stage_modules(self, i):
        norm = getattr(self, f'norm{i}', None)
        return [self.stages[i]] + ([norm] if norm is not None else [])

    # Official key layout -> ours (timm's checkpoint_filter_fn pattern). Keys already in our
    # layout pass through unchanged.
    _RENAMES = (
        (r'^patch_embed\.conv_down\.0\.', 'patch_embed.conv1.'),
        (r'^patch_embed\.conv_down\.1\.', 'patch_embed.bn1.'),
        (r'^patch_embed\.conv_down\.3\.', 'patch_embed.conv2.'),
        (r'^patch_embed\.conv_down\.4\.', 'patch_embed.bn2.'),
        (r'^levels\.', 'stages.'),
        (r'\.downsample\.reduction\.0\.', '.downsample.'),
        (r'^outnorm(\d)\.', r'norm\1.'),  # official detection/segmentation backbone
    )

    @classmethod
    def convert_checkpoint(cls, state_dict: dict) -> dict:
        """Official MambaVision weights (``.pth.tar`` ``state_dict``/``model``, HF ``model.``
        prefix, DDP ``module.``, MAE-style ``encoder.``, or an mmdet/mmseg file whose backbone
        sits under ``backbone.``) -> this implementation's keys."""
        sd = dict(state_dict)
        for prefix in ('module.', 'model.'):
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
        for prefix in ('backbone.', 'encoder.'):  # a whole detector / segmentor: its backbone
            if any(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        out = {}
        for key, value in sd.items():
            for pattern, repl in cls._RENAMES:
                key = re.sub(pattern, repl, key)
            out[key] = value
        return out

    # --- forward ------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple:
        # channels-last from the stem on: cuDNN's bf16 convolutions and BatchNorm run NHWC
        # natively (NCHW adds layout transposes around every conv), and the windowing of the
        # hybrid stages becomes a view instead of a copy
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, out = stage(x)
            if i in self.out_indices:
                outs.append(self.output_map(getattr(self, f'norm{i}')(out)))
            if i == self.out_indices[-1]:
                break
        return tuple(outs)
