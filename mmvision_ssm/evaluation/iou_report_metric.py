"""mmseg's IoU metric, additionally returning per-class IoU and accuracy (``IoU.<class>``)."""
import numpy as np
from mmseg.evaluation import IoUMetric


class IoUReportMetric(IoUMetric):

    def compute_metrics(self, results: list) -> dict:
        metrics = super().compute_metrics(results)
        if self.format_only or not results:
            return metrics
        areas = [sum(column) for column in zip(*results)]
        per_class = self.total_area_to_metrics(*areas, ['mIoU'], self.nan_to_num, self.beta)
        for name, iou, acc in zip(self.dataset_meta['classes'], per_class['IoU'], per_class['Acc']):
            metrics[f'IoU.{name}'] = float(np.round(iou * 100, 2))
            metrics[f'Acc.{name}'] = float(np.round(acc * 100, 2))
        return metrics
