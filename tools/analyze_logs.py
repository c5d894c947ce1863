"""Curves and training speed from mmengine's scalar logs (<work_dir>/<ts>/vis_data/scalars.json).

    python tools/analyze_logs.py plot_curve LOG.json [LOG2.json ...] --keys loss lr coco/bbox_mAP
                                 [--legend run1 run2] [--title T] --out plot.png
    python tools/analyze_logs.py cal_train_time LOG.json [...] [--include-outliers]

Several logs go on one plot (one line each), one subplot per key; a work dir or timestamp dir
may be given instead of the file.
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Analyse mmengine scalar logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot scalars against the iteration')
    plot.add_argument('logs', nargs='+', help='scalars.json files (or their run directories)')
    plot.add_argument('--keys', nargs='+', default=['loss'], help='scalars to plot')
    plot.add_argument('--legend', nargs='+', help='one name per log (default: the run dir)')
    plot.add_argument('--title', help='figure title')
    plot.add_argument('--out', required=True, help='output image, e.g. curves.png')
    timing = sub.add_parser('cal_train_time', help='average seconds per training iteration')
    timing.add_argument('logs', nargs='+', help='scalars.json files (or their run directories)')
    timing.add_argument('--include-outliers', action='store_true',
                        help='keep the first logged interval (start-up) in the average')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmvision_ssm.analysis.logs import load_scalars, plot_curves, train_time
    try:
        runs = [load_scalars(p) for p in args.logs]
        if args.task == 'plot_curve':
            plot_curves(runs, args.keys, args.out, legend=args.legend, title=args.title)
            print(f'saved {args.out}')
            return 0
        for run in runs:
            t = train_time(run, include_outliers=args.include_outliers)
            print(f'{"-" * 10} {run.path}')
            if 'slowest_epoch' in t:
                print(f'slowest epoch {t["slowest_epoch"]}: {t["slowest_epoch_time"]:.4f} s/iter')
                print(f'fastest epoch {t["fastest_epoch"]}: {t["fastest_epoch_time"]:.4f} s/iter')
                print(f'std over epochs: {t["std_over_epochs"]:.4f}')
            print(f'average iter time: {t["mean"]:.4f} s/iter '
                  f'(std {t["std"]:.4f}, {t["n_intervals"]} logged intervals)')
        return 0
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
