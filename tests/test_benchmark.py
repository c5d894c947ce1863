"""tools/benchmark.py and mmvision_ssm/benchmark.py on the CPU: sane outputs, JSON, exponent fit."""
import gc
import json
import math
import os.path as osp
import sys

import pytest
import torch

from mmvision_ssm.benchmark import fit_exponent, format_table, measure, sweep_resolution

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
import benchmark as bench_cli  # noqa: E402  (tools/benchmark.py)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, OpenMP's 2-thread fork-joins stall (60x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyNet(torch.nn.Module):
    """Two maps out, like a backbone; cost grows with the pixel count."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.a(x)
        return y, self.b(y)


@pytest.mark.parametrize('mode', ['infer', 'train'])
def test_measure_fields(mode):
    model = TinyNet()
    before = [p.detach().clone() for p in model.parameters()]
    r = measure(model, batch=2, shape=(16, 12), mode=mode, dtype='fp32', iters=3, warmup=1,
                device='cpu')
    assert r['img_per_s'] > 0 and math.isfinite(r['img_per_s'])
    assert 0 < r['latency_ms'] <= r['latency_p90_ms']
    assert 'peak_mem_gib' in r and r['peak_mem_gib'] is None  # CPU: not measured
    assert (r['mode'], r['batch'], r['shape'], r['iters']) == (mode, 2, [16, 12], 3)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed == (mode == 'train')  # training steps the optimizer, inference does not
    assert '| train |' in format_table([dict(r, name='tiny', mode='train')])


def test_measure_bf16_autocast_and_bad_args():
    r = measure(TinyNet(), batch=1, shape=(8, 8), mode='train', dtype='bf16', iters=2,
                warmup=0, device='cpu')
    assert r['dtype'] == 'bf16' and r['img_per_s'] > 0
    with pytest.raises(ValueError, match='mode'):
        measure(TinyNet(), 1, (8, 8), mode='eval', device='cpu')
    with pytest.raises(ValueError, match='dtype'):
        measure(TinyNet(), 1, (8, 8), dtype='int8', device='cpu')
    with pytest.raises(ValueError, match='cuda_graph'):
        measure(TinyNet(), 1, (8, 8), cuda_graph=True, device='cpu')


def test_measure_trace_records_iterations_and_collections():
    calls = []

    def loss_with_collection(out):
        calls.append(1)
        if len(calls) == 3:  # the second timed iteration (one warm-up first) collects
            gc.collect(1)
        return sum(t.float().mean() for t in out)

    r = measure(TinyNet(), batch=1, shape=(8, 8), mode='train', iters=3, warmup=1, device='cpu',
                loss_fn=loss_with_collection, trace=True)
    assert len(r['latencies_ms']) == len(r['trace']['host_ms']) == 3
    assert all(t > 0 for t in r['latencies_ms'])
    assert (1, 1) in [(i, g) for i, g, _ in r['trace']['gc']]  # iteration 1, generation 1
    assert r['trace']['gc_ms'] >= max(ms for _, _, ms in r['trace']['gc']) >= 0
    assert not any(  # the callback is removed afterwards
        getattr(cb, '__self__', None).__class__.__name__ == 'IterationTrace' for cb in gc.callbacks)
    assert 'latencies_ms' not in measure(TinyNet(), 1, (8, 8), iters=1, device='cpu')


def test_fit_exponent_recovers_known_exponents():
    pixels = [s * s for s in (224, 512, 1024, 1536, 2048)]
    for k in (1.0, 1.5, 2.0):
        times = [3e-7 * p ** k for p in pixels]
        got, c = fit_exponent(pixels, times)
        assert got == pytest.approx(k, abs=1e-9)
        assert math.exp(c) == pytest.approx(3e-7, rel=1e-6)
    # noisy timings (+-5 %) still give the exponent to about 0.05
    g = torch.Generator().manual_seed(0)
    noise = 1 + 0.05 * (2 * torch.rand(len(pixels), generator=g) - 1)
    got, _ = fit_exponent(pixels, [p ** 1.2 * float(n) for p, n in zip(pixels, noise)])
    assert abs(got - 1.2) < 0.05
    with pytest.raises(ValueError):
        fit_exponent([100], [1.0])
    with pytest.raises(ValueError):
        fit_exponent([100, 100], [1.0, 2.0])


def test_sweep_resolution_fits_over_large_sizes():
    res = sweep_resolution(TinyNet(), [8, 16, 32], dtype='fp32', iters=2, warmup=1,
                           device='cpu', fit_min=16)
    assert [p['size'] for p in res['points']] == [8, 16, 32]
    assert all(p['latency_ms'] > 0 for p in res['points'])
    assert res['exponent'] is not None and math.isfinite(res['exponent'])


def test_cli_backbone_json_and_plot(tmp_path):
    out = tmp_path / 'bench.json'
    results = bench_cli.main(['--backbone', 'MLLA', '--arch', 'tiny', '--batch', '2',
                              '--shape', '32', '40', '--iters', '1', '--warmup', '0',
                              '--device', 'cpu', '--out', str(out)])
    saved = json.loads(out.read_text())
    assert [r['mode'] for r in saved] == ['infer', 'train']
    for r in saved:
        assert r['name'] == 'ours:MLLA:tiny' and 'error' not in r
        assert r['img_per_s'] > 0 and 'peak_mem_gib' in r and r['shape'] == [32, 40]
        assert r['env']['torch'] == torch.__version__ and r['env']['command']
    assert len(results) == 2
    # resolution sweep -> JSON -> plot + table rendered from the JSON
    sweep = tmp_path / 'sweep.json'
    bench_cli.main(['--backbone', 'MLLA:tiny', '--sweep-resolution', '16', '24',
                    '--fit-min', '16', '--batch', '1', '--iters', '1', '--warmup', '0',
                    '--device', 'cpu', '--out', str(sweep)])
    rec = json.loads(sweep.read_text())[0]
    assert rec['kind'] == 'sweep' and len(rec['points']) == 2
    assert rec['exponent'] is not None
    pytest.importorskip('matplotlib')
    png = tmp_path / 'sweep.png'
    table = bench_cli.plot_sweep(json.loads(sweep.read_text()), str(png))
    assert png.stat().st_size > 1000 and 'ours:MLLA:tiny' in table


def test_cli_unknown_backbone_is_recorded_not_fatal(tmp_path):
    out = tmp_path / 'b.json'
    bench_cli.main(['--backbone', 'NoSuchNet', '--batch', '1', '--shape', '8', '--iters', '1',
                    '--device', 'cpu', '--out', str(out)])
    (r,) = json.loads(out.read_text())
    assert 'NoSuchNet' in r['error'] and 'VMamba' in r['error']


def test_cli_config_backbone_only_and_whole_detector(tmp_path):
    """A config's backbone alone (ours, built without the registry) and a whole Mask R-CNN
    (needs mmdet: synthetic batch through its data preprocessor, predict mode)."""
    pytest.importorskip('mmdet')
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    out = tmp_path / 'cfg.json'
    bench_cli.main([osp.join(root, 'configs/mlla/mask-rcnn_mlla_t_1x_coco.py'), '--backbone-only',
                    '--mode', 'infer', '--batch', '1', '--shape', '32', '--iters', '1',
                    '--warmup', '0', '--device', 'cpu', '--out', str(out)])
    bench_cli.main([osp.join(root, 'configs/demo/maskrcnn_demo.py'), '--mode', 'infer',
                    '--batch', '1', '--shape', '64', '--iters', '1', '--warmup', '0',
                    '--device', 'cpu', '--out', str(out), '--append'])
    rows = json.loads(out.read_text())
    assert [r['name'].split('/')[-1] for r in rows] == [
        'mask-rcnn_mlla_t_1x_coco.py (backbone)', 'maskrcnn_demo.py']
    assert all('error' not in r and r['img_per_s'] > 0 for r in rows)


def test_plot_from_merges_sweeps_and_refits(tmp_path):
    """--plot-from: sweeps of one model from two files merge by size; the exponent is refitted."""
    def sweep(sizes, k):
        return [dict(kind='sweep', name='ours:X:tiny', dtype='bf16', batch=1, fit_min=0,
                     exponent=None,
                     points=[dict(size=s, pixels=s * s, latency_ms=1e-4 * s ** (2 * k),
                                  peak_mem_gib=None) for s in sizes])]
    a, b = tmp_path / 'a.json', tmp_path / 'b.json'
    a.write_text(json.dumps(sweep([64, 128, 256], 3.0)))  # 256 is replaced by b's point
    b.write_text(json.dumps(sweep([256, 512, 1024], 1.5)))
    (rec,) = bench_cli.main(['--plot-from', str(a), str(b), '--fit-min', '256'])
    assert [p['size'] for p in rec['points']] == [64, 128, 256, 512, 1024]
    assert rec['exponent'] == pytest.approx(1.5, abs=1e-9)


def test_make_step_trains_and_infers():
    from mmvision_ssm.benchmark import make_step
    model = TinyNet()
    before = model.a.weight.detach().clone()
    step, opt = make_step(model, 2, (8, 8), 'infer', 'fp32', torch.device('cpu'))
    step()
    assert opt is None and not model.training and torch.equal(model.a.weight, before)
    step, opt = make_step(model, 2, (8, 8), 'train', 'fp32', torch.device('cpu'), lr=0.1)
    step()
    assert isinstance(opt, torch.optim.SGD) and model.training
    assert not torch.equal(model.a.weight, before)  # one SGD step moved the weights


def test_compare_and_profile_helpers():
    import compare_backbones
    import profile_backbone
    assert compare_backbones.parse_case('train:64:224x320') == ('train', 64, (224, 320), False)
    assert compare_backbones.parse_case('infer:8:32x32:graph') == ('infer', 8, (32, 32), True)
    for bad in ('train:64', 'train:64:224x224:graf'):
        with pytest.raises(SystemExit, match='MODE:BATCH:HxW'):
            compare_backbones.parse_case(bad)
    cases = [('infer', 2, (8, 8), False), ('infer', 2, (8, 8), True)]
    rows = [dict(model=m, round=r, case=compare_backbones.case_name(*case), img_per_s=v * k,
                 latency_ms=1000 * 2 / v, peak_mem_gib=0.5)
            for r, (a, b) in enumerate([(10, 30), (12, 20), (11, 25)]) for m, v in (('a', a), ('b', b))
            for case, k in zip(cases, (1, 2))]
    table, summary = compare_backbones.summarise(rows, ['a', 'b'], cases)
    # medians over the rounds, eager and graph rows apart
    assert [s['img_per_s'] for s in summary] == [11, 25, 22, 50]
    assert [s['case'] for s in summary] == ['infer b2 8x8'] * 2 + ['infer b2 8x8 graph'] * 2
    assert summary[1]['ratio'] == pytest.approx(25 / 11) and '2.273x' in table
    assert profile_backbone.categorise('_scan_fwd_kernel') == 'scan'  # ours (Triton)
    assert profile_backbone.categorise('_ln_bwd_kernel') == 'normalisation'
    assert profile_backbone.categorise('nvjet_sm90_tst_192x192') == 'gemm'
    assert profile_backbone.categorise('vectorized_layer_norm_kernel') == 'normalisation'
    assert profile_backbone.categorise('something_new') == 'other'


def test_memory_peak_replays_the_allocator_trace():
    """tools/memory_peak.py: the peak of a replayed allocator trace and what is alive then,
    by the innermost frame outside PyTorch."""
    import memory_peak

    def ev(action, addr, size, file='/x/mmvision_ssm/models/backbones/a.py', line=1):
        frames = [dict(filename='/usr/lib/python3/site-packages/torch/nn/modules/linear.py',
                       line=9, name='forward'), dict(filename=file, line=line, name='forward')]
        return dict(action=action, addr=addr, size=size, frames=frames)
    trace = [ev('alloc', 1, 100, line=10), ev('alloc', 2, 50, line=20),
             ev('free_requested', 1, 100), ev('free_completed', 1, 100),
             ev('alloc', 3, 70, line=30),  # peak: 2 + 3 = 120 < 150 (1 + 2)
             ev('alloc', 4, 40, file='/y/official/model.py', line=5),  # 2 + 3 + 4 = 160
             ev('free_completed', 4, 40), ev('free_completed', 3, 70)]
    res = memory_peak.peak_breakdown(trace, before=1000)
    assert res['step_peak_bytes'] == 160 and res['peak_bytes'] == 1160
    assert res['peak_event'] == 5
    assert dict(res['sites']) == {'backbones/a.py:20 (forward)': 50,
                                  'backbones/a.py:30 (forward)': 70,
                                  'official/model.py:5 (forward)': 40}
    assert memory_peak._site([]).startswith('(no Python frame')
