"""Generate the demo dataset.

Scenes are 256x256: a sky/ground background with smooth random texture and pixel noise, and one
to four saturated shapes (circle, square, triangle, ring) of random colour, size and rotation.
Shape class is only learnable from the outline, not the colour. Outputs, under ``root``:

    coco/train/*.jpg, coco/val/*.jpg, coco/annotations/instances_{train,val}.json
        (polygons for circle/square/triangle; compressed RLE for the ring, which has a hole)
    ade/images/{training,validation}/*.jpg, ade/annotations/{training,validation}/*.png
        (ADE20K convention: 0 = unlabeled, classes start at 1; use reduce_zero_label=True)
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'ring')
SEG_CLASSES = ('sky', 'ground') + CLASSES
SPLITS = {'train': 'training', 'val': 'validation'}
_VERSION = 1  # bump when the generator changes, so stale data is regenerated


def _texture(rng, size, base, amplitude):
    """Smooth random texture: a few random plane waves plus per-pixel noise, around ``base``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    field = np.zeros((size, size), np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(-6, 6, size=2)
        field += np.sin(2 * math.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * math.pi))
    field = field / 4 * amplitude
    img = np.asarray(base, np.float32)[None, None, :] + field[..., None] * rng.uniform(0.6, 1.0, 3)
    img += rng.normal(0, 8, size=(size, size, 3))
    return img


def _shape_polygon(rng, kind, cx, cy, r):
    rot = rng.uniform(0, 2 * math.pi)
    if kind == 'square':
        angles = rot + np.arange(4) * math.pi / 2 + math.pi / 4
    elif kind == 'triangle':
        angles = rot + np.arange(3) * 2 * math.pi / 3
    else:  # circle: a fine polygon, so the COCO polygon equals the drawn region
        angles = np.arange(48) * 2 * math.pi / 48
    return [(float(cx + r * math.cos(a)), float(cy + r * math.sin(a))) for a in angles]


def _draw_scene(rng, size):
    horizon = rng.uniform(0.3, 0.6) * size
    sky = _texture(rng, size, (110, 140, 170), 25)
    ground = _texture(rng, size, (120, 105, 80), 30)
    cols = np.arange(size)
    wave = horizon + 8 * np.sin(cols / size * 2 * math.pi * rng.uniform(0.5, 2) + rng.uniform(0, 6))
    is_sky = np.arange(size)[:, None] < wave[None, :]
    image = np.where(is_sky[..., None], sky, ground)
    seg = np.where(is_sky, SEG_CLASSES.index('sky') + 1, SEG_CLASSES.index('ground') + 1)
    seg = seg.astype(np.uint8)

    objects, taken = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            r = rng.uniform(0.0625, 0.1875) * size  # 16..48 px at 256
            cx, cy = rng.uniform(r, size - r, size=2)
            # keep shapes mostly apart so every instance stays clearly visible
            if all(math.hypot(cx - x, cy - y) > 0.8 * (r + rr) for x, y, rr in taken):
                break
        else:
            continue
        taken.append((cx, cy, r))
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        mask_img = Image.new('L', (size, size), 0)
        draw = ImageDraw.Draw(mask_img)
        polygon = None
        if kind == 'ring':
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
            inner = r * rng.uniform(0.4, 0.6)
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
        else:
            polygon = _shape_polygon(rng, kind, cx, cy, r)
            draw.polygon(polygon, fill=1)
        mask = np.asarray(mask_img, bool)
        colour = rng.uniform(0, 1, 3)
        colour = 40 + 200 * (colour - colour.min()) / (np.ptp(colour) + 1e-6)  # saturated
        image[mask] = colour + rng.normal(0, 6, size=(int(mask.sum()), 3))
        seg[mask] = SEG_CLASSES.index(kind) + 1
        objects.append(dict(kind=kind, mask=mask, polygon=polygon))
    # later shapes may cover parts of earlier ones: keep only what is visible
    visible = np.zeros((size, size), bool)
    for obj in reversed(objects):
        obj['mask'] &= ~visible
        visible |= obj['mask']
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, seg, [o for o in objects if o['mask'].sum() >= 64]


def _coco_annotation(obj, ann_id, image_id, mask_utils):
    mask = obj['mask']
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if obj['polygon'] is not None and obj['mask'].sum() > 0.97 * _polygon_area(obj['polygon']):
        segmentation = [[round(c, 2) for xy in obj['polygon'] for c in xy]]
    else:  # rings, and shapes partly hidden by another: compressed RLE of the visible part
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = dict(size=rle['size'], counts=rle['counts'].decode('ascii'))
    return dict(id=ann_id, image_id=image_id, category_id=CLASSES.index(obj['kind']) + 1,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float(mask.sum()), iscrowd=0, segmentation=segmentation)


def _polygon_area(polygon):
    xs, ys = np.array(polygon).T
    return 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))


def generate_demo_data(root: str, num_train: int = 240, num_val: int = 60, size: int = 256,
                       seed: int = 0) -> str:
    """Write the demo dataset under ``root`` (deterministic for a seed); return ``root``."""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(root, 'coco', split)
        ade_img = osp.join(root, 'ade', 'images', SPLITS[split])
        ade_ann = osp.join(root, 'ade', 'annotations', SPLITS[split])
        for d in (img_dir, ade_img, ade_ann, osp.join(root, 'coco', 'annotations')):
            os.makedirs(d, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, seg, objects = _draw_scene(rng, size)
            name = f'{split}_{i:05d}'
            Image.fromarray(image).save(osp.join(img_dir, name + '.jpg'), quality=95)
            Image.fromarray(image).save(osp.join(ade_img, name + '.jpg'), quality=95)
            Image.fromarray(seg).save(osp.join(ade_ann, name + '.png'))
            images.append(dict(id=i + 1, file_name=name + '.jpg', width=size, height=size))
            for obj in objects:
                annotations.append(_coco_annotation(obj, len(annotations) + 1, i + 1, mask_utils))
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)])
        with open(osp.join(root, 'coco', 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    with open(osp.join(root, 'DEMO_DATA.json'), 'w') as f:
        json.dump(dict(version=_VERSION, seed=seed, num_train=num_train, num_val=num_val,
                       size=size), f)
    return root


def ensure_demo_data(root: str, **kwargs) -> str:
    """Generate the demo data unless ``root`` already holds this generator's version of it."""
    stamp = osp.join(root, 'DEMO_DATA.json')
    if osp.isfile(stamp):
        with open(stamp) as f:
            meta = json.load(f)
        wanted = dict(dict(num_train=240, num_val=60, size=256, seed=0), **kwargs)
        if meta.get('version') == _VERSION and all(meta.get(k) == v for k, v in wanted.items()):
            return root
    print(f'[mmvision_ssm] generating demo data in {root} ...', flush=True)
    return generate_demo_data(root, **kwargs)
