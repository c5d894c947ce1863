# MLLA-B (embed 96, depths 3-6-21-6, heads 3-6-12-24) + UperNet 160k on ADE20K 512x512.
# Follows the official LeapLabTHU/MLLA downstream/segmentation/configs/mlla/mlla_b_upernet.py
# (mmseg 0.x), translated to mmseg 1.x.
# Published (official): mIoU 51.9.
# Recipe (official = mmseg's Swin UperNet recipe inherited here): AdamW lr 6e-5, betas
# (0.9, 0.999), wd 0.01, no decay on norms; poly schedule with 1500 linear warm-up iters
# (ratio 1e-6); 160k iters; 8 GPUs x 2 images; drop_path 0.5.
# Weights: MLLA-B ImageNet-1K, https://cloud.tsinghua.edu.cn/f/91c85c5a1061496d8796/?dl=1
#   (linked from github.com/LeapLabTHU/MLLA), saved as checkpoints/MLLA_B.pth: it is loaded
#   strictly (its "model" entry; classifier, final norm and the fixed-size RoPE tables are dropped,
#   the per-output norms are new). Or convert it once:
#   python tools/convert_mlla.py checkpoints/MLLA_B.pth checkpoints/mlla_base.pth
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='MLLA',
        arch='base',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_B.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
