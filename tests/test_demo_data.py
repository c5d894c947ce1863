"""The bundled demo data: real on-disk formats, deterministic for a seed."""
import hashlib
import json

import numpy as np
from PIL import Image

from mmvision_ssm.demo import CLASSES, SEG_CLASSES, ensure_demo_data, generate_demo_data


def _digest(root):
    h = hashlib.sha256()
    for rel in ('coco/annotations/instances_train.json', 'ade/annotations/training/train_00003.png'):
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def test_formats_and_determinism(tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    for root, seed in ((a, 3), (b, 3), (c, 4)):
        generate_demo_data(str(root), num_train=6, num_val=2, size=96, seed=seed)
    assert _digest(a) == _digest(b) != _digest(c)

    coco = json.loads((a / 'coco/annotations/instances_train.json').read_text())
    assert [cat['name'] for cat in coco['categories']] == list(CLASSES)
    assert len(coco['images']) == 6 and coco['annotations']
    from pycocotools import mask as mask_utils
    kinds = set()
    for ann in coco['annotations']:
        seg = ann['segmentation']
        kinds.add(type(seg).__name__)
        h = w = 96
        rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) else [
            dict(size=seg['size'], counts=seg['counts'].encode())]
        area = mask_utils.area(mask_utils.merge(rles) if isinstance(rles, list) else rles)
        assert abs(float(area) - ann['area']) <= 0.1 * ann['area'] + 20
        x, y, bw, bh = ann['bbox']
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 0 and bh > 0

    seg = np.array(Image.open(a / 'ade/annotations/training/train_00000.png'))
    assert seg.dtype == np.uint8 and seg.shape == (96, 96)
    assert set(np.unique(seg)) <= set(range(1, len(SEG_CLASSES) + 1))
    assert Image.open(a / 'ade/images/training/train_00000.jpg').size == (96, 96)


def test_ensure_only_generates_once(tmp_path):
    root = str(tmp_path / 'demo')
    ensure_demo_data(root, num_train=2, num_val=1, size=64)
    stamp = tmp_path / 'demo' / 'DEMO_DATA.json'
    first = stamp.stat().st_mtime_ns
    ensure_demo_data(root, num_train=2, num_val=1, size=64)
    assert stamp.stat().st_mtime_ns == first
    ensure_demo_data(root, num_train=3, num_val=1, size=64)  # other settings: regenerated
    assert json.loads(stamp.read_text())['num_train'] == 3
