"""Convert an official VMamba checkpoint into a file mmdet/mmseg configs load directly.

    python tools/convert_vmamba.py vssm1_tiny_0230s_ckpt_epoch_264.pth \
        checkpoints/vmamba_tiny_mmvision_ssm.pth [--arch tiny] [--key model]

Input: an ImageNet checkpoint released at github.com/MzeroMiko/VMamba (weights under ``model``,
EMA weights under ``model_ema``; the official detection/segmentation code uses ``model``),
including the early vanilla-VMamba releases with older key names, or a checkpoint of the
official detection/segmentation code (``backbone.*`` keys).
Output: ``{'state_dict': {'backbone.<key>': tensor}, 'meta': {...}}`` in this repo's key layout,
usable as ``init_cfg=dict(type='Pretrained', checkpoint=...)``, ``pretrained=`` or ``load_from``.
The conversion is checked by a strict load into :class:`VMamba`; its report (classification head
dropped, per-output norms left to be initialised) is printed. The arch is inferred from the
weights when ``--arch`` is not given.
"""
from __future__ import annotations

import os.path as osp
import sys
from collections.abc import Mapping

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmvision_ssm.checkpoint import (check_backbone_state, converter_parser,  # noqa: E402
                                     extract_state_dict, parse_converter_args, save_converted)
from mmvision_ssm.compat import safe_torch_load  # noqa: E402
from mmvision_ssm.models.backbones.vmamba import ARCH_SETTINGS, VMamba, infer_arch  # noqa: E402


def convert(src: str, arch: str | None = None, key: str = 'model') -> tuple[dict, str, list]:
    obj = safe_torch_load(src, map_location='cpu')
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        obj = obj[key]
    elif key != 'model':
        raise KeyError(f'{src} has no {key!r} entry (top-level keys: {sorted(obj)})')
    state = VMamba.convert_checkpoint(extract_state_dict(obj))
    arch = arch or infer_arch(state)
    kept, report = check_backbone_state(VMamba, arch, state, f'VMamba {arch} from {src} [{key}]')
    return kept, arch, report.initialised


def main(argv=None):
    parser = converter_parser(__doc__.split('\n\n')[0])
    parser.add_argument('--arch', choices=sorted(ARCH_SETTINGS),
                        help='default: inferred from the weights')
    parser.add_argument('--key', default='model',
                        help="entry holding the weights: 'model' (default, as the official "
                             "detection/segmentation code) or 'model_ema'")
    args = parse_converter_args(parser, argv)
    state, arch, initialised = convert(args.src, args.arch, args.key)
    save_converted(args.dst, state, dict(arch=arch, source=osp.basename(args.src),
                                         weights_key=args.key, initialised=list(initialised),
                                         converter='tools/convert_vmamba.py'))


if __name__ == '__main__':
    main()
