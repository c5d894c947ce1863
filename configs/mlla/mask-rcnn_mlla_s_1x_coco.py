# MLLA-S (embed 64, depths 3-6-21-6, heads 2-4-8-16) + Mask R-CNN (FPN) 1x on COCO.
# Follows the official LeapLabTHU/MLLA downstream/detection/configs/mlla/mlla_s_mrcnn_1x.py
# (mmdet 2.x), translated to mmdet 3.x; recipe as mask-rcnn_mlla_t_1x_coco.py (drop_path 0.1).
# Published (official): box AP 49.2, mask AP 44.2.
# Weights: MLLA-S ImageNet-1K, https://cloud.tsinghua.edu.cn/f/0e5d0b1409d540aaa80c/?dl=1
#   saved as checkpoints/MLLA_S.pth (loaded strictly), or converted once with
#   python tools/convert_mlla.py checkpoints/MLLA_S.pth checkpoints/mlla_small.pth
_base_ = ['./mask-rcnn_mlla_t_1x_coco.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/MLLA_S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
