"""Evaluate a checkpoint; prints the metric table (with a progress bar during inference) and
writes report.json, report.md and per-class plots into WORK_DIR/report.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR] [--show-dir DIR]
                         [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

--out: detection -> a .pkl of raw predictions; segmentation -> a directory of predicted PNGs.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a detector or a segmentor')
    parser.add_argument('config', help='config file (mmdet or mmseg scope)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the log and the report go')
    parser.add_argument('--out', help='save raw predictions (.pkl for detection, a dir for '
                        'segmentation)')
    parser.add_argument('--show-dir', help='save images with predictions drawn into this dir')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='allow arbitrary unpickling of the checkpoint (only if you trust it)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. test_dataloader.batch_size=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _enable_visualisation(cfg, show_dir):
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise SystemExit('error: --show-dir needs default_hooks.visualization in the config')
    hook['draw'] = True
    if cfg.default_scope == 'mmdet':
        hook['test_out_dir'] = osp.abspath(show_dir)
    else:
        cfg.visualizer['save_dir'] = osp.abspath(show_dir)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.runner import Runner

    from mmvision_ssm import runner_utils as ru
    ru.init_environment(unsafe_load=args.unsafe_load)
    try:
        cfg = ru.load_config(args.config, args.cfg_options)
        if not osp.isfile(args.checkpoint):
            raise ru.ConfigError(f'checkpoint not found: {args.checkpoint!r}')
        cfg.launcher = args.launcher
        ru.fix_dist_backend(cfg)
        cfg.work_dir = args.work_dir or cfg.get('work_dir') or ru.default_work_dir(args.config)
        cfg.load_from = args.checkpoint
        ru.use_report_metrics(cfg)
        ru.prepare_data(cfg, ('test_dataloader',))
        ru.check_num_classes(cfg)
        if args.show_dir:
            _enable_visualisation(cfg, args.show_dir)
        if args.out and cfg.default_scope == 'mmseg':
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True
        elif args.out and not args.out.endswith(('.pkl', '.pickle')):
            raise ru.ConfigError(f'--out {args.out}: detection predictions are saved as a .pkl file')
    except ru.ConfigError as err:
        sys.exit(f'error: {err}')
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(
        type='EvalReportHook', info=dict(config=args.config, checkpoint=args.checkpoint))]
    runner = Runner.from_cfg(cfg)
    if args.out and cfg.default_scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
