# MViTv2-B + Mask R-CNN FPN, 1x schedule: mask-rcnn_mvitv2_t_1x_coco.py with the B backbone,
# depth 24 (2, 3, 16, 3), drop path 0.4 (detectron2 cascade_mask_rcnn_mvitv2_b_3x.py).
# Published: detectron2's MViTv2 README lists Cascade Mask R-CNN 3x MViTv2-B 54.1 box / 46.7 mask AP
# (IN-1k); it has no Mask R-CNN row for MViTv2-B: no published number for this detector.
# Weights: https://dl.fbaipublicfiles.com/mvit/mvitv2_models/MViTv2_B_in1k.pyth -> checkpoints/
_base_ = './mask-rcnn_mvitv2_t_1x_coco.py'

checkpoint_file = 'checkpoints/MViTv2_B_in1k.pyth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
