"""VMamba against the official code (github.com/MzeroMiko/VMamba): same weights, same outputs.

Skipped unless ``MMVISION_SSM_OFFICIAL_VMAMBA`` names a directory with the official files:

* ``__init__.py``, ``vmamba.py``, ``csm_triton.py``, ``csms6s.py`` from ``classification/models/``
  at commit 2ed52ea (2025-03-07), e.g.
  ``for f in __init__ vmamba csm_triton csms6s; do git --git-dir=$MIRROR show
  HEAD:classification/models/$f.py > $DIR/$f.py; done``
* optionally ``release_2024_01/vmamba.py`` = ``classification/models/vmamba/vmamba.py`` at commit
  3f4f356 (2024-01-28), the layout of the first vanilla-VMamba checkpoints (older key names).

On CPU the official code uses its own pure-torch paths: ``csms6s.selective_scan_torch`` for the
scan and ``csm_triton.CrossScanF``/``CrossMergeF`` for cross-scan/merge (called directly, since
their dispatcher enters ``torch.cuda.device`` even for CPU tensors). Imports only needed for FLOP
counting (fvcore), Mamba2 (``mamba2/``, einops) are replaced by inert stand-ins; for the 2024-01
file ``einops.repeat`` is given the one "new leading axis" form it uses while constructing.
"""
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from mmvision_ssm.models.backbones.vmamba import VMamba

OFFICIAL_DIR = os.environ.get('MMVISION_SSM_OFFICIAL_VMAMBA', '')
FIXTURE = Path(__file__).parent / 'data' / 'vmamba_tiny_official_keys.json'

pytestmark = pytest.mark.skipif(
    not (OFFICIAL_DIR and os.path.isfile(os.path.join(OFFICIAL_DIR, 'vmamba.py'))),
    reason='official VMamba snapshot not available: set MMVISION_SSM_OFFICIAL_VMAMBA to a '
           'directory with classification/models/{__init__,vmamba,csm_triton,csms6s}.py of '
           'MzeroMiko/VMamba')

# Backbone_VSSM keyword arguments of the official detection/segmentation configs. (The vanilla
# configs leave forward_type at its default 'v2', the same weights and math as 'v0', whose
# selective-scan backend 'core' the current official code rejects; we run 'v0'.)
OFFICIAL_KWARGS = {
    'tiny': dict(depths=[2, 2, 8, 2], dims=96, ssm_d_state=1, ssm_ratio=1.0, ssm_conv=3,
                 ssm_conv_bias=False, forward_type='v05_noz', mlp_ratio=4.0,
                 downsample_version='v3', patchembed_version='v2', norm_layer='ln2d'),
    'v0_tiny': dict(depths=[2, 2, 9, 2], dims=96, ssm_d_state=16, ssm_ratio=2.0, forward_type='v0',
                    mlp_ratio=0.0, downsample_version='v1', patchembed_version='v1',
                    norm_layer='ln'),
}
REL_TOL = 1e-5


def _stub(name, **attrs):
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
    return sys.modules[name]


def _leading_repeat(t, pattern, **sizes):
    lhs, rhs = (s.split() for s in pattern.split('->'))
    new = [a for a in rhs if a not in lhs]
    assert rhs == new + lhs, f'stand-in einops.repeat cannot do {pattern!r}'
    return t.expand(*[sizes[a] for a in new], *t.shape)


def _no_mamba2(*args, **kwargs):
    raise RuntimeError('the Mamba2 path of the official code is not part of this comparison')


@pytest.fixture(scope='module')
def official():
    """The official ``vmamba`` module, imported as package ``vmamba_official``."""
    fvcore_nn = _stub('fvcore.nn', FlopCountAnalysis=None, flop_count_str=None, flop_count=None,
                      parameter_count=None)
    _stub('fvcore', nn=fvcore_nn)
    name = 'vmamba_official'
    _stub(name + '.mamba2').__path__ = []
    _stub(name + '.mamba2.ssd_minimal', selective_scan_chunk_fn=_no_mamba2)
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(OFFICIAL_DIR, '__init__.py'), submodule_search_locations=[OFFICIAL_DIR])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = pkg
    spec.loader.exec_module(pkg)
    vm = importlib.import_module(name + '.vmamba')
    csm = importlib.import_module(name + '.csm_triton')

    def cross_scan_fn(x, in_channel_first=True, out_channel_first=True, one_by_one=False,
                      scans=0, force_torch=False):
        return csm.CrossScanF.apply(x, in_channel_first, out_channel_first, one_by_one, scans)

    def cross_merge_fn(y, in_channel_first=True, out_channel_first=True, one_by_one=False,
                       scans=0, force_torch=False):
        return csm.CrossMergeF.apply(y, in_channel_first, out_channel_first, one_by_one, scans)

    vm.cross_scan_fn, vm.cross_merge_fn = cross_scan_fn, cross_merge_fn
    return vm


