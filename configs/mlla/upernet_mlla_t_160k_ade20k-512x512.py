# MLLA-T (embed 64, depths 2-4-8-4, heads 2-4-8-16) + UperNet 160k on ADE20K 512x512.
# NOT an official setting: LeapLabTHU/MLLA publishes only the MLLA-B UperNet config and result.
# Recipe as upernet_mlla_b_160k_ade20k-512x512.py (the official B recipe); drop_path 0.2 is our
# choice: MLLA-T's ImageNet rate, as the official B config uses B's ImageNet rate (0.5).
# Weights: MLLA-T ImageNet-1K, https://cloud.tsinghua.edu.cn/f/7a19712877cb4242889c/?dl=1
#   saved as checkpoints/MLLA_T.pth (loaded strictly), or converted once with
#   python tools/convert_mlla.py checkpoints/MLLA_T.pth checkpoints/mlla_tiny.pth
_base_ = ['./upernet_mlla_b_160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_T.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
