"""Each backbone family's real Mask R-CNN / UperNet config trains one iteration and evaluates on
CPU: the config inheritance from mmdet::/mmseg::, the registration, the necks and heads are the
real ones; only the backbone is shrunk (a tiny arch, no pretrained weights) and the data swapped
for the bundled demo data so that it runs in seconds."""
import pytest

from conftest import REPO, run_tool

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
from mmengine.config import Config  # noqa: E402

TINY = {
    'VMamba': dict(arch=dict(embed_dims=16, depths=(1, 1, 1, 1))),
    'MambaVision': dict(arch=dict(dim=16, in_dim=8, depths=(1, 1, 2, 2), num_heads=(1, 1, 2, 2)),
                        window_size=(8, 8, 4, 2)),
    'MLLA': dict(arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))),
    'MViTv2': dict(arch=dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=1)),
    'ViT': dict(arch=dict(embed_dim=32, depth=12, num_heads=2, global_blocks=(2, 5, 8, 11))),
}
CONFIGS = [
    'configs/maskrcnn_vmamba_t_1x_coco.py',
    'configs/vmamba/upernet_vmamba_t_4xb4-160k_ade20k-512x512.py',
    'configs/mamba_vision/mask-rcnn_mambavision_t_1x_coco.py',
    'configs/mamba_vision/cascade-mask-rcnn_mambavision_t_3x_coco.py',
    'configs/mamba_vision/upernet_mambavision_t_160k_ade20k-512x512.py',
    'configs/mlla/mask-rcnn_mlla_t_1x_coco.py',
    'configs/mlla/upernet_mlla_t_160k_ade20k-512x512.py',
    'configs/mlla/mask-rcnn_r50_fpn_mlla-attn_1x_coco.py',
    'configs/mvit/mask-rcnn_mvitv2_t_1x_coco.py',
    'configs/mvit/upernet_mvitv2_t_160k_ade20k-512x512.py',
    'configs/vit/mask-rcnn_vit-b_1x_coco.py',
    'configs/vit/upernet_vit-b_160k_ade20k-512x512.py',
]


def _set_num_classes(node, n):
    if isinstance(node, dict):
        if 'num_classes' in node and node.get('type') not in ('RPNHead',):
            node['num_classes'] = n
        for value in node.values():
            _set_num_classes(value, n)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_num_classes(value, n)


def smoke_config(path, tmp_path):
    """The real config with a tiny backbone, the demo data and a one-iteration schedule."""
    import mmvision_ssm.openmmlab  # noqa: F401
    from mmengine.registry import MODELS
    cfg = Config.fromfile(str(REPO / path))
    det = cfg.default_scope == 'mmdet'
    data = Config.fromfile(str(REPO / 'configs/_base_/datasets' /
                                ('demo_coco_instance.py' if det else 'demo_ade.py')))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
                'test_evaluator', 'demo_data'):
        cfg[key] = data[key]
    cfg.demo_data.update(num_train=2, num_val=1, size=96)
    cfg.train_dataloader.batch_size = 2
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].num_workers, cfg[key].persistent_workers = 0, False

    backbone = cfg.model.backbone
    if backbone.type in TINY:
        backbone.update(TINY[backbone.type], init_cfg=None)
        channels = list(MODELS.build(dict(backbone)).out_channels)
    else:  # the ResNet under the MLLAttention plug-in config
        backbone.update(depth=18, init_cfg=None)
        channels = [64, 128, 256, 512]
    neck = cfg.model.get('neck')
    if neck is not None and neck.type == 'SimpleFeaturePyramid':
        neck.in_channels = channels[0]
    elif neck is not None:
        (neck.neck if neck.type == 'NeckWithPlugins' else neck).in_channels = channels
    if not det:
        if neck is None:
            cfg.model.decode_head.in_channels = channels
        if cfg.model.get('auxiliary_head') and neck is None:
            cfg.model.auxiliary_head.in_channels = channels[2]
        cfg.model.data_preprocessor.size = (256, 256)  # the demo pipeline's crop
        cfg.model.test_cfg = dict(mode='whole')
    _set_num_classes(cfg.model, 4 if det else 6)

    cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs a GPU
    for key in ('loss_scale', 'dtype'):
        cfg.optim_wrapper.pop(key, None)
    if det:
        cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    else:
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1)
    cfg.param_scheduler = []
    out = tmp_path / 'smoke.py'
    cfg.dump(str(out))
    return out, ('epoch_1.pth' if det else 'iter_1.pth')


@pytest.mark.parametrize('path', CONFIGS)
def test_config_trains_and_tests_one_iteration(path, tmp_path):
    cfg_path, ckpt = smoke_config(path, tmp_path)
    run_tool(['tools/train.py', cfg_path, '--work-dir', 'wd'], tmp_path)
    assert (tmp_path / 'wd' / ckpt).is_file()
    run_tool(['tools/test.py', cfg_path, tmp_path / 'wd' / ckpt, '--work-dir', 'wd_test'],
             tmp_path)
    assert (tmp_path / 'wd_test' / 'report' / 'report.json').is_file()


@pytest.mark.parametrize('path', [p for p in CONFIGS if 'rcnn' in p])
def test_detector_feature_maps_are_contiguous_nchw(path, tmp_path):
    """What the RoI extractor reads must be contiguous NCHW: mmcv's RoIAlign indexes the raw
    memory as NCHW, so a channels-last level (a free permute somewhere in a backbone or neck)
    would train the RoI heads on scrambled features without any error."""
    import torch
    from mmengine.registry import MODELS
    cfg_path, _ = smoke_config(path, tmp_path)
    model = MODELS.build(Config.fromfile(str(cfg_path)).model).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 96, 128))
    assert feats and all(f.dim() == 4 and f.is_contiguous() for f in feats)
