# ViT-B (ViTDet backbone) + simple feature pyramid + Mask R-CNN, 3x schedule (36 epochs, lr x0.1 at
# epochs 27 and 33) with the DETR-style multi-scale + crop augmentation of mmdet's Swin 3x row
# (mmdet swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py). Model and optimiser exactly as in
# mask-rcnn_vit-b_1x_coco.py (ViTDet backbone, layer decay 0.7, AdamW wd 0.1, AMP).
# Published (ViTDet Mask R-CNN ViT-B, 100 epochs LSJ 1024, batch 64): 51.6 box / 45.9 mask AP;
# published number for this 3x setting: none.
_base_ = './mask-rcnn_vit-b_1x_coco.py'

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
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
