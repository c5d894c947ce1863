# MambaVision-B + Cascade Mask R-CNN 3x: the official detection setting (NVlabs/MambaVision
# object_detection/configs/mamba_vision/cascade_mask_rcnn_mamba_vision_base_3x_coco.py; as run:
# tools/work_dirs/.../cascade_mask_rcnn_mamba_vision_base_3x_coco_v10.py). As the T config
# (8 GPUs x 2, AdamW, wd 0.05, AMP, 36 epochs) but lr 2e-4 and the B backbone (layer scale 1e-5).
# Published (official README): box AP 52.8, mask AP 45.7 (COCO val2017).
# Weights: https://huggingface.co/nvidia/MambaVision-B-1K (mambavision_base_1k.pth.tar) ->
# checkpoints/. Official detector: huggingface.co/nvidia/cascade_mask_rcnn_mamba_vision_base_3x_coco.
# drop_path_rate: the official config lists 0.5, but its wrapper drops it; 0.2 trained the model.
_base_ = './cascade-mask-rcnn_mambavision_t_3x_coco.py'

checkpoint_file = 'checkpoints/mambavision_base_1k.pth.tar'
model = dict(
    backbone=dict(arch='B', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
