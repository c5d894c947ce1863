"""Every backbone returns contiguous NCHW maps, and makes each one so as soon as it is produced.

Copying all outputs only at the end of the forward kept every normed (channels-last) map and
its copy alive together: the memory peak of a training step (docs/benchmarks.md, run Y2).
"""
import weakref

import pytest
import torch

from mmvision_ssm.models import backbones

FAMILIES = [
    ('VMamba', dict(arch=dict(embed_dims=16, depths=(1, 1, 1, 1)))),
    ('MambaVision', dict(arch=dict(dim=16, in_dim=8, depths=(1, 1, 2, 2), num_heads=(1, 1, 2, 2),
                                   window_size=(4, 4, 4, 2)))),
    ('MLLA', dict(arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)))),
    ('MViTv2', dict(arch='tiny')),
    ('ViT', dict(arch=dict(embed_dim=32, depth=4, num_heads=2), out_indices=(1, 3))),
]


@pytest.mark.parametrize('name, kwargs', FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_output_is_copied_when_produced(name, kwargs, monkeypatch):
    model = getattr(backbones, name)(**kwargs).train()
    originals = []  # weak references to the maps handed to output_map, in order
    alive_at_call = []

    def output_map(x):
        alive_at_call.append(sum(r() is not None for r in originals))
        originals.append(weakref.ref(x))
        return x.contiguous()
    monkeypatch.setattr(model, 'output_map', output_map)
    outs = model(torch.randn(2, 3, 67, 45))
    assert len(outs) == len(model.out_indices) == len(alive_at_call) > 1
    # when a map is produced, no earlier normed original is still held
    assert alive_at_call == [0] * len(outs), alive_at_call
    assert all(o.is_contiguous() for o in outs)
    sum(o.float().mean() for o in outs).backward()  # the copies keep the graph intact
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
