# ViT-B (ViTDet backbone) + simple feature pyramid + Mask R-CNN, 1x schedule (12 epochs, single
# scale 1333x800, flip) on COCO.
#
# Backbone and optimisation follow ViTDet (Li et al., ECCV 2022; detectron2
# projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py + common/models/mask_rcnn_vitdet.py):
# MAE-pretrained ViT-B/16, window attention 14 with global attention in blocks 2, 5, 8, 11,
# drop path 0.1, the simple feature pyramid (scales 4, 2, 1, 1/2 with LayerNorm, 256 channels,
# P6 by max pooling) instead of an FPN, AdamW (betas 0.9/0.999, weight decay 0.1, none on norms
# and the position embedding), layer-wise lr decay 0.7 over 12 blocks, AMP.
# Published (ViTDet, 100 epochs with large-scale jitter at 1024x1024, batch 64):
# 51.6 box AP / 45.9 mask AP. This config is NOT that recipe: it is the mmdet 1x row used for all
# backbones here (mmdet's standard Mask R-CNN heads -- ViTDet uses a 4conv1fc LN box head and a
# 2-conv RPN --, 1333x800 input, 16 images per iteration). ViTDet's peak lr 1e-4 is for 64 images;
# it is scaled linearly to 2.5e-5 for 16 (auto_scale_lr base 16 rescales it further if enabled).
# Published number for this exact setting: none.
#
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth -> checkpoints/
# (timm / original ViT checkpoints load the same way: cls token and head dropped, report printed).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/mae_pretrain_vit_base.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='base',
        pretrain_img_size=224,
        window_size=14,
        global_blocks=(2, 5, 8, 11),
        drop_path_rate=0.1,
        out_indices=(11,),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5))

train_dataloader = dict(batch_size=2)  # x 8 GPUs = 16 images per iteration
param_scheduler = [
    # ViTDet: 250 warm-up iterations at 64 images = 1000 at 16
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.7,
        num_layers=12,
        norm_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}),
    optimizer=dict(type='AdamW', lr=2.5e-5, betas=(0.9, 0.999), weight_decay=0.1))
