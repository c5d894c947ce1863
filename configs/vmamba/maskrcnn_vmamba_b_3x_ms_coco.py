# VMamba-B ("s2l15": dims 128, depths 2-2-15-2, ssm_ratio 2.0) + Mask R-CNN (FPN) 3x multi-scale (ms-crop) on COCO.
# Follows the official MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_base.py with the ms-crop 3x recipe of the official small/tiny 3x configs (the official repo has no base 3x config).
# Published (official): none (no official VMamba-B 3x run).
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth
#   save it in checkpoints/ as vssm_base_0229_ckpt_epoch_237.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssm_base_0229_ckpt_epoch_237.pth checkpoints/vmamba_base.pth
#   and point init_cfg.checkpoint at the converted file.
# Recipe, layout and weight-decay rules: maskrcnn_vmamba_t_3x_ms_coco.py (inherited); only the arch differs.
_base_ = ['./maskrcnn_vmamba_t_3x_ms_coco.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssm_base_0229_ckpt_epoch_237.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
