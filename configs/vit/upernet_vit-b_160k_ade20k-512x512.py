# ViT-B/16 + UperNet, ADE20K 512x512, 160k iterations, 16 images per iteration.
#
# Recipe: mmseg's ViT-B UperNet row (mmseg configs/vit/vit_vit-b16-ln_mln_upernet_8xb2-160k_
# ade20k-512x512.py; published 47.73 mIoU single scale, 49.95 ms+flip; the variant without the
# final LN, 46.75): ImageNet-21k-pretrained, 1k-fine-tuned ViT-B/16 (jx_vit_base_p16_224), global
# attention (a 512 crop is only 32x32 tokens), features of blocks 2, 5, 8, 11 each normalised and
# resized to strides 4/8/16/32, AdamW lr 6e-5, weight decay 0.01 (none on norms, position
# embedding), linear warm-up 1500 iterations then poly decay, no drop path.
# Difference: mmseg resizes with its MultiLevelNeck (768 channels); here the ViTDet simple
# feature pyramid (deconvolutions / max pooling, 256 channels) does it, as in the detection configs.
# Published number for this exact setting: none.
#
# Weights: https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/
# jx_vit_base_p16_224-80ecf9dd.pth (timm vit_base_patch16_224.orig_in21k_ft_in1k) -> checkpoints/
# (timm's vit_base_patch16_224.augreg_in21k or MAE weights load the same way).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/jx_vit_base_p16_224-80ecf9dd.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='base',
        pretrain_img_size=224,
        window_size=0,
        drop_path_rate=0.0,
        out_indices=(2, 5, 8, 11),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(
        type='SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5)),
    decode_head=dict(in_channels=[256, 256, 256, 256], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)  # x 8 GPUs = 16 per iteration
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
