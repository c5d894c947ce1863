# MambaVision-B + Mask R-CNN FPN, 1x: as mask-rcnn_mambavision_t_1x_coco.py with the B backbone
# (layer scale 1e-5) and lr 2e-4, the official MambaVision-B detection lr (not an official
# MambaVision setting; no published number).
# Weights: https://huggingface.co/nvidia/MambaVision-B-1K (mambavision_base_1k.pth.tar) -> checkpoints/.
_base_ = './mask-rcnn_mambavision_t_1x_coco.py'

checkpoint_file = 'checkpoints/mambavision_base_1k.pth.tar'
model = dict(
    backbone=dict(arch='B', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
