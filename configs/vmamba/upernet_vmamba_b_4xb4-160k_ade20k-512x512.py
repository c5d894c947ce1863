# VMamba-B ("s2l15": dims 128, depths 2-2-15-2, ssm_ratio 2.0) + UperNet 160k on ADE20K 512x512.
# Follows the official MzeroMiko/VMamba segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_base.py.
# Published (official): mIoU 51.0 (single-scale), 51.6 (multi-scale).
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth
#   save it in checkpoints/ as vssm_base_0229_ckpt_epoch_237.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssm_base_0229_ckpt_epoch_237.pth checkpoints/vmamba_base.pth
#   and point init_cfg.checkpoint at the converted file.
# Recipe, layout and weight-decay rules: upernet_vmamba_t_4xb4-160k_ade20k-512x512.py (inherited); only the arch differs.
_base_ = ['./upernet_vmamba_t_4xb4-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssm_base_0229_ckpt_epoch_237.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
