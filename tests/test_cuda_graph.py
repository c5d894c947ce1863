"""``cuda_graph=True``: graphed training forward/backward of the backbones.

On the CPU (CI): the option's checks and that it leaves CPU and inference runs eager. On a GPU
(the device machine: ``python -m pytest tests/test_cuda_graph.py``): graphed training steps
match eager ones step by step -- outputs, every parameter gradient, the parameters after SGD --
for every family, under float32 and bf16 autocast; a new input size captures a second graph;
frozen parameters drop the graphs; too many sizes fall back to eager with a warning.
"""
import copy
import pickle
import warnings

import pytest
import torch

from mmvision_ssm.models.backbones import MLLA, VMamba, MambaVision, MViTv2, ViT

FAMILIES = [(VMamba, 'tiny'), (MambaVision, 'T'), (MLLA, 'tiny'), (MViTv2, 'tiny'),
            (ViT, 'small')]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.mark.parametrize('cls,arch', FAMILIES, ids=[c.__name__ for c, _ in FAMILIES])
def test_with_cp_is_refused(cls, arch):
    with pytest.raises(ValueError, match='cuda_graph=True cannot be combined with with_cp'):
        cls(arch, cuda_graph=True, with_cp=True)


def test_cpu_and_inference_run_eagerly():
    torch.manual_seed(0)
    graphed = VMamba('tiny', cuda_graph=True, drop_path_rate=0.0)
    eager = VMamba('tiny', drop_path_rate=0.0)
    eager.load_state_dict(graphed.state_dict())
    x = torch.randn(1, 3, 48, 40)
    for mode in (True, False):
        graphed.train(mode), eager.train(mode)
        for a, b in zip(graphed(x), eager(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert graphed._training_graphs.graphs == {} and graphed._inference_graphs.graphs == {}


def test_graphed_backbones_take_the_triton_norms_earlier():
    # replayed graphs have no host cost, so the LayerNorms without a threshold of their own
    # take the (GPU-faster) Triton kernels from GRAPHED_LN_MIN_TRITON_NUMEL_GRAD; eager
    # backbones keep the default, and norms with their own threshold (MLLA's blocks) keep it
    from mmvision_ssm.models.cuda_graph import GRAPHED_LN_MIN_TRITON_NUMEL_GRAD
    from mmvision_ssm.models.layers import LayerNorm

    def thresholds(model):
        return {n: m.min_triton_numel_grad for n, m in model.named_modules()
                if isinstance(m, LayerNorm)}
    small = dict(embed_dims=16, depths=(1, 1, 2, 1))
    graphed, eager = thresholds(VMamba(small, cuda_graph=True)), thresholds(VMamba(small))
    assert graphed.keys() == eager.keys() and len(graphed) > 4
    assert set(graphed.values()) == {GRAPHED_LN_MIN_TRITON_NUMEL_GRAD}
    assert set(eager.values()) == {None}
    mlla, mlla_graphed = thresholds(MLLA('tiny')), thresholds(MLLA('tiny', cuda_graph=True))
    own = {n: t for n, t in mlla.items() if t is not None}
    assert own and all(mlla_graphed[n] == t for n, t in own.items())
    assert all(mlla_graphed[n] == GRAPHED_LN_MIN_TRITON_NUMEL_GRAD for n in mlla if n not in own)


def test_copies_start_without_graphs():
    m = VMamba('tiny', cuda_graph=True)
    for graphs in (m._training_graphs, m._inference_graphs):
        graphs.graphs['sentinel'] = object()
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone.cuda_graph and clone._training_graphs.graphs == {}
        assert type(clone._inference_graphs).__name__ == 'InferenceGraphs'
        assert clone._inference_graphs.graphs == {}
    assert 'sentinel' in m._training_graphs.graphs and 'sentinel' in m._inference_graphs.graphs


def _train_steps(model, xs, amp):
    """Outputs, gradients and parameters of one SGD step per input."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    record = []
    for x in xs:
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        outs = [o.detach().float().clone() for o in out]
        sum((o.float() ** 2).mean() for o in out).backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                 if p.grad is not None}
        opt.step()
        opt.zero_grad(set_to_none=True)
        record.append((outs, grads))
    return record, {n: p.detach().clone() for n, p in model.named_parameters()}


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _flat(tensors):
    return torch.cat([t.float().flatten() for t in tensors])


def _errors(run, ref):
    """Relative (norm) errors of ``run`` against ``ref``: each output map, all gradients of a
    step together, all final parameters together (one parameter's gradient alone can be
    exactly zero in theory -- MViTv2's key-norm bias under softmax -- and rounding noise in
    practice)."""
    (r_steps, r_params), (f_steps, f_params) = run, ref
    errs = {}
    for step, ((r_out, r_grad), (f_out, f_grad)) in enumerate(zip(r_steps, f_steps)):
        assert r_grad.keys() == f_grad.keys()
        errs.update({f'step {step} output {i}': _rel(a.float(), b.float()) for i, (a, b) in
                     enumerate(zip(r_out, f_out))})
        errs[f'step {step} grads'] = _rel(_flat(r_grad[n] for n in f_grad),
                                          _flat(f_grad[n] for n in f_grad))
    errs['params'] = _rel(_flat(r_params[n] for n in f_params),
                          _flat(f_params[n] for n in f_params))
    return errs


@cuda
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('cls,arch', FAMILIES, ids=[c.__name__ for c, _ in FAMILIES])
def test_graphed_training_matches_eager(cls, arch, amp):
    """Graphed steps are as close to an eager run as a second eager run is: the kernels' fp32
    atomics (the scan, index backward) make eager runs differ among themselves."""
    torch.manual_seed(0)
    models = [cls(arch, drop_path_rate=0.0, cuda_graph=g).cuda().train()
              for g in (False, False, True)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    gen = torch.Generator(device='cuda').manual_seed(1)
    xs = [torch.randn(2, 3, 96, 128, device='cuda', generator=gen) for _ in range(3)]
    eager, eager2, graphed = (_train_steps(m, xs, amp) for m in models)
    assert len(models[2]._training_graphs.graphs) == 1
    noise, errs = _errors(eager2, eager), _errors(graphed, eager)
    floor = 1e-2 if amp else 1e-5
    bad = {k: (e, noise[k]) for k, e in errs.items() if e > 4 * noise[k] + floor}
    assert not bad, bad


@cuda
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('cls,arch', FAMILIES, ids=[c.__name__ for c, _ in FAMILIES])
def test_graphed_inference_matches_eager(cls, arch, amp):
    """No-grad forwards replay a graph: the same maps as eager ones (up to the noise between
    two eager runs), owned by the caller (a later call does not overwrite them), one graph per
    input signature, inference mode included."""
    torch.manual_seed(0)
    graphed = cls(arch, cuda_graph=True).cuda().eval()
    eager = cls(arch).cuda().eval()
    eager.load_state_dict(graphed.state_dict())
    gen = torch.Generator(device='cuda').manual_seed(1)
    xs = [torch.randn(2, 3, 96, 128, device='cuda', generator=gen) for _ in range(2)]

    def run(model, x):
        with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
            return [o.float() for o in model(x)]
    want = [run(eager, x) for x in xs]
    noise = [run(eager, x) for x in xs]
    got = [run(graphed, x) for x in xs]  # the second call must not change the first's maps
    assert len(graphed._inference_graphs.graphs) == 1 and not graphed._training_graphs.graphs
    floor = 1e-2 if amp else 1e-5
    for g, w, n in zip(got, want, noise):
        for a, b, c in zip(g, w, n):
            assert _rel(a, b) <= 4 * _rel(c, b) + floor
    with torch.inference_mode():
        out, ref = graphed(xs[0][:, :, :64]), eager(xs[0][:, :, :64])
    assert len(graphed._inference_graphs.graphs) == 2
    assert [o.shape for o in out] == [r.shape for r in ref]


@cuda
def test_new_sizes_frozen_parameters_and_the_graph_limit():
    m = VMamba('tiny', drop_path_rate=0.0, cuda_graph=True).cuda().train()
    graphs = m._training_graphs
    m(torch.randn(2, 3, 64, 64, device='cuda'))
    m(torch.randn(2, 3, 64, 64, device='cuda'))
    assert len(graphs.graphs) == 1
    m(torch.randn(2, 3, 96, 64, device='cuda'))
    assert len(graphs.graphs) == 2
    m.eval()
    with torch.no_grad():
        m(torch.randn(2, 3, 32, 32, device='cuda'))  # inference: its own graphs
    assert len(graphs.graphs) == 2 and len(m._inference_graphs.graphs) == 1
    m.train()
    m.patch_embed.requires_grad_(False)  # which parameters get gradients changed: recapture
    out = m(torch.randn(2, 3, 64, 64, device='cuda'))
    assert len(graphs.graphs) == 1
    sum(o.float().mean() for o in out).backward()
    assert all(p.grad is None for p in m.patch_embed.parameters())
    graphs.max_graphs = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        eager_out = m(torch.randn(2, 3, 32, 32, device='cuda'))
    assert len(graphs.graphs) == 1 and eager_out[0].shape[-2:] == (8, 8)
    assert any('run eagerly' in str(w.message) for w in caught)
