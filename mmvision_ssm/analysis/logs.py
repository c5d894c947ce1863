"""Read mmengine's scalar logs (``<work_dir>/<timestamp>/vis_data/scalars.json``) and plot them.

The file is JSON lines. Training lines carry ``iter`` (and ``epoch`` for epoch-based loops),
``step`` (the global iteration), the losses, ``lr``, ``time`` (seconds per iteration, averaged
over the logging interval) and ``data_time``. Validation lines carry the metrics
(``coco/bbox_mAP``, ``mIoU`` ...) and ``step``: the epoch for epoch-based runs (mmengine's
default ``log_metric_by_epoch=True``), the iteration otherwise. Curves are drawn against the
global iteration; a validation epoch is put at the last iteration of that epoch.
"""
import json
import math
import os.path as osp
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple


@dataclass
class RunLog:
    path: str
    train: List[dict] = field(default_factory=list)
    val: List[dict] = field(default_factory=list)

    @property
    def epoch_based(self) -> bool:
        return any('epoch' in r for r in self.train)

    def val_iteration(self, step: int) -> int:
        """Global iteration of a validation line (its ``step`` is an epoch in epoch-based runs)."""
        if not self.epoch_based:
            return step
        ends = {}
        for r in self.train:
            ends[r['epoch']] = max(ends.get(r['epoch'], 0), r['step'])
        if step in ends:
            return ends[step]
        return step * max(ends.values()) // max(ends)  # an epoch with no logged train line

    def series(self, key: str) -> Tuple[List[int], List[float]]:
        """(iterations, values) of ``key``, from the training lines, else the validation lines;
        non-finite values are dropped."""
        rows = [(r['step'], r[key]) for r in self.train if key in r]
        if not rows:
            rows = [(self.val_iteration(r['step']), r[key]) for r in self.val if key in r]
        rows = [(x, float(y)) for x, y in rows
                if isinstance(y, (int, float)) and math.isfinite(y)]
        return [x for x, _ in rows], [y for _, y in rows]

    def keys(self) -> List[str]:
        seen = {}
        for r in self.train + self.val:
            seen.update(dict.fromkeys(r))
        return [k for k in seen if k not in ('step', 'iter', 'epoch')]


def load_scalars(path: str) -> RunLog:
    """Parse one ``scalars.json`` (a work dir or its timestamp dir is resolved to the file)."""
    if osp.isdir(path):
        for cand in (osp.join(path, 'vis_data', 'scalars.json'), osp.join(path, 'scalars.json')):
            if osp.isfile(cand):
                path = cand
                break
        else:
            raise FileNotFoundError(f'{path} is a directory without vis_data/scalars.json; pass '
                                    "the file mmengine writes at <work_dir>/<timestamp>/vis_data/")
    if not osp.isfile(path):
        raise FileNotFoundError(f'log file not found: {path!r}')
    run = RunLog(path)
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)  # mmengine writes NaN for undefined metrics: json accepts it
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{lineno}: not a JSON line ({e})') from None
            if 'step' not in rec:
                continue
            (run.train if 'iter' in rec else run.val).append(rec)
    if not run.train and not run.val:
        raise ValueError(f'{path}: no scalar records (is it an mmengine vis_data/scalars.json?)')
    return run


def train_time(run: RunLog, include_outliers: bool = False) -> Dict[str, float]:
    """Seconds per training iteration. mmengine logs ``time`` averaged over each logging interval;
    the first logged interval (start-up, cudnn autotune, caches) is dropped unless
    ``include_outliers``. For epoch-based runs also the slowest/fastest epoch."""
    rows = [r for r in run.train if 'time' in r]
    if not include_outliers and len(rows) > 1:
        rows = rows[1:]
    if not rows:
        raise ValueError(f'{run.path}: no training lines with "time"')
    times = [float(r['time']) for r in rows]
    out = dict(mean=statistics.fmean(times), std=statistics.pstdev(times), n_intervals=len(times))
    if run.epoch_based:
        per_epoch = {}
        for r in rows:
            per_epoch.setdefault(r['epoch'], []).append(float(r['time']))
        means = {e: statistics.fmean(v) for e, v in per_epoch.items()}
        slow, fast = max(means, key=means.get), min(means, key=means.get)
        out.update(slowest_epoch=slow, slowest_epoch_time=means[slow], fastest_epoch=fast,
                   fastest_epoch_time=means[fast],
                   std_over_epochs=statistics.pstdev(list(means.values())))
    return out


def plot_curves(runs: Sequence[RunLog], keys: Sequence[str], out: str,
                legend: Sequence[str] = None, title: str = None):
    """One subplot per key, one line per run; writes ``out`` (PNG or any matplotlib format)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if legend is not None and len(legend) != len(runs):
        raise ValueError(f'--legend has {len(legend)} names for {len(runs)} logs')
    legend = legend or [osp.basename(osp.dirname(osp.dirname(r.path))) or r.path for r in runs]
    missing = [k for k in keys if not any(run.series(k)[0] for run in runs)]
    if missing:
        avail = sorted(set().union(*(run.keys() for run in runs)))
        raise ValueError(f'no values for {missing} in any log; available keys: {avail}')
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.8 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for i, (run, name) in enumerate(zip(runs, legend)):
            xs, ys = run.series(key)
            if xs:  # colour by run, so a run keeps its colour in every subplot
                ax.plot(xs, ys, label=name, color=f'C{i % 10}',
                        marker='o' if len(xs) < 20 else None)
        ax.set_ylabel(key)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
