# MLLA-T + Mask R-CNN (FPN) 3x multi-scale (ms-crop) on COCO.
# Follows the official LeapLabTHU/MLLA downstream/detection/configs/mlla/mlla_t_mrcnn_3x.py
# (mmdet 2.x), translated to mmdet 3.x.
# Published (official): box AP 48.8, mask AP 43.8.
# Recipe (official): as the 1x config (AdamW lr 1e-4, wd 0.05, 500 warm-up iters, same
# augmentation, 8 GPUs x 2 images) but 36 epochs with steps 27/33 and drop_path 0.3.
# Weights: see mask-rcnn_mlla_t_1x_coco.py (checkpoints/MLLA_T.pth).
_base_ = ['./mask-rcnn_mlla_t_1x_coco.py']

model = dict(backbone=dict(drop_path_rate=0.3))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
