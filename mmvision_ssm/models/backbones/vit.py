"""Plain ViT (patch 16) for dense prediction, built on timm's ViT ``Block`` (ViTDet recipe).

The trunk is not hierarchical: every block outputs the same stride-16 map. ``out_indices``
therefore selects *blocks* (0..depth-1; the default is the last block) and the backbone returns
one stride-16 NCHW map per selected block. The 4-level pyramid (strides 4/8/16/32) is built by
the :class:`~mmvision_ssm.models.necks.SimpleFeaturePyramid` neck, exactly as ViTDet does
("Exploring Plain Vision Transformer Backbones for Object Detection", Li et al. 2022), so the
same backbone feeds Mask R-CNN (neck -> RPN/RoI heads, no FPN) and UperNet (neck -> UPerHead).

Design points:
- The token map stays NHWC between blocks (no cls token: it is dropped on loading, as in
  ViTDet), so windowing is a reshape and global attention a free ``view``.
- Position embeddings are stored at the pre-training grid (``pretrain_img_size // 16``) and
  resampled bicubically (timm's ``resample_abs_pos_embed``) to the actual grid, once per forward
  (not at all when the grid is the pre-training grid; cached between no-grad forwards until the
  parameter changes), so any input size works; inputs are zero-padded to a multiple of the patch
  size (ceil-div grid).
- Speed: the token map is made contiguous NHWC once after the patch embedding (timm's NHWC
  patch embedding is a permuted view of the conv's NCHW output; left so, every LayerNorm and
  Linear of every block would copy it), and a window that covers the whole map skips the
  partition (same attention as global).
  Without antialiasing by default, as ViTDet and mmseg resize them (timm's classifier with
  ``dynamic_img_size`` antialiases, which in PyTorch is a different bicubic kernel).
- ``window_size > 0``: ViTDet windowed attention in every block except ``global_blocks``. As in
  ViTDet, the normalised tokens are zero-padded to whole windows and the padding is not masked.
  A window larger than the map is clipped to the map, so then windowed == global attention.
- Attention is timm's (``F.scaled_dot_product_attention``); ViTDet's optional decomposed
  relative positions are not used here (plain pre-trained ViT weights have none).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block, checkpoint_filter_fn
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import LayerNorm as FastLayerNorm
from ...checkpoint import LoadReport, load_state_dict_checked, read_checkpoint
from .base import DenseBackbone, check_arch

__all__ = ['ViT', 'ViTBlock', 'window_partition', 'window_unpartition']


def window_partition(x: torch.Tensor, window: tuple) -> tuple:
    """(B, H, W, C) -> (B * num_windows, wh * ww, C), zero-padding H/W to whole windows."""
    B, H, W, C = x.shape
    wh, ww = window
    pad_h, pad_w = -H % wh, -W % ww
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, C).transpose(2, 3)
    return x.reshape(-1, wh * ww, C), (Hp, Wp)


def window_unpartition(x: torch.Tensor, window: tuple, padded_hw: tuple, hw: tuple) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * num_windows, wh * ww, C) -> (B, H, W, C)."""
    (wh, ww), (Hp, Wp), (H, W) = window, padded_hw, hw
    C = x.shape[-1]
    x = x.view(-1, Hp // wh, Wp // ww, wh, ww, C).transpose(2, 3).reshape(-1, Hp, Wp, C)
    if Hp > H or Wp > W:
        x = x[:, :H, :W]
    return x


#: Without autograd, ViT blocks are GPU-bound from about this size on (ViT-B: 1 M elements is
#: batch 7 at 224^2), so their norms use the Triton kernels from there: ViT-B inference at 224^2
#: b128 ran 1.11-1.12x timm on H200s (docs/benchmarks.md, runs I-O). With autograd too: a
#: ViT-B training step at 224^2 b64 (9.6 M elements per norm, under the default 16 M) takes
#: ~10 % less GPU time than with ATen's norms, 1.10x timm's eager on an H200 (run AG). On the
#: slow-CPU H100 hosts, where timm's step is host-bound too, ours ran 0.90x timm eager (run AE;
#: 0.93-1.00x with ATen's norms there, 0.76x before the Triton path's host work was cut)
BLOCK_NORM_MIN_TRITON_NUMEL = 1 << 20


def _BlockNorm(dim: int, **kwargs) -> nn.Module:  # noqa: N802 (a norm_layer factory)
    """The blocks' norms feed only a Linear (``attn.qkv``, ``mlp.fc1``), so under autocast they
    return bf16 directly (same parameters and keys as timm's LayerNorm)."""
    return FastLayerNorm(dim, eps=1e-6, low_precision_output=True,
                         min_triton_numel=BLOCK_NORM_MIN_TRITON_NUMEL,
                         min_triton_numel_grad=BLOCK_NORM_MIN_TRITON_NUMEL, **kwargs)


class ViTBlock(Block):
    """timm's pre-norm ViT block on an NHWC map; attention optionally in windows (ViTDet).

    Only ``forward`` differs from timm's ``Block`` (same submodules and parameter names), so
    timm/official block weights load unchanged.
    """

    def __init__(self, *args, window_size: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        y = self.norm1(x)
        # a window clipped to the map is one window over the whole map: global attention
        if self.window_size and (self.window_size < H or self.window_size < W):
            window = (min(self.window_size, H), min(self.window_size, W))
            y, padded_hw = window_partition(y, window)
            y = window_unpartition(self.attn(y), window, padded_hw, (H, W))
        else:
            y = self.attn(y.reshape(B, H * W, C)).view(B, H, W, C)
        x = x + self.drop_path1(self.ls1(y))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ViT(DenseBackbone):
    """Plain ViT backbone returning stride-16 NCHW maps of the blocks in ``out_indices``.

    Args:
        arch: 'small' | 'base' | 'large' or a dict with ``embed_dim``, ``depth``, ``num_heads``
            (optional ``global_blocks``, ``mlp_ratio``).
        patch_size: patch (and output) stride; 16 for the standard weights.
        in_channels: image channels.
        pretrain_img_size: image size of the pre-trained position embedding (grid = size // patch).
        out_indices: blocks whose outputs are returned (default: the last block). Each output
            has its own LayerNorm: the last block uses the pre-trained final ``norm``, other
            blocks get new norms ``out_norms.<i>``.
        window_size: ViTDet window attention size in all blocks but ``global_blocks``; 0 = global
            attention everywhere.
        global_blocks: blocks with global attention when windowing; None = the arch default
            (ViTDet: 2, 5, 8, 11 for 12 blocks, 5, 11, 17, 23 for 24).
        qkv_bias, mlp_ratio, drop_path_rate, init_values (layer scale): as in timm.
        pos_embed_antialias: resample the position embedding with antialiasing (timm's
            ``dynamic_img_size`` behaviour) instead of plain bicubic (ViTDet, mmseg).
        frozen_stages: -1 nothing; 0 patch/pos embedding; k > 0 also blocks 0..k-1.
        with_cp: activation checkpointing per block.
        cuda_graph: graphed training forward/backward (:class:`DenseBackbone`).
    """

    arch_settings = {
        'small': dict(embed_dim=384, depth=12, num_heads=6, global_blocks=(2, 5, 8, 11)),
        'base': dict(embed_dim=768, depth=12, num_heads=12, global_blocks=(2, 5, 8, 11)),
        'large': dict(embed_dim=1024, depth=24, num_heads=16, global_blocks=(5, 11, 17, 23)),
    }
    #: classification-only parts of timm / jax / DeiT / MAE checkpoints
    dropped_keys = ('cls_token', 'reg_token', 'dist_token', 'head.*', 'head_dist.*', 'fc_norm.*',
                    'pre_logits.*', 'mask_token', 'decoder_*',
                    'norm.weight', 'norm.bias')  # when the last block is not an output
    #: new per-output norms; ``norm.*`` too, for MAE fine-tuned files that carry ``fc_norm`` instead
    initialised_keys = ('out_norms.*', 'norm.weight', 'norm.bias')
    #: timm's filter reads these to resample the position embedding (no prefix tokens here)
    no_embed_class = True
    num_prefix_tokens = 0

    def __init__(self, arch='base', patch_size: int = 16, in_channels: int = 3,
                 pretrain_img_size: int = 224, out_indices=(-1,), window_size: int = 14,
                 global_blocks=None, qkv_bias: bool = True, mlp_ratio: float | None = None,
                 drop_path_rate: float = 0.1, init_values: float | None = None,
                 pos_embed_antialias: bool = False, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 pretrained=None, init_cfg=None, cuda_graph: bool = False):
        settings = check_arch(arch, self.arch_settings, 'ViT')
        depth, embed_dim = settings['depth'], settings['embed_dim']
        self.num_stages = depth  # blocks play the role of stages for out_indices/frozen_stages
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained, init_cfg,
                         cuda_graph)
        if global_blocks is None:
            global_blocks = settings.get('global_blocks', ())
        global_blocks = {g % depth for g in global_blocks}
        mlp_ratio = mlp_ratio or settings.get('mlp_ratio', 4.0)
        self.embed_dim = embed_dim
        self.with_cp = with_cp
        self.pos_embed_antialias = pos_embed_antialias

        self.patch_embed = PatchEmbed(
            img_size=pretrain_img_size, patch_size=patch_size, in_chans=in_channels,
            embed_dim=embed_dim, output_fmt='NHWC', strict_img_size=False, dynamic_img_pad=True)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            ViTBlock(embed_dim, settings['num_heads'], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     init_values=init_values, drop_path=dpr[i], norm_layer=_BlockNorm,
                     window_size=0 if i in global_blocks else window_size)
            for i in range(depth)])
        self.norm = LayerNorm(embed_dim) if depth - 1 in self.out_indices else None
        self.out_norms = nn.ModuleDict({str(i): LayerNorm(embed_dim)
                                        for i in self.out_indices if i != depth - 1})
        self.out_channels = [embed_dim] * len(self.out_indices)
        self.out_strides = [patch_size] * len(self.out_indices)

        trunc_normal_(self.pos_embed, std=.02)
        for m in self.blocks.modules():  # timm's ViT init: trunc-normal linears, zero biases
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias)
        self._finish_init()

    # --- DenseBackbone hooks --------------------------------------------------------------
    def _stem_modules(self):
        yield self.patch_embed

    def _stage_modules(self, i):
        yield self.blocks[i]
        if str(i) in self.out_norms:
            yield self.out_norms[str(i)]
        if i == self.num_stages - 1 and self.norm is not None:
            yield self.norm

    def _freeze_stages(self):
        super()._freeze_stages()
        if self.frozen_stages >= 0:  # the position embedding belongs to the stem
            self.pos_embed.requires_grad = False

    @classmethod
    def convert_checkpoint(cls, state_dict: dict) -> dict:
        """timm / jax-converted / DeiT / MAE ViT keys -> ours: strip the cls position."""
        state = dict(state_dict)
        pos = state.get('pos_embed')
        if pos is not None:
            # prefix tokens (cls, registers) are whatever exceeds the largest square grid
            n = pos.shape[1]
            prefix = n - math.isqrt(n) ** 2
            state['pos_embed'] = pos[:, prefix:]
        return state

    def load_pretrained(self, checkpoint, strict: bool = True, logger=print) -> LoadReport:
        """Load timm/original ViT weights; timm's filter resamples patch/position embeddings
        (other grids, linear patch projections) to this model's pre-training grid."""
        state = self.convert_checkpoint(read_checkpoint(checkpoint))
        state = checkpoint_filter_fn(state, self)
        self.load_report = load_state_dict_checked(
            self, state, dropped=self.dropped_keys, initialised=self.initialised_keys,
            strict=strict, logger=logger)
        return self.load_report

    # --- forward ----------------------------------------------------------------------------
    def _pos_embed(self, hw: tuple) -> torch.Tensor:
        """The position embedding at grid ``hw`` as (1, h, w, C)."""
        hw = tuple(hw)
        pos = self.pos_embed
        if hw == tuple(self.patch_embed.grid_size):
            return pos.view(1, hw[0], hw[1], -1)
        # Without autograd the resampled table can be reused until the parameter changes
        # (in-place optimizer/loading updates bump its version counter).
        cacheable = not (torch.is_grad_enabled() and pos.requires_grad)
        key = (hw, pos._version, pos.data_ptr(), pos.device, pos.dtype, self.pos_embed_antialias)
        cached = getattr(self, '_pos_cache', None)
        if cacheable and cached is not None and cached[0] == key:
            return cached[1]
        pos = resample_abs_pos_embed(pos, new_size=list(hw), old_size=self.patch_embed.grid_size,
                                     num_prefix_tokens=0, antialias=self.pos_embed_antialias)
        pos = pos.view(1, hw[0], hw[1], -1)
        if cacheable:
            self._pos_cache = (key, pos.detach())
        return pos

    def forward_features(self, x: torch.Tensor) -> list:
        x = self.patch_embed(x)  # (B, ceil(H/16), ceil(W/16), C): a permuted view of NCHW
        # pos + x (this order) writes a contiguous NHWC result in the same single pass
        x = self._pos_embed(x.shape[1:3]) + x
        if not x.is_contiguous():  # (e.g. batch 1) make the trunk's layout contiguous once
            x = x.contiguous()
        outs = []
        last = self.num_stages - 1
        for i, blk in enumerate(self.blocks):
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in self.out_indices:
                norm = self.norm if i == last else self.out_norms[str(i)]
                outs.append(self.output_map(norm(x).permute(0, 3, 1, 2)))
            if i == self.out_indices[-1]:
                break  # later blocks feed no output
        return outs
