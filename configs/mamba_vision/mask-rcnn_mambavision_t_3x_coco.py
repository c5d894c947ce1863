# MambaVision-T + Mask R-CNN FPN, 3x schedule (36 epochs, DETR-style multi-scale + crop
# augmentation): the Swin recipe (mmdet swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py:
# 8 GPUs x 2, AdamW lr 1e-4, wd 0.05, lr x0.1 at epochs 27 and 33) with the backbone as in the
# official MambaVision detection configs (windows (8, 8, 112, 56), drop path 0.2, AMP). Not an
# official MambaVision setting; published number: none (official: Cascade Mask R-CNN 3x).
# Weights: https://huggingface.co/nvidia/MambaVision-T-1K (mambavision_tiny_1k.pth.tar) -> checkpoints/.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/mambavision_tiny_1k.pth.tar'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MambaVision',
        arch='T',
        window_size=(8, 8, 112, 56),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[80, 160, 320, 640]))
train_dataloader = dict(batch_size=2)  # x 8 GPUs
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
