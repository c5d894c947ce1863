"""Parameters and FLOPs of a detector / segmentor config (or its backbone) at an input shape.

    python tools/get_flops.py CONFIG --shape H [W] [--backbone-only] [--cfg-options k=v ...]
                              [--depth 1] [--out flops.json]

No dataset and no weights are needed: the model is built from ``cfg.model`` and traced once on a
random (1, 3, H, W) image. Counting: fvcore/mmengine conventions (one multiply-add = one FLOP,
element-wise ops not counted) plus the selective scan, SDPA and MLLA's linear attention; see
``mmvision_ssm/analysis/flops.py``.
"""
import argparse
import json
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a config')
    parser.add_argument('config', help='config file (mmdet or mmseg scope)')
    parser.add_argument('--shape', type=int, nargs='+', default=[512, 512],
                        help='input size: H [W] (W = H when omitted)')
    parser.add_argument('--backbone-only', action='store_true', help='count the backbone alone')
    parser.add_argument('--depth', type=int, default=1,
                        help='module depth of the per-module table (1: backbone, neck, heads)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.arch=small')
    parser.add_argument('--out', help='write the results to this JSON file')
    return parser.parse_args(argv)


def _fmt(n):
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= scale:
            return f'{n / scale:.3f}{unit}'
    return str(n)


def main(argv=None):
    args = parse_args(argv)
    if len(args.shape) not in (1, 2):
        print('error: --shape takes H or H W', file=sys.stderr)
        return 2
    shape = (args.shape[0], args.shape[-1])
    from mmvision_ssm.analysis.flops import config_flops
    from mmvision_ssm.runner_utils import ConfigError, load_config
    try:
        cfg = load_config(args.config, args.cfg_options)
        res = config_flops(cfg, shape, backbone_only=args.backbone_only)
    except (ConfigError, ValueError, KeyError) as e:  # KeyError: unknown registry type
        print(f'error: {e}', file=sys.stderr)
        return 2

    rows = res.rows(args.depth)
    width = max([len('(total)')] + [len(n) for n, _, _ in rows])
    print(f'{"module":<{width}} {"params":>10} {"FLOPs":>10} {"share":>7}')
    print(f'{"(total)":<{width}} {_fmt(res.params):>10} {_fmt(res.total):>10} {100:>6.1f}%')
    for name, p, f in rows:
        share = 100.0 * f / res.total if res.total else 0.0
        print(f'{name:<{width}} {_fmt(p):>10} {_fmt(f):>10} {share:>6.1f}%')
    print('\nFLOPs by operator: ' + ', '.join(
        f'{k} {_fmt(v)}' for k, v in sorted(res.by_operator.items(), key=lambda kv: -kv[1])))
    if res.unsupported:
        print('not counted (element-wise or unknown): ' + ', '.join(
            f'{k} x{v}' for k, v in sorted(res.unsupported.items())))
    split = '=' * 30
    what = 'backbone' if args.backbone_only else 'model'
    print(f'\n{split}\nCompute type: direct: randomly generated image, {what}\n'
          f'Input shape: {shape}\nFlops: {_fmt(res.total)}\nParams: {_fmt(res.params)}\n{split}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(config=args.config, input_shape=list(shape),
                           backbone_only=args.backbone_only, flops=res.total, params=res.params,
                           modules={n: dict(params=p, flops=fl) for n, p, fl in rows},
                           by_operator=res.by_operator, not_counted=res.unsupported), f,
                      indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
