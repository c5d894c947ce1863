"""COCO metric that returns per-class AP for every task (bbox and segm) separately.

mmdet's ``CocoMetric(classwise=True)`` logs per-class tables but returns per-class values under
``<class>_precision`` keys that the segm pass overwrites with its own; we evaluate one task at a
time and keep both, as ``<task>_AP.<class>``.
"""
from mmdet.evaluation import CocoMetric


class CocoReportMetric(CocoMetric):
    """``CocoMetric`` with ``classwise=True`` and per-task, per-class AP in the results."""

    def __init__(self, *args, **kwargs):
        kwargs['classwise'] = True
        super().__init__(*args, **kwargs)

    def compute_metrics(self, results: list) -> dict:
        tasks = list(self.metrics)
        class_names = set(self.dataset_meta['classes'])
        merged = {}
        try:
            for task in tasks:
                self.metrics = [task]
                values = super().compute_metrics(results)
                for key, value in values.items():
                    name = key[:-len('_precision')] if key.endswith('_precision') else None
                    if name is not None and name in class_names:
                        merged[f'{task}_AP.{name}'] = value
                    else:
                        merged[key] = value
        finally:
            self.metrics = tasks
        return merged
