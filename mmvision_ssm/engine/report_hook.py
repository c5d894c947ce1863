"""Evaluation report: a progress bar during inference, the metric table on the console, and
``report.json`` + ``report.md`` + per-class bar plots (PNG) in the work dir."""
from __future__ import annotations

import datetime
import json
import math
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.utils import ProgressBar, mkdir_or_exist


def split_metrics(metrics: dict) -> tuple[dict, dict]:
    """Separate summary metrics from per-class ones (``[prefix/]group.class`` keys)."""
    summary, per_class = {}, {}
    for key, value in metrics.items():
        prefix, _, rest = key.rpartition('/')
        group, dot, cls = rest.partition('.')
        if dot:
            per_class.setdefault((prefix + '/' if prefix else '') + group, {})[cls] = value
        else:
            summary[key] = value
    return summary, per_class


def format_table(rows: list, header: tuple) -> str:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'
    out = [line, '| ' + ' | '.join(str(h).ljust(w) for h, w in zip(header, widths)) + ' |', line]
    out += ['| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |' for r in rows]
    return '\n'.join(out + [line])


def _fmt(value) -> str:
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def plot_per_class(values: dict, title: str, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(values)
    heights = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
               for v in values.values()]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 1.5), 3.2))
    ax.bar(range(len(names)), heights, color='#4878b0')
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha='right'
                  if len(names) > 6 else 'center', fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(title.rsplit('/', 1)[-1])
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(metrics: dict, out_dir: str, info: dict | None = None) -> dict:
    """Write report.json, report.md and one PNG per per-class group; return the report dict."""
    mkdir_or_exist(out_dir)
    summary, per_class = split_metrics(metrics)
    report = dict(info or {}, date=datetime.datetime.now().isoformat(timespec='seconds'),
                  metrics=summary, per_class=per_class)
    with open(osp.join(out_dir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=2, default=float)
    lines = ['# Evaluation report', '']
    lines += [f'- **{k}**: {v}' for k, v in (info or {}).items()] + [f'- **date**: {report["date"]}', '']
    lines += ['## Metrics', '', '| metric | value |', '| --- | --- |']
    lines += [f'| {k} | {_fmt(v)} |' for k, v in summary.items()]
    for group, values in per_class.items():
        png = group.replace('/', '_') + '.png'
        plot_per_class(values, group, osp.join(out_dir, png))
        lines += ['', f'## Per class: {group}', '', f'![{group}]({png})', '',
                  '| class | value |', '| --- | --- |']
        lines += [f'| {c} | {_fmt(v)} |' for c, v in values.items()]
    with open(osp.join(out_dir, 'report.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return report


class EvalReportHook(Hook):
    """Progress bar over the test set, then the metric tables and the written report."""

    priority = 'VERY_LOW'

    def __init__(self, out_dir: str | None = None, info: dict | None = None):
        self.out_dir = out_dir
        self.info = info or {}
        self._bar = None

    def before_test_epoch(self, runner) -> None:
        if is_main_process():
            self._bar = ProgressBar(len(runner.test_dataloader))

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._bar = None
        if not is_main_process() or not metrics:
            return
        summary, per_class = split_metrics(metrics)
        text = ['', format_table([(k, _fmt(v)) for k, v in summary.items()], ('metric', 'value'))]
        for group, values in per_class.items():
            text += [group, format_table([(c, _fmt(v)) for c, v in values.items()], ('class', group))]
        out_dir = self.out_dir or osp.join(runner.work_dir, 'report')
        write_report(metrics, out_dir, dict(self.info, experiment=runner.experiment_name))
        runner.logger.info('\n'.join(text) + f'\nreport written to {out_dir}/report.md')
