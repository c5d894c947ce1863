"""MViTv2 for dense prediction: pooling attention, residual pooling, decomposed relative positions.

Li et al., "MViTv2: Improved Multiscale Vision Transformers for Classification and Detection"
(CVPR 2022). The architecture settings come from timm's ``MultiScaleVitCfg`` and the modules
keep timm's parameter names (``patch_embed``, ``stages.<s>.blocks.<j>.{norm1, attn.{qkv, proj,
pool_q, norm_q, pool_k, norm_k, pool_v, norm_v, rel_pos_h, rel_pos_w}, shortcut_proj_attn, norm2,
mlp}``), so timm weights load as they are and official (facebookresearch/mvit) ones through
timm's ``checkpoint_filter_fn``. The attention is re-implemented rather than taken from timm
because timm's indexes relative-position tables sized for the construction image size (any
other input size fails) and computes attention without SDPA. Here, as in detectron2's MViT:

- relative-position tables stay at their pre-training length and are linearly interpolated to
  ``2 * max(q, k) - 1`` for the actual query/key sizes, so any input size works;
- the token map is NHWC; convolution pooling and the patch stem use padding ``k // 2``, which
  gives ceil-div sizes (strides 4/8/16/32) for any input without padding the image;
- attention is ``F.scaled_dot_product_attention`` with the relative positions as additive bias;
- ``window_size > 0`` switches on detectron2's hybrid window attention for detection: windowed
  pooling attention (window ``window_size`` at stride 4, halved per stage) in all blocks except
  the last block of stages 2-4, whose key/value stride doubles in stages 2 and 3.
  Padded window tokens are not masked, as in detectron2.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_tf_
from timm.models.mvitv2 import MultiScaleVitCfg, PatchEmbed, checkpoint_filter_fn
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...checkpoint import LoadReport, load_state_dict_checked, read_checkpoint
from .base import DenseBackbone, check_arch
from .vit import window_partition, window_unpartition

__all__ = ['MViTv2', 'MViTv2Block', 'PoolingAttention', 'get_rel_pos', 'rel_pos_bias']


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(L, C) table -> (q_size, k_size, C) embeddings of the query-key offsets along one axis.

    The table is interpolated to ``2 * max(q, k) - 1`` entries when the sizes differ from
    pre-training; offsets are scaled to the finer of the two grids (MViTv2 / detectron2).
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.t().unsqueeze(0), size=length, mode='linear')[0].t()
    q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_ratio
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_ratio
    return rel_pos[(q_coords - k_coords + (k_size - 1) * k_ratio).long()]


def rel_pos_bias(q: torch.Tensor, q_hw: tuple, k_hw: tuple, rel_pos_h: torch.Tensor,
                 rel_pos_w: torch.Tensor) -> torch.Tensor:
    """Decomposed relative-position attention bias: q (N, qh*qw, C) -> (N, qh*qw, kh*kw)."""
    (qh, qw), (kh, kw) = q_hw, k_hw
    r_q = q.reshape(-1, qh, qw, q.shape[-1])
    rel_h = torch.einsum('nhwc,hkc->nhwk', r_q, get_rel_pos(qh, kh, rel_pos_h).to(q.dtype))
    rel_w = torch.einsum('nhwc,wkc->nhwk', r_q, get_rel_pos(qw, kw, rel_pos_w).to(q.dtype))
    return (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(-1, qh * qw, kh * kw)


class PoolingAttention(nn.Module):
    """Multi-head pooling attention (MViTv2) on an NHWC map, optionally in windows.

    q, k and v are pooled per head by a depthwise 3x3 convolution (stride ``stride_q`` /
    ``stride_kv``) and a LayerNorm; the pooled query is added back to the output (residual
    pooling). ``rel_pos_len`` is the relative-position table length at pre-training size.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, rel_pos_len: int,
                 qkv_bias: bool = True, kernel: int = 3, stride_q: int = 1, stride_kv: int = 1,
                 window_size: int = 0, residual_pooling: bool = True, norm_layer=nn.LayerNorm):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim = dim_out // num_heads
        self.residual_pooling = residual_pooling
        self.stride_q, self.stride_kv = stride_q, stride_kv
        if window_size % stride_q or window_size % stride_kv:
            # query and key/value windows must tile the same image regions
            raise ValueError(f'MViTv2: window size {window_size} of a block must be a multiple of '
                             f'its q/kv pooling strides {stride_q}/{stride_kv}; use e.g. 56')
        self.q_window = window_size // stride_q if window_size else 0
        self.kv_window = window_size // stride_kv if window_size else 0
        self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        def pool(stride):  # shared over heads: acts on the head_dim channels
            return nn.Conv2d(head_dim, head_dim, kernel, stride=stride, padding=kernel // 2,
                             groups=head_dim, bias=False)
        self.pool_q, self.norm_q = pool(stride_q), norm_layer(head_dim)
        self.pool_k, self.norm_k = pool(stride_kv), norm_layer(head_dim)
        self.pool_v, self.norm_v = pool(stride_kv), norm_layer(head_dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(rel_pos_len, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rel_pos_len, head_dim))
        trunc_normal_tf_(self.rel_pos_h, std=0.02)
        trunc_normal_tf_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        nh, hd = self.num_heads, self.head_dim
        # (B, H, W, 3*C) -> 3 x (B*heads, head_dim, H, W): the layout the depthwise pooling needs
        q, k, v = self.qkv(x).view(B, H, W, 3, nh, hd).permute(3, 0, 4, 5, 1, 2).reshape(
            3, B * nh, hd, H, W).unbind(0)
        q = self.norm_q(self.pool_q(q).permute(0, 2, 3, 1))  # (B*heads, Hq, Wq, head_dim)
        k = self.norm_k(self.pool_k(k).permute(0, 2, 3, 1))
        v = self.norm_v(self.pool_v(v).permute(0, 2, 3, 1))
        q_map_hw = q.shape[1:3]
        if self.q_window:
            q_hw, k_hw = (self.q_window,) * 2, (self.kv_window,) * 2
            q_seq, q_pad_hw = window_partition(q, q_hw)
            k_seq, _ = window_partition(k, k_hw)
            v_seq, _ = window_partition(v, k_hw)
        else:
            q_hw, k_hw = q_map_hw, k.shape[1:3]
            q_seq, k_seq, v_seq = q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2)
        bias = rel_pos_bias(q_seq, q_hw, k_hw, self.rel_pos_h, self.rel_pos_w)
        # 4-D (batch, 1, tokens, head_dim): the fused CUDA kernels only take 4-D inputs
        out = F.scaled_dot_product_attention(q_seq.unsqueeze(1), k_seq.unsqueeze(1),
                                             v_seq.unsqueeze(1), attn_mask=bias.unsqueeze(1))
        out = out.squeeze(1)
        if self.q_window:
            out = window_unpartition(out, q_hw, q_pad_hw, q_map_hw)
        else:
            out = out.view(q.shape)
        if self.residual_pooling:
            out = out + q
        Hq, Wq = q_map_hw
        out = out.view(B, nh, Hq, Wq, hd).permute(0, 2, 3, 1, 4).reshape(B, Hq, Wq, nh * hd)
        return self.proj(out)


