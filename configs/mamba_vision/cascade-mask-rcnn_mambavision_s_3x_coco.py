# MambaVision-S + Cascade Mask R-CNN 3x: the official detection setting (NVlabs/MambaVision
# object_detection/configs/mamba_vision/cascade_mask_rcnn_mamba_vision_small_3x_coco.py; as run:
# tools/work_dirs/.../cascade_mask_rcnn_mamba_vision_small_3x_coco_v4.py). Everything as the T
# config (8 GPUs x 2, AdamW lr 1e-4, wd 0.05, AMP, 36 epochs) except the backbone.
# Published (official README): box AP 52.3, mask AP 45.2 (COCO val2017).
# Weights: https://huggingface.co/nvidia/MambaVision-S-1K (mambavision_small_1k.pth.tar) ->
# checkpoints/. Official detector: huggingface.co/nvidia/cascade_mask_rcnn_mamba_vision_small_3x_coco.
# drop_path_rate: the official config lists 0.3, but its wrapper drops it; 0.2 trained the model.
_base_ = './cascade-mask-rcnn_mambavision_t_3x_coco.py'

checkpoint_file = 'checkpoints/mambavision_small_1k.pth.tar'
model = dict(
    backbone=dict(arch='S', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
