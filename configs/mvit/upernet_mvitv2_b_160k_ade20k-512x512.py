# MViTv2-B + UperNet, ADE20K 512x512, 160k iterations: upernet_mvitv2_t_160k_ade20k-512x512.py
# with the B backbone (drop path 0.4 as in detectron2's MViTv2-B detection config).
# Published number: none (MViTv2 has no official segmentation setting).
# Weights: https://dl.fbaipublicfiles.com/mvit/mvitv2_models/MViTv2_B_in1k.pyth -> checkpoints/
_base_ = './upernet_mvitv2_t_160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/MViTv2_B_in1k.pyth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