class MViTv2Block(nn.Module):
    """Pre-norm MViTv2 block on an NHWC map (timm's parameter names; ``expand_attn`` layout)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, rel_pos_len: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 stride_q: int = 1, stride_kv: int = 1, window_size: int = 0,
                 residual_pooling: bool = True, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.shortcut_proj_attn = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.shortcut_pool_attn = (nn.MaxPool2d(stride_q + 1, stride_q, (stride_q + 1) // 2)
                                   if stride_q > 1 else None)
        self.attn = PoolingAttention(dim, dim_out, num_heads, rel_pos_len, qkv_bias=qkv_bias,
                                     stride_q=stride_q, stride_kv=stride_kv,
                                     window_size=window_size, residual_pooling=residual_pooling,
                                     norm_layer=norm_layer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), dim_out)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        # as in the original: the shortcut is un-normalised unless it needs a projection
        shortcut = x if self.shortcut_proj_attn is None else self.shortcut_proj_attn(x_norm)
        if self.shortcut_pool_attn is not None:
            shortcut = self.shortcut_pool_attn(shortcut.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = shortcut + self.drop_path1(self.attn(x_norm))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class MViTv2Stage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class MViTv2(DenseBackbone):
    """MViTv2 backbone: NCHW maps at strides 4/8/16/32 from the stage boundaries.

    Args:
        arch: 'tiny' | 'small' | 'base' or a dict of ``MultiScaleVitCfg`` fields (``depths``,
            ``embed_dim``, ``num_heads``, ...; only the ``expand_attn`` layout of T/S/B).
        in_channels: image channels.
        pretrain_img_size: image size the relative-position tables were trained at (their
            stored length); other input sizes interpolate them.
        out_indices: stages whose outputs are returned. Each has a LayerNorm: the last stage
            the pre-trained final ``norm``, the others new ``out_norms.<i>``.
        window_size: 0 = global pooling attention everywhere (the classification model); > 0 =
            detectron2's hybrid window attention (56 in its MViTv2 detection configs).
        drop_path_rate: stochastic depth, linear over all blocks.
        frozen_stages, norm_eval, with_cp, pretrained, init_cfg, cuda_graph: see
            :class:`DenseBackbone`.
    """

    arch_settings = {
        'tiny': dict(depths=(1, 2, 5, 2)),
        'small': dict(depths=(1, 2, 11, 2)),
        'base': dict(depths=(2, 3, 16, 3)),
    }
    #: classifier head; the cls token of the IN-21k files (dense outputs drop it, as detectron2)
    dropped_keys = ('head.*', 'cls_token', 'norm.weight', 'norm.bias')
    initialised_keys = ('out_norms.*',)
    expand_attn = True  # read by timm's checkpoint_filter_fn

    def __init__(self, arch='tiny', in_channels: int = 3, pretrain_img_size: int = 224,
                 out_indices=(0, 1, 2, 3), window_size: int = 0, drop_path_rate: float = 0.1,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 pretrained=None, init_cfg=None, cuda_graph: bool = False):
        cfg = MultiScaleVitCfg(**check_arch(arch, self.arch_settings, 'MViTv2'))
        if not cfg.expand_attn or cfg.pool_first or cfg.use_cls_token or cfg.use_abs_pos \
                or cfg.mode != 'conv' or cfg.rel_pos_type != 'spatial':
            raise ValueError('MViTv2: only the T/S/B layout is supported (expand_attn, conv '
                             'pooling, spatial relative positions, no cls token/abs. positions)')
        self.num_stages = len(cfg.depths)
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained, init_cfg,
                         cuda_graph)
        self.depths = tuple(cfg.depths)
        self.window_size = window_size
        self.with_cp = with_cp
        norm_layer = partial(nn.LayerNorm, eps=cfg.norm_eps)

        self.patch_embed = PatchEmbed(in_channels, cfg.embed_dim[0], cfg.patch_kernel,
                                      cfg.patch_stride, cfg.patch_padding)
        dpr = torch.linspace(0, drop_path_rate, sum(cfg.depths)).split(list(cfg.depths))
        size = pretrain_img_size // cfg.patch_stride[0]  # map size the rel-pos tables fit
        dim = cfg.embed_dim[0]
        self.stages = nn.ModuleList()
        for s, depth in enumerate(cfg.depths):
            blocks = []
            for j in range(depth):
                stride_q = cfg.stride_q[s][0] if j == 0 else 1
                stride_kv = cfg.stride_kv[s][0]
                rel_pos_len = 2 * max(size // stride_q, size // stride_kv) - 1
                window = 0
                if window_size:
                    last = j == depth - 1
                    if last and 0 < s < self.num_stages - 1:
                        stride_kv *= 2  # detectron2: cheaper global attention at stage ends
                    if not (last and s > 0):
                        window = window_size >> (s - 1 if j == 0 and s > 0 else s)
                blocks.append(MViTv2Block(
                    dim, cfg.embed_dim[s], cfg.num_heads[s], rel_pos_len, mlp_ratio=cfg.mlp_ratio,
                    qkv_bias=cfg.qkv_bias, drop_path=dpr[s][j].item(), stride_q=stride_q,
                    stride_kv=stride_kv, window_size=window,
                    residual_pooling=cfg.residual_pooling, norm_layer=norm_layer))
                dim = cfg.embed_dim[s]
                size //= stride_q
            self.stages.append(MViTv2Stage(blocks))

        last = self.num_stages - 1
        self.norm = norm_layer(dim) if last in self.out_indices else None
        self.out_norms = nn.ModuleDict({str(i): norm_layer(cfg.embed_dim[i])
                                        for i in self.out_indices if i != last})
        self.out_channels = [cfg.embed_dim[i] for i in self.out_indices]
        self.out_strides = [4 * 2 ** i for i in self.out_indices]
        for m in self.stages.modules():  # timm's MViTv2 init
            if isinstance(m, nn.Linear):
                trunc_normal_tf_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self._finish_init()

    # --- DenseBackbone hooks --------------------------------------------------------------
    def _stem_modules(self):
        yield self.patch_embed

    def _stage_modules(self, i):
        yield self.stages[i]
        if str(i) in self.out_norms:
            yield self.out_norms[str(i)]
        if i == self.num_stages - 1 and self.norm is not None:
            yield self.norm

    def load_pretrained(self, checkpoint, strict: bool = True, logger=print) -> LoadReport:
        """Load timm or official (facebookresearch/mvit ``.pyth``, under ``model_state``) weights.

        timm's ``checkpoint_filter_fn`` maps official keys (``blocks.<n>`` -> ``stages.<s>.blocks.
        <j>``, block ``proj`` -> ``shortcut_proj_attn``) and resizes relative-position tables
        trained at another size.
        """
        if isinstance(checkpoint, (str, bytes)) or hasattr(checkpoint, '__fspath__'):
            from ...compat import safe_torch_load
            checkpoint = safe_torch_load(checkpoint, map_location='cpu')
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get('model_state'), dict):
            checkpoint = checkpoint['model_state']
        state = checkpoint_filter_fn(self.convert_checkpoint(read_checkpoint(checkpoint)), self)
        self.load_report = load_state_dict_checked(
            self, state, dropped=self.dropped_keys, initialised=self.initialised_keys,
            strict=strict, logger=logger)
        return self.load_report

    # --- forward ----------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> list:
        x, (H, W) = self.patch_embed(x)
        x = x.unflatten(1, (H, W))  # (B, ceil(H/4), ceil(W/4), C)
        outs = []
        last = self.num_stages - 1
        for i, stage in enumerate(self.stages):
            for blk in stage.blocks:
                if self.with_cp and self.training and x.requires_grad:
                    x = checkpoint(blk, x, use_reentrant=False)
                else:
                    x = blk(x)
            if i in self.out_indices:
                norm = self.norm if i == last else self.out_norms[str(i)]
                outs.append(self.output_map(norm(x).permute(0, 3, 1, 2)))
            if i == self.out_indices[-1]:
                break
        return outs
