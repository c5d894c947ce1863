# VMamba-S ("s2l15": dims 96, depths 2-2-15-2, ssm_ratio 2.0) + UperNet 160k on ADE20K 512x512.
# Follows the official MzeroMiko/VMamba segmentation/configs/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_small.py.
# Published (official): mIoU 50.6 (single-scale), 51.2 (multi-scale).
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth
#   save it in checkpoints/ as vssm_small_0229_ckpt_epoch_222.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssm_small_0229_ckpt_epoch_222.pth checkpoints/vmamba_small.pth
#   and point init_cfg.checkpoint at the converted file.
# Recipe, layout and weight-decay rules: upernet_vmamba_t_4xb4-160k_ade20k-512x512.py (inherited); only the arch differs.
_base_ = ['./upernet_vmamba_t_4xb4-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssm_small_0229_ckpt_epoch_222.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