@pytest.fixture(scope='module')
def official_2024_01():
    path = os.path.join(OFFICIAL_DIR, 'release_2024_01', 'vmamba.py')
    if not os.path.isfile(path):
        pytest.skip(f'{path} (official layout of 2024-01, commit 3f4f356) not in the snapshot')
    _stub('einops', rearrange=None, repeat=_leading_repeat)
    _stub('fvcore.nn', FlopCountAnalysis=None, flop_count_str=None, flop_count=None,
          parameter_count=None)
    spec = importlib.util.spec_from_file_location('vmamba_official_2024_01', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _official_classifiers(vm):
    """The official ImageNet models whose checkpoints were released (T "s1l8", vanilla T)."""
    return {'tiny': vm.vmamba_tiny_s1l8, 'v0_tiny': vm.vanilla_vmamba_tiny}


def _perturbed(state_dict, seed=0):
    """Official init has many exact ones/zeros (norms, D, biases): move every weight off them."""
    g = torch.Generator().manual_seed(seed)
    def noise(v):
        return torch.randn(v.shape, generator=g)
    return {k: v * (1 + 0.2 * noise(v)) + 0.02 * noise(v) for k, v in state_dict.items()}


def _rel_err(ref, out):
    return ((ref - out).abs().max() / ref.abs().max()).item()


def test_fixture_matches_official(official):
    """tests/data/vmamba_tiny_official_keys.json is exactly the official layouts."""
    fixture = json.loads(FIXTURE.read_text())
    for name, build in _official_classifiers(official).items():
        layout = {k: list(v.shape) for k, v in build().state_dict().items()}
        assert layout == fixture[name], name


def test_fixture_matches_official_2024_01(official_2024_01):
    fixture = json.loads(FIXTURE.read_text())
    model = official_2024_01.VSSM(depths=[2, 2, 9, 2], dims=96)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == fixture['v0_tiny_2024_01']


def _official_backbone(vm, arch, classifier_sd, ours):
    """Official detection/segmentation backbone with the classifier's weights and our out norms."""
    bb = vm.Backbone_VSSM(**OFFICIAL_KWARGS[arch]).eval()
    sd = dict(classifier_sd)
    for key, value in ours.state_dict().items():
        if key.startswith('out_norms.'):
            _, i, param = key.split('.')
            sd[f'outnorm{i}.{param}'] = value
    # Their _load_from_state_dict renames older key names; the classifier keys are unused here.
    missing, unexpected = bb.load_state_dict(sd, strict=False)
    assert not missing and all(k.startswith('classifier.') for k in unexpected)
    return bb


@pytest.mark.parametrize('arch,size', [('tiny', (67, 95)), ('v0_tiny', (68, 92))])
def test_same_outputs_as_official(official, arch, size):
    """fp32, same weights: every output map within 1e-5 relative error.

    v0 uses a 4x4 patchify stem without padding in the official code, so it is compared at a
    multiple of 4 (68x92 still gives odd maps, 17x23, and odd patch merging); ours also takes
    any size (tests/test_vmamba.py)."""
    torch.manual_seed(0)
    classifier = _official_classifiers(official)[arch]()
    official_sd = _perturbed(classifier.state_dict())
    ours = VMamba(arch).eval()
    report = ours.load_pretrained(official_sd, logger=None)
    assert sorted(report.dropped) == sorted(k for k in official_sd if k.startswith('classifier.'))
    assert sorted(report.initialised) == sorted(k for k in ours.state_dict()
                                                if k.startswith('out_norms.'))
    with torch.no_grad():  # non-trivial out norms, shared with the official model below
        for p in ours.out_norms.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref_model = _official_backbone(official, arch, official_sd, ours)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ref, out = ref_model(x), ours(x)
    errors = [_rel_err(r, o) for r, o in zip(ref, out)]
    print(f'VMamba {arch} {size}: max rel. error per output {errors}')
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert max(errors) <= REL_TOL


def test_old_release_checkpoint_layout(official, official_2024_01):
    """A checkpoint with the 2024-01 key names loads into ours and gives what the official
    loader (which renames those keys) gives."""
    torch.manual_seed(0)
    old_sd = _perturbed(official_2024_01.VSSM(depths=[2, 2, 9, 2], dims=96).state_dict(), seed=1)
    assert any('self_attention' in k for k in old_sd) and 'head.weight' in old_sd
    ours = VMamba('v0_tiny').eval()
    report = ours.load_pretrained(old_sd, logger=None)
    assert sorted(report.dropped) == ['classifier.head.bias', 'classifier.head.weight',
                                      'classifier.norm.bias', 'classifier.norm.weight']
    ref_model = _official_backbone(official, 'v0_tiny', old_sd, ours)
    x = torch.randn(1, 3, 36, 52)
    with torch.no_grad():
        errors = [_rel_err(r, o) for r, o in zip(ref_model(x), ours(x))]
    print(f'VMamba v0_tiny, 2024-01 key names: max rel. error per output {errors}')
    assert max(errors) <= REL_TOL
