"""The main job as a new user runs it: the full demo trainings reach the promised metrics.

Slow (about 10 minutes each on 2 CPU cores): ``python -m pytest tests -m slow``.
"""
import json

import pytest

from conftest import REPO, run_tool

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('config, ckpt, metric, target', [
    ('configs/demo/maskrcnn_demo.py', 'epoch_12.pth', 'coco/bbox_mAP', 0.5),
    ('configs/demo/upernet_demo.py', 'iter_800.pth', 'mIoU', 60.0),
])
def test_demo_reaches_target(tmp_path, config, ckpt, metric, target):
    run_tool(['tools/train.py', REPO / config, '--work-dir', 'wd'], tmp_path, timeout=1800)
    run_tool(['tools/test.py', REPO / config, tmp_path / 'wd' / ckpt, '--work-dir', 'wd_test'],
             tmp_path, timeout=600)
    report = json.loads((tmp_path / 'wd_test' / 'report' / 'report.json').read_text())
    assert report['metrics'][metric] >= target, report['metrics']
