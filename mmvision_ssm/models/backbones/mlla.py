"""MLLA (Mamba-Like Linear Attention) backbone for dense prediction.

Paper: "Demystify Mamba in Vision: A Linear Attention Perspective" (Han et al., NeurIPS 2024),
official code: https://github.com/LeapLabTHU/MLLA (``models/mlla.py`` and the mmdet 2.x/mmseg 0.x
backbone under ``downstream/``). Same computation as the official downstream backbone, written for
speed and for any input size:

* the 2-D RoPE tables are built for the actual feature size, once per stage (not per block) and
  applied with real cos/sin arithmetic instead of complex numbers;
* the official ``in_proj`` and ``act_proj`` (both reading ``norm1(x)``) are one ``Linear(C, 2C)``;
* the linear attention runs on all heads at once as two (B, C, C)-sized matmuls with a
  block-diagonal head mask, so q, k, v and the output never leave the (B, N, C) token layout;
* the conditional position encodings ``x + dwconv(x)`` are one depthwise conv whose kernel gets
  the identity added to its centre tap;
* tokens stay channels-last (B, H, W, C); depthwise convs read them through a permuted view.

Plain PyTorch + timm (no OpenMMLab import). Official checkpoints (weights under ``"model"``) load
strictly through :meth:`MLLA.convert_checkpoint`.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath, Mlp
from torch import nn

from ...checkpoint import CheckpointMismatchError
from ...ops.dwconv_silu import dwconv_silu
from ...ops.gated_linear import gated_linear
from ...ops.linear_attention import rope_linear_attention
from ...ops.norm_mlp import norm_linear
from ..layers import LayerNorm, init_linear_and_layernorm, pre_norm_mlp
from .base import DenseBackbone, check_arch

__all__ = ['MLLA', 'MLLABlock', 'LinearAttention', 'infer_arch', 'rope_tables', 'stage_context']


# --- RoPE and the attention core -------------------------------------------------------------
def rope_tables(height: int, width: int, dim: int, *, device=None, dtype=torch.float32,
                base: float = 10000.0):
    """cos/sin tables of the official 2-D RoPE for a ``height x width`` map, shape (H*W, dim).

    Channel pair ``(2j, 2j+1)`` is rotated by ``row * theta_j`` for the first ``dim // 4`` pairs
    and by ``col * theta_{j - dim//4}`` for the rest, ``theta_k = base ** (-k / (dim // 4))``.
    ``sin`` carries the sign of the rotation: ``rope(x) = x * cos + swap_pairs(x) * sin``.
    The angles are computed in float32 exactly as the official code does, then cast to ``dtype``.
    """
    if dim % 4:
        raise ValueError(f'2-D RoPE needs a channel count divisible by 4, got {dim}')
    k_max = dim // 4
    theta = 1.0 / (base ** (torch.arange(k_max, device=device) / k_max))
    rows = torch.arange(height, device=device)[:, None, None] * theta   # (H, 1, k)
    cols = torch.arange(width, device=device)[None, :, None] * theta    # (1, W, k)
    angles = torch.cat([rows.expand(height, width, k_max), cols.expand(height, width, k_max)], -1)
    cos, sin = angles.cos(), angles.sin()
    cos = torch.stack([cos, cos], -1).reshape(height * width, dim)
    sin = torch.stack([-sin, sin], -1).reshape(height * width, dim)
    return cos.to(dtype), sin.to(dtype)


def head_mask(dim: int, num_heads: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(dim, dim) block-diagonal 0/1 matrix: channel i and j belong to the same head."""
    head = torch.arange(dim, device=device) // (dim // num_heads)
    return (head[:, None] == head[None, :]).to(dtype)


def stage_context(height: int, width: int, dim: int, num_heads: int, *, device=None,
                  dtype=torch.float32) -> tuple:
    """What every block of a stage shares in one forward pass (computed once per stage):
    ``(cos, sin, cos_k, sin_k, kv_mask, head_sum)``. The RoPE tables for ``k`` and the
    block-diagonal head mask each carry one ``N ** -0.5`` of the official normalisation
    (applied to k and v before ``k^T v``, which keeps fp16 sums in range); ``head_sum``
    (dim, heads) adds up the channels of each head."""
    scale = (height * width) ** -0.5
    cos, sin = rope_tables(height, width, dim, device=device, dtype=dtype)
    mask = head_mask(dim, num_heads, device=device, dtype=dtype)
    head_sum = mask[:, ::dim // num_heads].contiguous()
    return cos, sin, cos * scale, sin * scale, mask * scale, head_sum


def identity_tap(channels: int) -> torch.Tensor:
    """(C, 1, 3, 3) depthwise kernel of the identity (1 at the centre tap)."""
    return F.pad(torch.ones(channels, 1, 1, 1), (1, 1, 1, 1))


def _channels_last_dwconv(x: torch.Tensor, conv: nn.Conv2d,
                          residual_tap: torch.Tensor | None = None):
    """Depthwise 3x3 conv of a (B, H, W, C) map; with ``residual_tap`` (:func:`identity_tap`)
    it adds the input too (identity folded into the kernel, which saves one pass over the map;
    the tap is a buffer so the fold is one small add, not three launches per call)."""
    weight = conv.weight
    if residual_tap is not None:
        weight = weight + residual_tap
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, conv.bias, padding=1, groups=conv.groups)
    return out.permute(0, 2, 3, 1)


class LinearAttention(nn.Module):
    """Multi-head linear attention with ELU+1 feature maps, 2-D RoPE on q/k and a LePE
    depthwise conv on v (v is the input itself, as in the official code). ``fused``: train
    through :func:`mmvision_ssm.ops.linear_attention.rope_linear_attention`'s Function (keeps
    q/k and small tensors for the backward) instead of recording every op."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, fused: bool = True):
        super().__init__()
        self.fused = fused
        if dim % num_heads or (dim // num_heads) % 2 or dim % 4:
            raise ValueError(f'LinearAttention: dim={dim} must be divisible by 4 and by '
                             f'num_heads={num_heads} with an even head dim (RoPE rotates pairs)')
        self.dim = dim
        self.num_heads = num_heads
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, ctx: tuple) -> torch.Tensor:
        """x: (B, H, W, C); ctx: :func:`stage_context` for this H, W. Returns (B, H, W, C)."""
        b, h, w, c = x.shape
        v = x.reshape(b, h * w, c)
        lepe = _channels_last_dwconv(x, self.lepe).reshape(b, h * w, c)
        return rope_linear_attention(self.qk(v), v, lepe, ctx, self.fused).view(b, h, w, c)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}'


#: With autograd, MLLA's block norms run the Triton LayerNorm kernels from this many elements
#: on (the default rule, 16 M elements, sends every MLLA-T norm at 224^2 b64 to ATen, which
#: copies the bf16 maps to float32 and back): the training step's GPU time fell 16 % (run Z2,
#: H100; docs/benchmarks.md). Without autograd the default rule stays: inference at 224^2 b128
#: is host-bound on the device machines, where the kernels' launches cost more than they save.
BLOCK_NORM_MIN_TRITON_NUMEL_GRAD = 1 << 20


def block_norm(dim: int) -> LayerNorm:
    """The blocks' norms: each feeds only a Linear (in_proj, the MLP's fc1), so under autocast
    it returns bf16 directly (same parameters and keys as ``nn.LayerNorm``)."""
    return LayerNorm(dim, low_precision_output=True,
                     min_triton_numel_grad=BLOCK_NORM_MIN_TRITON_NUMEL_GRAD)


class MLLABlock(nn.Module):
    """CPE -> [norm, input gate, in-proj + depthwise conv + SiLU, linear attention, output
    gating, out-proj] residual -> CPE -> [norm, MLP] residual. Works on (B, H, W, C) tokens.

    ``in_proj`` is the official ``in_proj`` and ``act_proj`` stacked: rows ``[:C]`` feed the
    attention branch, rows ``[C:]`` the SiLU gate.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, drop_path: float = 0.0, act_layer=nn.GELU,
                 norm_layer=block_norm, fused_mlp: bool = False, fused_attn: bool = True):
        super().__init__()
        self.dim, self.fused_mlp, self.fused_attn = dim, fused_mlp, fused_attn
        self.cpe1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = norm_layer(dim)
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.attn = LinearAttention(dim, num_heads, qkv_bias=qkv_bias, fused=fused_attn)
        self.out_proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.cpe2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.register_buffer('residual_tap', identity_tap(dim), persistent=False)

    def forward(self, x: torch.Tensor, ctx: tuple) -> torch.Tensor:
        x = _channels_last_dwconv(x, self.cpe1, self.residual_tap)
        shortcut = x
        fused = self.fused_attn and torch.is_grad_enabled()
        if fused and isinstance(self.norm1, nn.LayerNorm):
            x = norm_linear(x, self.norm1.weight, self.norm1.bias, self.norm1.eps,
                            self.in_proj.weight, self.in_proj.bias,
                            getattr(self.norm1, 'min_triton_numel_grad', None))
        else:
            x = self.in_proj(self.norm1(x))
        x, gate = x.chunk(2, dim=-1)
        if fused:
            x = dwconv_silu(x, self.dwc.weight, self.dwc.bias, padding=1)
        else:
            x = F.silu(_channels_last_dwconv(x, self.dwc))
        x = self.attn(x, ctx)
        if fused:
            x = gated_linear(x, gate, self.out_proj.weight, self.out_proj.bias)
        else:
            x = self.out_proj(x * F.silu(gate))
        x = shortcut + self.drop_path(x)
        x = _channels_last_dwconv(x, self.cpe2, self.residual_tap)
        return x + self.drop_path(pre_norm_mlp(self.norm2, self.mlp, x, self.fused_mlp))


