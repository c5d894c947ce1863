# VMamba-B ("s2l15": dims 128, depths 2-2-15-2, ssm_ratio 2.0) + Mask R-CNN (FPN) 3x multi-scale (ms-crop) on COCO.
# Follows the official MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_base.py with the ms-crop 3x recipe of the official small/tiny 3x configs (the official repo has no base 3x config).
# Published (official): none (no official VMamba-B 3x run).
# Recipe: mmdet Swin-T Mask R-CNN ms-crop 3x (AdamW lr 1e-4, wd 0.05, 36 epochs, steps 27/33,
# 8 GPUs x 2 images), the same pipeline/schedule the official 3x configs spell out.
# Weight decay: the official parameter names of the stem and downsampling norms lack "norm", so the
# recipe's 'norm' no-decay rule did not reach them; the custom_keys below keep them decayed.
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth
#   save it in checkpoints/ as vssm_base_0229_ckpt_epoch_237.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssm_base_0229_ckpt_epoch_237.pth checkpoints/vmamba_base.pth
#   and point init_cfg.checkpoint at the converted file.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']

custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='base',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssm_base_0229_ckpt_epoch_237.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'patch_embed.norm': dict(decay_mult=1.),
            'downsample.norm': dict(decay_mult=1.)
        }))
