# MLLA-S (embed 64, depths 3-6-21-6, heads 2-4-8-16) + UperNet 160k on ADE20K 512x512.
# NOT an official setting: LeapLabTHU/MLLA publishes only the MLLA-B UperNet config and result.
# Recipe as upernet_mlla_b_160k_ade20k-512x512.py (the official B recipe); drop_path 0.3 is our
# choice: MLLA-S's ImageNet rate, as the official B config uses B's ImageNet rate (0.5).
# Weights: MLLA-S ImageNet-1K, https://cloud.tsinghua.edu.cn/f/0e5d0b1409d540aaa80c/?dl=1
#   saved as checkpoints/MLLA_S.pth (loaded strictly), or converted once with
#   python tools/convert_mlla.py checkpoints/MLLA_S.pth checkpoints/mlla_small.pth
_base_ = ['./upernet_mlla_b_160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_S.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
