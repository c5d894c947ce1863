# MViTv2-S + Mask R-CNN FPN, 3x schedule: mask-rcnn_mvitv2_t_3x_coco.py with the S backbone,
# depth 16 (1, 2, 11, 2), drop path 0.2 (detectron2 cascade_mask_rcnn_mvitv2_s_3x.py).
# Published: detectron2's MViTv2 README lists Cascade Mask R-CNN 3x MViTv2-S 53.2 box / 46.0 mask AP
# (IN-1k); it has no Mask R-CNN row for MViTv2-S: no published number for this detector.
# Weights: https://dl.fbaipublicfiles.com/mvit/mvitv2_models/MViTv2_S_in1k.pyth -> checkpoints/
_base_ = './mask-rcnn_mvitv2_t_3x_coco.py'

checkpoint_file = 'checkpoints/MViTv2_S_in1k.pyth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
