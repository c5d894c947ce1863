# MViTv2-T + Mask R-CNN FPN, 1x schedule (12 epochs, single scale 1333x800, flip) on COCO.
#
# Backbone and optimisation follow the official MViTv2 detection configs (Li et al., CVPR 2022;
# detectron2 projects/MViTv2/configs/mask_rcnn_mvitv2_t_3x.py): ImageNet-1k MViTv2-T,
# hybrid window attention (window 56 at stride 4, global attention in the last block of stages
# 2-4), relative positions interpolated to the input size, drop path 0.2, per-stage LayerNorm
# outputs into an FPN, AdamW (betas 0.9/0.999, weight decay 0.1, none on norms, rel_pos_h/w),
# AMP. The official lr 1.6e-4 is for 64 images per iteration; scaled linearly to 4e-5 for the
# 16 used here (8 GPUs x 2), warm-up 250 iterations at 64 images = 1000 at 16.
# Published (detectron2 MViTv2 README, Mask R-CNN, 36 epochs, multi-scale + crop):
# MViTv2-T 48.3 box AP / 43.8 mask AP -- see mask-rcnn_mvitv2_t_3x_coco.py. The 1x row is not
# an official setting (published number: none); it matches the 1x rows of the other backbones.
#
# Weights: https://dl.fbaipublicfiles.com/mvit/mvitv2_models/MViTv2_T_in1k.pyth -> checkpoints/
# (official facebookresearch/mvit layout under 'model_state'; loads strictly, head dropped).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/MViTv2_T_in1k.pyth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MViTv2',
        arch='tiny',
        pretrain_img_size=224,
        window_size=56,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

train_dataloader = dict(batch_size=2)  # x 8 GPUs = 16 images per iteration
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={'rel_pos_h': dict(decay_mult=0.), 'rel_pos_w': dict(decay_mult=0.)}),
    optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.1))
