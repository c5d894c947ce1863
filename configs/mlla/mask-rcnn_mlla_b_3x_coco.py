# MLLA-B + Mask R-CNN (FPN) 3x multi-scale (ms-crop) on COCO.
# NOT an official setting: LeapLabTHU/MLLA publishes no MLLA-B 3x config and no 3x result for B.
# Recipe as mask-rcnn_mlla_t_3x_coco.py; drop_path 0.5 is our choice (MLLA-B's ImageNet and
# official UperNet rate; the official T/S 3x configs raise 0.1 -> 0.3 for the long schedule).
# Weights: see mask-rcnn_mlla_b_1x_coco.py (checkpoints/MLLA_B.pth).
_base_ = ['./mask-rcnn_mlla_t_3x_coco.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
