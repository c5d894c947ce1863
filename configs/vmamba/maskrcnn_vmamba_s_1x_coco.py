# VMamba-S ("s2l15": dims 96, depths 2-2-15-2, ssm_ratio 2.0) + Mask R-CNN (FPN) 1x on COCO.
# Follows the official MzeroMiko/VMamba detection/configs/vssm1/mask_rcnn_vssm_fpn_coco_small.py.
# Published (official): box AP 48.7, mask AP 43.7.
# Recipe: mmdet Swin-T Mask R-CNN 1x (AdamW lr 1e-4, wd 0.05, 12 epochs, 8 GPUs x 2 images),
# which the official config inherits.
# Weight decay: the official parameter names of the stem and downsampling norms lack "norm", so the
# recipe's 'norm' no-decay rule did not reach them; the custom_keys below keep them decayed.
# Weights: https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth
#   save it in checkpoints/ as vssm_small_0229_ckpt_epoch_222.pth: it is loaded strictly (its "model"
#   entry; the classifier head is dropped, the per-output norms are new). Or convert it once:
#   python tools/convert_vmamba.py checkpoints/vssm_small_0229_ckpt_epoch_222.pth checkpoints/vmamba_small.pth
#   and point init_cfg.checkpoint at the converted file.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']

custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vssm_small_0229_ckpt_epoch_222.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'patch_embed.norm': dict(decay_mult=1.),
            'downsample.norm': dict(decay_mult=1.)
        }))
