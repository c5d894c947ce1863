"""Convert an official MambaVision checkpoint into a file mmdet/mmseg configs load directly.

    python tools/convert_mamba_vision.py mambavision_tiny_1k.pth.tar \
        checkpoints/mambavision_t_1k_mmvision_ssm.pth [--arch T]

Input: any official release -- the ImageNet-1K/21K ``.pth.tar`` files (weights under
``state_dict`` or ``model``), Hugging Face exports (``model.`` prefix), DDP (``module.``) -- or
an official fine-tuned detector/segmentor (NVlabs' mmdet/mmseg ``.pth``, backbone under
``backbone.``).
Output: ``{'state_dict': {'backbone.<key>': tensor, ...}, 'meta': {...}}`` in this repo's key
layout: the backbone only for an ImageNet file (use it as ``init_cfg``/``pretrained``); for a whole
detector/segmentor the other keys (neck, heads) are kept unchanged and the file's ``meta`` too
(use it as ``load_from`` with the matching config). The backbone conversion is checked by a
strict load into :class:`MambaVision`; its report (classification head and final norm dropped,
per-output norms left to be initialised) is printed. The arch is inferred from the weights when
``--arch`` is not given. Files are read with ``weights_only``
unpickling; ``--unsafe-load`` lifts that for trusted files that store more than tensors.
"""
from __future__ import annotations

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmvision_ssm.checkpoint import (check_backbone_state, converter_parser,  # noqa: E402
                                     extract_state_dict, parse_converter_args, read_checkpoint,
                                     save_converted)
from mmvision_ssm.models.backbones.mamba_vision import ARCH_SETTINGS, MambaVision  # noqa: E402

_CANONICAL = ('T', 'T2', 'S', 'B', 'L', 'L2', 'L3')


def infer_arch(state: dict) -> str:
    """Pick the arch whose dim, in_dim and depths match the (converted) weights."""
    dim = state['patch_embed.conv2.weight'].shape[0]
    in_dim = state['patch_embed.conv1.weight'].shape[0]
    depths = tuple(
        len({k.split('.')[3] for k in state if k.startswith(f'stages.{i}.blocks.')})
        for i in range(4))
    for name in _CANONICAL:
        cfg = ARCH_SETTINGS[name]
        if (cfg['dim'], cfg['in_dim'], tuple(cfg['depths'])) == (dim, in_dim, depths):
            return name
    raise ValueError(f'no MambaVision arch has dim={dim}, in_dim={in_dim}, depths={depths}; '
                     f'known: {list(_CANONICAL)} (pass --arch for a custom one)')


def convert(src: str, arch: str | None = None) -> tuple[dict, str, dict]:
    """Return (converted state dict, arch, meta to keep)."""
    from mmvision_ssm.compat import safe_torch_load
    if not osp.isfile(src):
        read_checkpoint(src)  # raises the helpful FileNotFoundError
    obj = safe_torch_load(src, map_location='cpu')
    # 'state_dict' before 'state_dict_ema', as the official loaders
    raw = extract_state_dict(obj['state_dict'] if isinstance(obj.get('state_dict'), dict) else obj)
    # a whole fine-tuned model: convert its backbone, keep the rest
    others = ({k: v for k, v in raw.items() if not k.startswith('backbone.')}
              if any(k.startswith('backbone.') for k in raw) else {})
    meta = obj.get('meta') if others and isinstance(obj.get('meta'), dict) else {}
    state = MambaVision.convert_checkpoint(raw)
    arch = arch or infer_arch(state)
    kept, _ = check_backbone_state(MambaVision, arch, state, f'MambaVision-{arch} from {src}')
    if others:
        print(f'kept {len(others)} non-backbone tensors unchanged (neck, heads)')
    return {**kept, **others}, arch, meta


def main(argv=None):
    parser = converter_parser(__doc__.split('\n\n')[0], 'official checkpoint (.pth.tar / .pth)')
    parser.add_argument('--arch', choices=_CANONICAL, help='default: inferred from the weights')
    args = parse_converter_args(parser, argv)
    state, arch, meta = convert(args.src, args.arch)
    save_converted(args.dst, state, dict(meta, arch=arch, source=osp.basename(args.src),
                                         converter='tools/convert_mamba_vision.py'))


if __name__ == '__main__':
    main()
