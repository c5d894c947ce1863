# MambaVision-S + Mask R-CNN FPN, 1x: as mask-rcnn_mambavision_t_1x_coco.py with the S backbone
# (not an official MambaVision setting; no published number).
# Weights: https://huggingface.co/nvidia/MambaVision-S-1K (mambavision_small_1k.pth.tar) -> checkpoints/.
_base_ = './mask-rcnn_mambavision_t_1x_coco.py'

checkpoint_file = 'checkpoints/mambavision_small_1k.pth.tar'
model = dict(
    backbone=dict(arch='S', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
