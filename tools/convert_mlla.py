"""Convert an official MLLA checkpoint into a file mmdet/mmseg configs load directly.

    python tools/convert_mlla.py MLLA_T.pth checkpoints/mlla_tiny_mmvision_ssm.pth [--arch tiny]

Input: an ImageNet checkpoint released at github.com/LeapLabTHU/MLLA (weights under ``model``;
training checkpoints may also hold EMA weights under ``state_dict_ema``, which the official
detection/segmentation code does not use), or a checkpoint of the official
detection/segmentation code (``backbone.*`` keys under ``state_dict``).
Output: ``{'state_dict': {'backbone.<key>': tensor}, 'meta': {...}}`` in this repo's key layout
(``in_proj`` and ``act_proj`` stacked into one ``in_proj``; the RoPE ``rotations`` buffers, sized
for the training resolution, dropped: the tables are computed for the actual feature size),
usable as ``init_cfg=dict(type='Pretrained', checkpoint=...)``, ``pretrained=`` or ``load_from``.
The conversion is checked by a strict load into :class:`MLLA`; its report (classifier and its
final norm dropped, per-output norms left to be initialised) is printed. The arch is inferred
from the weights when ``--arch`` is not given.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from collections.abc import Mapping

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmvision_ssm.checkpoint import (check_backbone_state, converter_parser,  # noqa: E402
                                     extract_state_dict, parse_converter_args, save_converted)
from mmvision_ssm.compat import safe_torch_load  # noqa: E402
from mmvision_ssm.models.backbones.mlla import MLLA, infer_arch  # noqa: E402

# the official downstream code reads 'state_dict' if present, else 'model'
DEFAULT_KEYS = ('state_dict', 'model')


def convert(src, arch: str | None = None, key: str | None = None) -> tuple[dict, str, list]:
    """``src``: a path or a loaded checkpoint object. Returns (state, arch, initialised keys)."""
    obj = safe_torch_load(src, map_location='cpu') if isinstance(src, (str, os.PathLike)) else src
    if isinstance(obj, Mapping):
        if key is None:  # None: the weights sit at the top level
            key = next((k for k in DEFAULT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is not None:
            if not isinstance(obj.get(key), Mapping):
                raise KeyError(f'{src} has no {key!r} entry (top-level keys: {sorted(obj)})')
            obj = obj[key]
    state = MLLA.convert_checkpoint(extract_state_dict(obj))
    arch = arch or infer_arch(state)
    name = src if isinstance(src, str) else '<object>'
    kept, report = check_backbone_state(MLLA, arch, state,
                                        f'MLLA {arch} from {name} [{key or "top level"}]')
    return kept, arch, report.initialised


def main(argv=None):
    parser = converter_parser(__doc__.split('\n\n')[0])
    parser.add_argument('--arch', choices=('tiny', 'small', 'base'),
                        help='default: inferred from the weights')
    parser.add_argument('--key', default=None,
                        help="entry holding the weights (default: 'state_dict' if present, else "
                             "'model', as the official detection/segmentation code); "
                             "'state_dict_ema' for the EMA weights of a training checkpoint")
    args = parse_converter_args(parser, argv)
    state, arch, initialised = convert(args.src, args.arch, args.key)
    save_converted(args.dst, state, dict(arch=arch, source=osp.basename(args.src),
                                         weights_key=args.key, initialised=list(initialised),
                                         converter='tools/convert_mlla.py'))


if __name__ == '__main__':
    main()
