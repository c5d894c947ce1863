# Mask R-CNN R-50-FPN 1x on COCO with one MLLAttention block (a residual MLLA block: gated linear
# attention with 2-D RoPE and LePE, then an MLP) on an FPN output, as the MLLA design notes in
# ../shared/seeds add it to YOLOv8: after the large-object detection level, "P5/32-large".
# Here that is FPN output 3 (P5, stride 32); levels count from 0 = P2 (stride 4). P6 (output 4)
# is max-pooled from P5 inside the FPN, before the plug-in. Level 0 works too (any size), but
# costs about 64x the tokens of level 3.
# Not a published setting: no reference number; the base is mmdet's R-50 recipe (SGD lr 0.02).
# The plug-in starts from random weights (no pretrained MLLAttention exists).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

model = dict(
    neck=dict(
        _delete_=True,
        type='NeckWithPlugins',
        neck=dict(
            type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        plugins=[dict(level=3, cfg=dict(type='MLLAttention', channels=256, num_heads=8))]))
