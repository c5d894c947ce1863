# VMamba-S ("s2l15": dims 96, depths 2-2-15-2, ssm_ratio 2.0) + Mask R-CNN (FPN) 3x multi-scale (ms-crop) on COCO.
# Follows the official MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_small_ms_3x.py.
# Published (official): box AP 49.9, mask AP 44.2.
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth
#   save it in checkpoints/ as vssm_small_0229_ckpt_epoch_222.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssm_small_0229_ckpt_epoch_222.pth checkpoints/vmamba_small.pth
#   and point init_cfg.checkpoint at the converted file.
# Recipe, layout and weight-decay rules: maskrcnn_vmamba_t_3x_ms_coco.py (inherited); only the arch differs.
_base_ = ['./maskrcnn_vmamba_t_3x_ms_coco.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssm_small_0229_ckpt_epoch_222.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
