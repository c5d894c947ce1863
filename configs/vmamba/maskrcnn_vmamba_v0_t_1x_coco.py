# Vanilla VMamba-T (v0: dims 96, depths 2-2-9-2, d_state 16, gated SS2D, no MLP) + Mask R-CNN (FPN) 1x on COCO.
# Follows the official MzeroMiko/VMamba detection/configs/vssm/mask_rcnn_vssm_fpn_coco_tiny.py.
# Published (official): box AP 46.5, mask AP 42.1.
# Recipe: mmdet Swin-T Mask R-CNN 1x (AdamW lr 1e-4, wd 0.05, 12 epochs, 8 GPUs x 2 images),
# which the official config inherits.
# Weight decay: the official parameter names of the stem norms lack "norm", so the
# recipe's 'norm' no-decay rule did not reach them; the custom_keys below keep them decayed.
# drop_path_rate: what the official run used (its config sets none, so it took the Swin
# recipe's value).
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/vssmtiny_dp01_ckpt_epoch_292.pth
#   save it in checkpoints/ as vssmtiny_dp01_ckpt_epoch_292.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssmtiny_dp01_ckpt_epoch_292.pth checkpoints/vmamba_v0_tiny.pth
#   and point init_cfg.checkpoint at the converted file.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='v0_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssmtiny_dp01_ckpt_epoch_292.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'patch_embed.norm': dict(decay_mult=1.)
        }))
