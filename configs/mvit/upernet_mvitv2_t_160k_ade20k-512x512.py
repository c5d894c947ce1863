# MViTv2-T + UperNet, ADE20K 512x512, 160k iterations, 16 images per iteration.
#
# MViTv2 has no official semantic segmentation setting (published number: none). The recipe is
# the mmseg Swin UperNet row used for the other backbones here (mmseg configs/swin/
# swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py: AdamW lr 6e-5, weight
# decay 0.01 with none on norms and relative positions, linear warm-up 1500 iterations then poly
# decay, 8 GPUs x 2); the backbone is set as in the official MViTv2 detection configs (hybrid
# window attention 56, drop path 0.2, relative positions interpolated to the input size).
#
# Weights: https://dl.fbaipublicfiles.com/mvit/mvitv2_models/MViTv2_T_in1k.pyth -> checkpoints/
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/MViTv2_T_in1k.pyth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='MViTv2',
        arch='tiny',
        pretrain_img_size=224,
        window_size=56,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={'rel_pos_h': dict(decay_mult=0.), 'rel_pos_w': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)  # x 8 GPUs = 16 per iteration
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
