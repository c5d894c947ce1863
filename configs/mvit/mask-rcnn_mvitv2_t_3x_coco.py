# MViTv2-T + Mask R-CNN FPN, 3x schedule: the official MViTv2 detection recipe (detectron2
# projects/MViTv2/configs/mask_rcnn_mvitv2_t_3x.py + configs/common/coco_loader.py): 36 epochs,
# DETR-style augmentation (shortest edge 480..800 step 32, max 1333, and with probability 1/2 a
# resize to 400/500/600 + random crop 384..600 first), flip; lr x0.1 at 52500 and 62500 of 67500
# iterations (epochs 28 and 33 here), everything else as mask-rcnn_mvitv2_t_1x_coco.py
# (AdamW lr 1.6e-4 @ 64 images -> 4e-5 @ 16, wd 0.1, drop path 0.2, window 56, AMP).
# Published (detectron2 MViTv2 README): MViTv2-T Mask R-CNN 48.3 box AP / 43.8 mask AP.
_base_ = './mask-rcnn_mvitv2_t_1x_coco.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[[
            dict(type='RandomChoiceResize',
                 scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
                         (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
                         (800, 1333)],
                 keep_ratio=True)
        ], [
            dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                 keep_ratio=True),
            dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                 allow_negative_crop=True),
            dict(type='RandomChoiceResize',
                 scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
                         (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
                         (800, 1333)],
                 keep_ratio=True)
        ]]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[28, 33],
         gamma=0.1)
]
