# MLLA-T (embed 64, depths 2-4-8-4, heads 2-4-8-16) + Mask R-CNN (FPN) 1x on COCO.
# Follows the official LeapLabTHU/MLLA downstream/detection/configs/mlla/mlla_t_mrcnn_1x.py
# (mmdet 2.x), translated to mmdet 3.x.
# Published (official): box AP 46.8, mask AP 42.1.
# Recipe (official): AdamW lr 1e-4, wd 0.05, no decay on norms; 12 epochs, steps 8/11, linear
# warm-up 500 iters (ratio 0.001); 8 GPUs x 2 images; drop_path 0.1; and -- even for 1x -- the
# DETR-style multi-scale + crop augmentation, i.e. the pipeline of mmdet's Swin ms-crop-3x config
# inherited here (its schedule is replaced by the 1x one below).
# Weights: MLLA-T ImageNet-1K, https://cloud.tsinghua.edu.cn/f/7a19712877cb4242889c/?dl=1
#   (linked from github.com/LeapLabTHU/MLLA), saved as checkpoints/MLLA_T.pth: it is loaded
#   strictly (its "model" entry; classifier, final norm and the fixed-size RoPE tables are dropped,
#   the per-output norms are new). Or convert it once:
#   python tools/convert_mlla.py checkpoints/MLLA_T.pth checkpoints/mlla_tiny.pth
#   and point init_cfg.checkpoint at the converted file.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='MLLA',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]
# AdamW lr 1e-4, betas (0.9, 0.999), wd 0.05 and the 'norm' no-decay rule come from the base.