# --- stem, downsampling, stages -------------------------------------------------------------
class ConvNormAct(nn.Module):
    """Conv2d -> optional BatchNorm2d -> optional ReLU (attribute names follow the official
    ``ConvLayer`` so the checkpoint keys match)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, bias: bool = True, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class Stem(nn.Module):
    """Stride-4 conv stem: 3x3/2 conv, residual pair of 3x3 convs, 3x3/2 conv to 4C, 1x1 to C.
    Pads the image at the bottom/right to a multiple of 4 first (as the official backbone)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64):
        super().__init__()
        half = embed_dim // 2
        self.conv1 = ConvNormAct(in_chans, half, 3, stride=2, bias=False)
        self.conv2 = nn.Sequential(ConvNormAct(half, half, 3, bias=False),
                                   ConvNormAct(half, half, 3, bias=False, act=False))
        self.conv3 = nn.Sequential(ConvNormAct(half, embed_dim * 4, 3, stride=2, bias=False),
                                   ConvNormAct(embed_dim * 4, embed_dim, 1, bias=False, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, ceil(H/4), ceil(W/4), C)."""
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            x = F.pad(x, (0, -w % 4, 0, -h % 4))
        # channels-last convs (cuDNN's native bf16 layout), and the final permute is then a
        # contiguous (B, H, W, C) view rather than a strided one every block would copy; the
        # first conv stays NCHW (with 3 input channels its NHWC weight gradient is the slower)
        x = self.conv1(x).contiguous(memory_format=torch.channels_last)
        x = x + self.conv2(x)
        return self.conv3(x).permute(0, 2, 3, 1)


class PatchMerging(nn.Module):
    """Inverted-bottleneck downsampling C -> 2C: 1x1 conv (to 8C) + ReLU, depthwise 3x3/2 + ReLU,
    1x1 conv + BN. Odd sizes are padded at the bottom/right before the first conv (as the
    official backbone), giving ceil(H/2) x ceil(W/2)."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(2 * dim * ratio)
        self.conv = nn.Sequential(
            ConvNormAct(dim, hidden, 1, norm=False),
            ConvNormAct(hidden, hidden, 3, stride=2, groups=hidden, norm=False),
            ConvNormAct(hidden, 2 * dim, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MLLAStage(nn.Module):
    """MLLA blocks at one resolution; ``downsample`` (patch merging to the next stage, absent
    in the last stage) is applied by the backbone only when a later stage is needed."""

    def __init__(self, dim: int, depth: int, num_heads: int, drop_path=(), downsample=True,
                 with_cp: bool = False, **block_kwargs):
        super().__init__()
        self.dim, self.num_heads, self.with_cp = dim, num_heads, with_cp
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            MLLABlock(dim, num_heads, drop_path=drop_path[i], **block_kwargs) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        ctx = stage_context(x.shape[1], x.shape[2], self.dim, self.num_heads, device=x.device,
                            dtype=x.dtype)
        for blk in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = cp.checkpoint(blk, x, ctx, use_reentrant=False)
            else:
                x = blk(x, ctx)
        return x


# --- the backbone ---------------------------------------------------------------------------
def infer_arch(state_dict: dict) -> str:
    """Name of the arch whose layout a (converted or official) state dict has."""
    key = 'patch_embed.conv3.1.conv.weight'
    if key not in state_dict:
        raise CheckpointMismatchError(f'MLLA: {key!r} not in the checkpoint: not an MLLA model?')
    embed_dims = state_dict[key].shape[0]
    depths = tuple(len({k.split('.')[3] for k in state_dict
                        if k.startswith(f'layers.{i}.blocks.')}) for i in range(4))
    for name in ('tiny', 'small', 'base'):
        settings = MLLA.arch_settings[name]
        if (settings['embed_dims'], tuple(settings['depths'])) == (embed_dims, depths):
            return name
    raise CheckpointMismatchError(f'MLLA: no arch has embed_dims={embed_dims} and depths={depths};'
                                  ' pass the arch explicitly')


class MLLA(DenseBackbone):
    """MLLA backbone: tuple of NCHW maps at strides 4, 8, 16, 32 (one LayerNorm per output).

    Args:
        arch: 'tiny'/'t', 'small'/'s', 'base'/'b' or a dict with ``embed_dims``, ``depths``,
            ``num_heads``.
        in_channels: image channels.
        mlp_ratio, qkv_bias: block settings (official: 4.0, True).
        drop_rate: dropout after the stem and in the MLPs.
        drop_path_rate: stochastic depth, linear over blocks.
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see :class:`DenseBackbone`.
        with_cp: activation checkpointing per block (torch.utils.checkpoint, non-reentrant).
        cuda_graph: graphed training forward/backward (:class:`DenseBackbone`).
        fused_mlp: train the blocks' norm + MLP through ``ops.norm_mlp`` (keeps half the MLP's
            activations for backward, recomputes the norm and GELU; same outputs and gradients,
            see ``models.layers.pre_norm_mlp``).
        fused_attn: train the attention branch through the Functions of ``ops`` that keep less
            for the backward and recompute the rest (``norm_linear``, ``dwconv_silu``,
            ``rope_linear_attention``, ``gated_linear``): 15 instead of 28 token maps per block
            with ``fused_mlp``; same outputs and gradients. Both switches together take MLLA-T's
            training peak to 0.61x the official code's (4.10 vs 6.74 GiB at 224^2 b64, H100) at
            1.79x its training speed on GPU work (docs/benchmarks.md, runs Z1-Z7).

    Any input size works: the stem pads to a multiple of 4, patch merging pads odd maps, and
    the RoPE tables are built for the actual map, so output ``i`` is ``ceil(H / 2**(i+2))`` high.
    """

    arch_settings = {
        'tiny': dict(embed_dims=64, depths=(2, 4, 8, 4), num_heads=(2, 4, 8, 16)),
        'small': dict(embed_dims=64, depths=(3, 6, 21, 6), num_heads=(2, 4, 8, 16)),
        'base': dict(embed_dims=96, depths=(3, 6, 21, 6), num_heads=(3, 6, 12, 24)),
    }
    arch_settings.update(t=arch_settings['tiny'], s=arch_settings['small'],
                         b=arch_settings['base'])

    # Official keys a backbone does not use: the classifier, its final norm, the RoPE tables
    # (``rotations`` buffers sized for the fixed training ``input_resolution``; we compute the
    # tables for the actual feature size at run time) and per-output norms of stages this
    # model does not return.
    dropped_keys = ('head.*', 'norm.*', '*.attn.rope.rotations', 'norm[0-9].*')
    # Per-output norms for dense prediction: not in classification checkpoints.
    initialised_keys = ('norm[0-9].*',)

    def __init__(self, arch='tiny', in_channels: int = 3, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 out_indices=(0, 1, 2, 3), frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, fused_mlp: bool = True, fused_attn: bool = True,
                 pretrained: str | None = None,
                 init_cfg: dict | None = None, cuda_graph: bool = False):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg,
                         cuda_graph=cuda_graph)
        settings = check_arch(arch, self.arch_settings, 'MLLA')
        embed_dims, depths, num_heads = (settings[k] for k in ('embed_dims', 'depths', 'num_heads'))
        if len(depths) != self.num_stages or len(num_heads) != self.num_stages:
            raise ValueError(f'MLLA: arch needs {self.num_stages} depths and num_heads, got '
                             f'depths={depths}, num_heads={num_heads}')
        dims = [embed_dims * 2 ** i for i in range(self.num_stages)]
        self.embed_dims, self.depths, self.num_heads = embed_dims, tuple(depths), tuple(num_heads)
        self.out_channels = [dims[i] for i in self.out_indices]

        self.patch_embed = Stem(in_channels, embed_dims)
        self.pos_drop = nn.Dropout(drop_rate)  # as the official model, after the stem
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))
        self.layers = nn.ModuleList(
            MLLAStage(dims[i], depths[i], num_heads[i], drop_path=dpr[i].tolist(),
                      downsample=i < self.num_stages - 1, with_cp=with_cp, mlp_ratio=mlp_ratio,
                      qkv_bias=qkv_bias, drop=drop_rate, fused_mlp=fused_mlp,
                      fused_attn=fused_attn)
            for i in range(self.num_stages))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i]))
        self.apply(init_linear_and_layernorm)
        self._finish_init()

    def _stem_modules(self):
        return [self.patch_embed]

    def _stage_modules(self, i: int):
        norm = getattr(self, f'norm{i}', None)
        return [self.layers[i]] + ([norm] if norm is not None else [])

    @classmethod
    def convert_checkpoint(cls, state_dict: dict) -> dict:
        """Official MLLA state dict (classification ``model`` or a downstream ``backbone.*``
        one) -> ours. Stacks ``in_proj`` and ``act_proj`` into our ``in_proj``; every other key
        keeps its name (unused ones are named by :attr:`dropped_keys`). Idempotent."""
        if any(k.startswith('backbone.') for k in state_dict):
            state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items()
                          if k.startswith('backbone.')}
        out = {}
        for key, value in state_dict.items():
            if '.act_proj.' in key:
                continue  # stacked under its in_proj
            gate_key = key.replace('.in_proj.', '.act_proj.')
            if '.in_proj.' in key and gate_key in state_dict:
                value = torch.cat([value, state_dict[gate_key]], dim=0)
            out[key] = value
        orphans = [k for k in state_dict if '.act_proj.' in k
                   and k.replace('.act_proj.', '.in_proj.') not in state_dict]
        if orphans:
            raise CheckpointMismatchError(f'MLLA: act_proj without its in_proj in the checkpoint: '
                                          f'{orphans[:5]}')
        return out

    def forward_features(self, x: torch.Tensor):
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        # stages after the last returned one would only cost time: they are not run
        for i in range(self.out_indices[-1] + 1):
            if i > 0:
                x = self.layers[i - 1].downsample(x)
            x = self.layers[i](x)
            if i in self.out_indices:
                outs.append(self.output_map(getattr(self, f'norm{i}')(x).permute(0, 3, 1, 2)))
        return outs
