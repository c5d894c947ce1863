# MambaVision-T + UperNet, ADE20K 512x512, 160k iterations: the official segmentation setting of
# NVlabs/MambaVision, semantic_segmentation/configs/mamba_vision/mamba_vision_160k_ade20k-512x512_tiny.py
# (inheriting mmseg's upernet_swin base). AdamW lr 5e-5, weight decay 0.01 (none on norms), AMP,
# linear warm-up 1500 iterations then poly decay (power 1), 16 images per iteration (official:
# 16 GPUs x 1; here 8 GPUs x 2, the same batch), backbone windows (8, 8, 64, 32).
# Published (official README): mIoU 46.0 (single scale).
#
# Backbone weights: https://huggingface.co/nvidia/MambaVision-T-1K (mambavision_tiny_1k.pth.tar) ->
# checkpoints/ (loads as released, strict, with a report). The official fine-tuned segmentor
# (huggingface.co/nvidia/mamba_vision_160k_ade20k-512x512_tiny) converted with
# tools/convert_mamba_vision.py can be evaluated with this config (load_from).
#
# drop_path_rate: the official config lists 0.3 (S: 0.7, B: 0.4), but its MM_mamba_vision
# wrapper does not pass it on, so the published models trained with the default 0.2 -- used here.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmvision_ssm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/mambavision_tiny_1k.pth.tar'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='MambaVision',
        arch='T',
        window_size=(8, 8, 64, 32),  # the official segmentation windows
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[80, 160, 320, 640], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00005, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)  # x 8 GPUs = 16 per iteration
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
