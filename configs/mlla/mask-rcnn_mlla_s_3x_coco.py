# MLLA-S + Mask R-CNN (FPN) 3x multi-scale (ms-crop) on COCO.
# Follows the official LeapLabTHU/MLLA downstream/detection/configs/mlla/mlla_s_mrcnn_3x.py
# (mmdet 2.x), translated to mmdet 3.x; recipe as mask-rcnn_mlla_t_3x_coco.py (drop_path 0.3).
# Published (official): box AP 50.5, mask AP 44.9.
# Weights: see mask-rcnn_mlla_s_1x_coco.py (checkpoints/MLLA_S.pth).
_base_ = ['./mask-rcnn_mlla_t_3x_coco.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
