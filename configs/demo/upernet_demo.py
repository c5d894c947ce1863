# Main job on the bundled demo data: UperNet with a compact VMamba (v2 blocks: SS2D v05_noz
# + MLP) trained from scratch on CPU (2 cores) in about 10 minutes.
#   python tools/train.py configs/demo/upernet_demo.py
# Backbone: embed_dims 48 (48-96-192-384), depths 1-1-3-1, ssm_ratio 1, mlp_ratio 2 (2.7 M
# parameters), as in configs/demo/maskrcnn_demo.py; drop_path 0 because 800 iterations from
# scratch need no stochastic depth. The rest is the ResNet-18 demo recipe (AdamW 2e-3, 800 iters).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../_base_/datasets/demo_ade.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

num_classes = 6
crop_size = (256, 256)  # as in the dataset base
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True, type='VMamba',
        arch=dict(embed_dims=48, depths=(1, 1, 3, 1), ssm_ratio=1.0, mlp_ratio=2.0),
        drop_path_rate=0.0, out_indices=(0, 1, 2, 3), init_cfg=None),
    decode_head=dict(in_channels=[48, 96, 192, 384], channels=128, num_classes=num_classes,
                     norm_cfg=norm_cfg),
    auxiliary_head=None)

max_iters = 800
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=400, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
