"""Same-weights equivalence of our MLLA with the official implementation (fp32, rel. err <= 1e-5).

Needs a snapshot of the official code, given by the environment variable
``MMVISION_SSM_OFFICIAL_MLLA``: a directory with ``mlla.py`` (LeapLabTHU/MLLA ``models/mlla.py``,
the classification model) and ``mlla_downstream.py`` (``downstream/detection/mmdet/models/
backbones/mlla.py``, the dense-prediction backbone; its mmdet 2.x imports are stubbed, see
tests/_mlla_official.py). Skipped when the variable is unset. To create the snapshot::

    git --git-dir=<MLLA clone>/.git show HEAD:models/mlla.py > .snap/mlla/mlla.py
    git --git-dir=<MLLA clone>/.git show \
        HEAD:downstream/detection/mmdet/models/backbones/mlla.py > .snap/mlla/mlla_downstream.py
    MMVISION_SSM_OFFICIAL_MLLA=.snap/mlla pytest -s tests/test_mlla_official.py

Relative error = max |ours - official| / max |official| per output. Every weight (BN statistics,
norm affines, biases) is randomised first so that no term is trivially zero or one.
"""
import json
import os

import pytest
import torch

from mmvision_ssm.models.backbones.mlla import MLLA

from _mlla_official import ENV, load_classification, load_downstream, snapshot_dir

SNAPSHOT = snapshot_dir()
pytestmark = pytest.mark.skipif(
    SNAPSHOT is None, reason=f'official MLLA snapshot not given: set {ENV} to a directory '
                             'holding the official mlla.py (see this file\'s docstring)')
TINY = dict(embed_dim=64, depths=[2, 4, 8, 4], num_heads=[2, 4, 8, 16])
FIXTURE = os.path.join(os.path.dirname(__file__), 'data', 'mlla_t_official_keys.json')
TOL = 1e-5


def _randomise(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point() or key.endswith('rotations'):
                continue
            if key.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1 and key.endswith('weight'):
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model.eval()


def _rel(ours, ref):
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def test_fixture_matches_official():
    model = load_classification(SNAPSHOT).MLLA(img_size=224, **TINY)
    with open(FIXTURE) as f:
        layout = json.load(f)['keys']
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == layout


def test_classification_model_equivalence():
    """Official classifier at its fixed 224x224: every stage output and the pooled features."""
    torch.manual_seed(0)
    ref = _randomise(load_classification(SNAPSHOT).MLLA(img_size=224, **TINY))
    ours = MLLA('tiny').eval()
    report = ours.load_pretrained({'model': ref.state_dict()}, logger=None)
    assert len(report.dropped) == 22 and len(report.initialised) == 8
    with torch.no_grad():  # our last per-output norm plays the classifier's final norm
        ours.norm3.weight.copy_(ref.norm.weight)
        ours.norm3.bias.copy_(ref.norm.bias)
    feats = {}
    for i in range(4):
        ref.layers[i].blocks[-1].register_forward_hook(
            lambda m, a, out, i=i: feats.__setitem__(('ref', i), out))
        ours.layers[i].register_forward_hook(
            lambda m, a, out, i=i: feats.__setitem__(('ours', i), out))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pooled_ref = ref.forward_features(x)
        outs = ours(x)
    errors = {f'stage{i}': _rel(feats['ours', i].flatten(1, 2), feats['ref', i]) for i in range(4)}
    errors['pooled'] = _rel(outs[3].mean((2, 3)), pooled_ref)
    print('\nMLLA-T vs official classifier (224x224, fp32) rel. err:', errors)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize('shape', [(1, 3, 37, 53), (2, 3, 64, 96), (1, 3, 9, 7)])
def test_downstream_backbone_equivalence(shape):
    """Official mmdet/mmseg backbone (pads odd sizes, per-output norms) at non-square sizes."""
    module = load_downstream(SNAPSHOT)
    if module is None:
        pytest.skip(f'{SNAPSHOT}/mlla_downstream.py absent')
    torch.manual_seed(0)
    ref = _randomise(module.MLLA(img_size=224, out_indices=(0, 1, 2, 3), **TINY))
    ours = MLLA('tiny').eval()
    report = ours.load_pretrained(ref.state_dict(), logger=None)
    assert not report.initialised and len(report.dropped) == sum(TINY['depths'])  # rotations
    x = torch.randn(*shape)
    with torch.no_grad():
        refs, outs = ref(x), ours(x)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    errors = [_rel(o, r) for o, r in zip(outs, refs)]
    print(f'\nMLLA-T vs official downstream backbone {shape} (fp32) rel. err:', errors)
    assert max(errors) <= TOL, errors


def test_downstream_backbone_gradients():
    """Backward too: input gradient and the gradients of the stacked in_proj/act_proj."""
    module = load_downstream(SNAPSHOT)
    if module is None:
        pytest.skip(f'{SNAPSHOT}/mlla_downstream.py absent')
    torch.manual_seed(0)
    ref = _randomise(module.MLLA(img_size=224, out_indices=(0, 1, 2, 3), **TINY))
    ours = MLLA('tiny').eval()
    ours.load_pretrained(ref.state_dict(), logger=None)
    x = torch.randn(2, 3, 37, 53)
    grads = []
    for model in (ref, ours):
        xi = x.clone().requires_grad_()
        outs = model(xi)
        weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i))
                   for i, o in enumerate(outs)]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        grads.append(xi.grad)
    errors = {'input': _rel(grads[1], grads[0])}
    for name in ('layers.0.blocks.1', 'layers.2.blocks.7', 'layers.3.blocks.0'):
        ref_blk, our_blk = ref.get_submodule(name), ours.get_submodule(name)
        ref_grad = torch.cat([ref_blk.in_proj.weight.grad, ref_blk.act_proj.weight.grad])
        errors[f'{name}.in_proj'] = _rel(our_blk.in_proj.weight.grad, ref_grad)
        errors[f'{name}.attn.qk'] = _rel(our_blk.attn.qk.weight.grad, ref_blk.attn.qk.weight.grad)
    print('\nMLLA-T vs official downstream backbone, gradients (fp32) rel. err:', errors)
    assert max(errors.values()) <= TOL, errors
