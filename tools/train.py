"""Train a detector (mmdet config) or a segmentor (mmseg config).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [PATH]] [--auto-scale-lr]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse
import os
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='config file (mmdet or mmseg scope)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (bf16 where the GPU supports it, else fp16)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from PATH, or from the latest checkpoint in the work dir')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size / auto_scale_lr.base_batch_size')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='allow arbitrary unpickling of checkpoints (only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.runner import Runner

    from mmvision_ssm import runner_utils as ru
    ru.init_environment(unsafe_load=args.unsafe_load)
    try:
        cfg = ru.load_config(args.config, args.cfg_options)
        cfg.launcher = args.launcher
        ru.fix_dist_backend(cfg)
        cfg.work_dir = args.work_dir or cfg.get('work_dir') or ru.default_work_dir(args.config)
        if args.amp:
            ru.setup_amp(cfg)
        if args.auto_scale_lr:
            if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
                raise ru.ConfigError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                                     'config (the total batch size its lr was tuned for)')
            cfg.auto_scale_lr.enable = True
        if args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume is not None:
            if not os.path.isfile(args.resume):
                raise ru.ConfigError(f'--resume {args.resume}: no such checkpoint file')
            cfg.resume, cfg.load_from = True, args.resume
        ru.use_report_metrics(cfg)
        ru.prepare_data(cfg, ('train_dataloader', 'val_dataloader'))
        ru.check_num_classes(cfg)
    except ru.ConfigError as err:
        sys.exit(f'error: {err}')
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
