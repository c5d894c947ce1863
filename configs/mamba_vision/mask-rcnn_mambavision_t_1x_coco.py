# MambaVision-T + Mask R-CNN FPN, 1x schedule (12 epochs, single scale 1333x800): not an official
# MambaVision setting -- it puts MambaVision in the Mask R-CNN rows used for the other backbones
# (Swin, VMamba, MLLA), with the Swin Mask R-CNN recipe (mmdet swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py:
# 8 GPUs x 2, AdamW lr 1e-4, weight decay 0.05, no decay on norms) and the backbone exactly as in
# the official MambaVision detection configs (detection windows (8, 8, 112, 56), drop path 0.2,
# AMP). Published number: none for this detector (official: Cascade Mask R-CNN 3x, see
# cascade-mask-rcnn_mambavision_t_3x_coco.py).
# Weights: https://huggingface.co/nvidia/MambaVision-T-1K (mambavision_tiny_1k.pth.tar) ->
# checkpoints/ (loads as released; tools/convert_mamba_vision.py writes a converted copy).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
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
