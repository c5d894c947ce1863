# MambaVision-B + UperNet, ADE20K 512x512, 160k: the official setting (NVlabs/MambaVision
# semantic_segmentation/configs/mamba_vision/mamba_vision_160k_ade20k-512x512_base.py): as the
# T config (lr 5e-5, windows (8, 8, 64, 32), 16 images per iteration) with the B backbone
# (layer scale 1e-5).
# Published (official README): mIoU 49.1.
# Weights: https://huggingface.co/nvidia/MambaVision-B-1K (mambavision_base_1k.pth.tar) -> checkpoints/.
# Official segmentor: huggingface.co/nvidia/mamba_vision_160k_ade20k-512x512_base.
# drop_path_rate: the official config lists 0.4, but its wrapper drops it; 0.2 trained the model.
_base_ = './upernet_mambavision_t_160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/mambavision_base_1k.pth.tar'
model = dict(
    backbone=dict(arch='B', init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
