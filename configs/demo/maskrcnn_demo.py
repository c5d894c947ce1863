# Main job on the bundled demo data: Mask R-CNN with a compact VMamba (v2 blocks: SS2D
# v05_noz + MLP) trained from scratch on CPU (2 cores) in about 10 minutes.
#   python tools/train.py configs/demo/maskrcnn_demo.py
# Backbone: embed_dims 48 (48-96-192-384), depths 1-1-3-1, ssm_ratio 1, mlp_ratio 2 (2.7 M
# parameters, about ResNet-18's speed here); drop_path 0 because 12 short epochs from scratch
# need no stochastic depth. The rest is the ResNet-18 demo recipe (AdamW 1e-3, 12 epochs).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/demo_coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

neck_channels = 64
num_classes = 4
model = dict(
    backbone=dict(
        _delete_=True, type='VMamba',
        arch=dict(embed_dims=48, depths=(1, 1, 3, 1), ssm_ratio=1.0, mlp_ratio=2.0),
        drop_path_rate=0.0, out_indices=(0, 1, 2, 3), init_cfg=None),
    neck=dict(in_channels=[48, 96, 192, 384], out_channels=neck_channels),
    rpn_head=dict(in_channels=neck_channels, feat_channels=neck_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels),
        bbox_head=dict(in_channels=neck_channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=neck_channels),
        mask_head=dict(in_channels=neck_channels, conv_out_channels=neck_channels,
                       num_classes=num_classes)),
    # small images with few objects: fewer proposals and samples keep CPU training fast
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200), rcnn=dict(max_per_img=20)))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs,
         eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=4, max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
