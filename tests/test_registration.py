"""`import mmvision_ssm` makes our modules buildable from mmdet- and mmseg-scope configs, while
the backbones themselves import without any OpenMMLab package."""
import subprocess
import sys

import pytest
import torch


def test_backbones_import_without_openmmlab():
    code = ('import sys\n'
            'class Block:\n'
            '    def find_spec(self, name, path=None, target=None):\n'
            '        if name.split(".")[0] in ("mmengine", "mmcv", "mmdet", "mmseg"):\n'
            '            raise ImportError("blocked " + name)\n'
            'sys.meta_path.insert(0, Block())\n'
            'from mmvision_ssm.models.backbones import VMamba, MambaVision, MLLA, MViTv2, ViT\n'
            'import mmvision_ssm.ops, mmvision_ssm.models.plugins, mmvision_ssm.models.necks\n'
            'assert not any(m.split(".")[0] in ("mmengine", "mmdet", "mmseg", "mmcv") '
            'for m in sys.modules)\n'
            'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-3000:]


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_types_resolve_in_both_scopes(scope):
    pytest.importorskip(scope)
    import importlib

    import mmvision_ssm.openmmlab as glue
    registry = importlib.import_module(f'{scope}.registry').MODELS
    for cls in glue.BACKBONES + glue.NECKS + glue.PLUGINS:
        assert registry.get(cls.__name__) is cls
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    backbone = registry.build(dict(type='VMamba', arch=dict(embed_dims=16, depths=(1, 1, 1, 1)),
                                   out_indices=(1, 3)))
    feats = backbone(torch.randn(1, 3, 35, 50))
    assert [tuple(f.shape) for f in feats] == [(1, 32, 5, 7), (1, 128, 2, 2)]
