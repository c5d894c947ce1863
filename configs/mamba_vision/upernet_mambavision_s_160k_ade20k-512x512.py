# MambaVision-S + UperNet, ADE20K 512x512, 160k: the official setting (NVlabs/MambaVision
# semantic_segmentation/configs/mamba_vision/mamba_vision_160k_ade20k-512x512_small.py): as the
# T config but lr 6e-5, official 8 GPUs x 2, and the official S windows (8, 8, 160, 56) (larger
# than the 32x32 / 16x16 stage-3/4 maps of a 512 crop: one padded window per map).
# Published (official README): mIoU 48.2.
# Weights: https://huggingface.co/nvidia/MambaVision-S-1K (mambavision_small_1k.pth.tar) -> checkpoints/.
# Official segmentor: huggingface.co/nvidia/mamba_vision_160k_ade20k-512x512_small.
# drop_path_rate: the official config lists 0.7, but its wrapper drops it; 0.2 trained the model.
_base_ = './upernet_mambavision_t_160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/mambavision_small_1k.pth.tar'
model = dict(
    backbone=dict(arch='S', window_size=(8, 8, 160, 56),
                  init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(optimizer=dict(lr=0.00006))
