# MLLA-B (embed 96, depths 3-6-21-6, heads 3-6-12-24) + Mask R-CNN (FPN) 1x on COCO.
# Follows the official LeapLabTHU/MLLA downstream/detection/configs/mlla/mlla_b_mrcnn_1x.py
# (mmdet 2.x), translated to mmdet 3.x; recipe as mask-rcnn_mlla_t_1x_coco.py (drop_path 0.1).
# Published (official): box AP 50.5, mask AP 45.0.
# Weights: MLLA-B ImageNet-1K, https://cloud.tsinghua.edu.cn/f/91c85c5a1061496d8796/?dl=1
#   saved as checkpoints/MLLA_B.pth (loaded strictly), or converted once with
#   python tools/convert_mlla.py checkpoints/MLLA_B.pth checkpoints/mlla_base.pth
_base_ = ['./mask-rcnn_mlla_t_1x_coco.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
