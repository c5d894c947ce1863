"""Complexity and log tools: FLOP handles against hand counts, get_flops / analyze_logs CLIs."""
import json
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip('mmengine')

from mmvision_ssm import ops  # noqa: E402
from mmvision_ssm.analysis import count_flops, opaque_scans  # noqa: E402
from mmvision_ssm.analysis.logs import load_scalars, plot_curves, train_time  # noqa: E402
from mmvision_ssm.ops import cross_selective_scan, selective_scan  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools'))
import analyze_logs  # noqa: E402
import get_flops  # noqa: E402


class TinyMixer(nn.Module):
    """conv -> linear -> a selective scan (D and z) -> a VMamba cross scan -> SDPA."""

    def __init__(self, c=8, n=4, heads=2):
        super().__init__()
        self.c, self.n, self.heads = c, n, heads
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.proj = nn.Linear(c, 3 * c + 2 * n)
        self.A = nn.Parameter(-torch.rand(c, n))
        self.D = nn.Parameter(torch.ones(c))
        self.A4 = nn.Parameter(-torch.rand(4 * c, 1))
        self.D4 = nn.Parameter(torch.ones(4 * c))

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        t = self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2)  # (b, 3c + 2n, l)
        u, dt, z, B, C = t.split([c, c, c, self.n, self.n], dim=1)
        y = selective_scan(u, dt, self.A, B, C, self.D, z=z, delta_softplus=True)
        m = y.view(b, c, h, w)
        y4 = cross_selective_scan(m, m.unsqueeze(1).expand(b, 4, c, h, w), self.A4,
                                  m[:, None, :1].expand(b, 4, 1, h, w),
                                  m[:, None, 1:2].expand(b, 4, 1, h, w), self.D4)
        q = y4.flatten(2).transpose(1, 2).reshape(b, h * w, self.heads, -1).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q)


def hand_count(b, c, n, heads, h, w):
    l = h * w  # noqa: E741
    conv = b * l * c * 3 * 9
    linear = b * l * c * (3 * c + 2 * n)
    # documented scan convention: 9*b*d*l*n, + b*d*l for D, + b*d*l for the gate z
    scan = 9 * b * c * l * n + 2 * b * c * l
    # cross scan: 4 directions of a d_state-1 scan with D, + 3 adds per output of the merge
    cross = 9 * b * 4 * c * l * 1 + b * 4 * c * l + 3 * b * c * l
    # SDPA: q @ k^T and attn @ v, one multiply-add = one FLOP
    sdpa = 2 * b * heads * l * l * (c // heads)
    return dict(conv=conv, linear=linear, selective_scan=scan + cross,
                scaled_dot_product_attention=sdpa)


@pytest.mark.parametrize('backend', ['torch', 'ref'])
def test_tiny_model_matches_hand_count(monkeypatch, backend):
    monkeypatch.setenv(ops.ENV_VAR, backend)
    torch.manual_seed(0)
    model = TinyMixer()
    b, h, w = 2, 5, 6
    res = count_flops(model, (torch.randn(b, 3, h, w), ))
    want = hand_count(b, model.c, model.n, model.heads, h, w)
    assert res.total == pytest.approx(sum(want.values()), rel=0.05)
    for op, flops in want.items():
        assert res.by_operator[op] == flops, op
    assert res.params == sum(p.numel() for p in model.parameters())
    assert not any('PythonOp' in k or 'scaled_dot' in k for k in res.unsupported)


def test_opaque_scans_restores_and_keeps_outputs():
    model = TinyMixer()
    x = torch.randn(1, 3, 4, 3)
    this = sys.modules[__name__]
    originals = (ops.selective_scan, ops.cross_selective_scan)
    with torch.no_grad():
        ref = model(x)
        with opaque_scans():
            assert this.selective_scan is not originals[0]  # module globals are rerouted
            assert ops.cross_selective_scan is not originals[1]
            inside = model(x)
    assert (this.selective_scan, this.cross_selective_scan) == originals
    assert (ops.selective_scan, ops.cross_selective_scan) == originals
    torch.testing.assert_close(inside, ref)


def test_direct_backend_call_is_reported():
    class Direct(nn.Module):
        def forward(self, x):  # the torch backend called without the dispatcher
            from mmvision_ssm.ops.scan_torch import LinearScan
            return LinearScan.apply(x, x)

    with pytest.raises(RuntimeError, match='LinearScan.*dispatcher'):
        count_flops(Direct(), (torch.randn(4, 3), ))


def test_mlla_linear_attention_matmuls_counted():
    from mmvision_ssm.models.backbones.mlla import MLLA
    heads, dim = (2, 2, 4, 4), 16
    model = MLLA(arch=dict(embed_dims=dim, depths=(1, 1, 1, 1), num_heads=heads)).eval()
    res = count_flops(model, (torch.randn(1, 3, 64, 64), ))
    # per block: k^T v and q_rope @ kv are N*C*C each (all heads in one masked (C, C) matmul),
    # the normaliser q @ (mean k per head) is N*C*heads; ELU+1 is element-wise (not counted)
    hand = sum((64 // s) ** 2 * c * (2 * c + nh)
               for s, c, nh in zip((4, 8, 16, 32), (dim, 2 * dim, 4 * dim, 8 * dim), heads))
    assert res.by_operator['matmul'] == hand
    assert res.total > hand


def _run_get_flops(capsys, tmp_path, *argv):
    out = tmp_path / 'flops.json'
    rc = get_flops.main([*argv, '--out', str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    return json.loads(out.read_text()), text


def test_get_flops_upernet_demo(capsys, tmp_path):
    cfg = os.path.join(ROOT, 'configs/demo/upernet_demo.py')
    res, text = _run_get_flops(capsys, tmp_path, cfg, '--shape', '128', '96')
    assert res['input_shape'] == [128, 96]
    assert res['params'] > 1e6 and res['flops'] > 1e8
    assert res['modules']['backbone']['flops'] > 0 and res['modules']['decode_head']['flops'] > 0
    assert res['flops'] >= res['modules']['backbone']['flops'] + res['modules']['decode_head'][
        'flops']
    assert 'Flops:' in text and 'Params:' in text


def test_get_flops_vmamba_maskrcnn_counts_scan(capsys, tmp_path):
    cfg = os.path.join(ROOT, 'configs/vmamba/maskrcnn_vmamba_t_1x_coco.py')
    res, _ = _run_get_flops(capsys, tmp_path, cfg, '--shape', '128', '--cfg-options',
                            'model.test_cfg.rpn.nms_pre=50', 'model.test_cfg.rpn.max_per_img=10')
    # VMamba-T (dims 96-768, depths 2-2-8-2, ssm_ratio 1, d_state 1): per block a cross scan
    # of 43*d*h*w FLOPs (4 directions * (9 + 1 for D) + 3 merge adds); stages at stride 4..32
    hand = sum(depth * 43 * dim * (128 // s) ** 2
               for depth, dim, s in zip((2, 2, 8, 2), (96, 192, 384, 768), (4, 8, 16, 32)))
    assert res['by_operator']['selective_scan'] == hand
    assert res['modules']['backbone']['flops'] > hand
    for part in ('neck', 'rpn_head', 'roi_head'):
        assert res['modules'][part]['flops'] > 0
    assert 25e6 < res['modules']['backbone']['params'] < 35e6


def test_get_flops_errors(capsys):
    assert get_flops.main(['configs/nope.py', '--shape', '64']) == 2
    assert 'config file not found' in capsys.readouterr().err
    cfg = os.path.join(ROOT, 'configs/demo/upernet_demo.py')
    assert get_flops.main([cfg, '--shape', '1', '2', '3']) == 2
    assert get_flops.main([cfg, '--shape', '0']) == 2
    assert 'positive' in capsys.readouterr().err


def _write_scalars(path):
    lines = []
    # epoch-based run: 2 epochs of 40 iterations, logged every 10; times known exactly
    times = [5.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    for i, t in enumerate(times):
        it = 10 * (i + 1)
        lines.append(dict(lr=0.01 * it, loss=10.0 / it, time=t, data_time=0.1, epoch=1 + i // 4,
                          iter=it, step=it))
        if it % 40 == 0:
            lines.append({'coco/bbox_mAP': 0.1 * it / 40, 'coco/bbox_AP.ring': float('nan'),
                          'time': 9.0, 'step': it // 40})
    with open(path, 'w') as f:
        f.write('\n'.join(json.dumps(r) for r in lines) + '\n')
    return times


def test_logs_time_series_and_plot(tmp_path, capsys):
    path = tmp_path / 'run' / '20260101_000000' / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    times = _write_scalars(path)
    run = load_scalars(str(path.parent.parent))  # the timestamp dir resolves to the file
    t = train_time(run)
    assert t['mean'] == pytest.approx(sum(times[1:]) / 7)  # first interval dropped
    assert train_time(run, include_outliers=True)['mean'] == pytest.approx(sum(times) / 8)
    assert t['slowest_epoch'] == 2 and t['fastest_epoch'] == 1
    assert t['fastest_epoch_time'] == pytest.approx(1.0)
    # validation epochs sit at the last iteration of their epoch
    assert run.series('coco/bbox_mAP') == ([40, 80], [pytest.approx(0.1), pytest.approx(0.2)])
    assert run.series('coco/bbox_AP.ring') == ([], [])

    other = tmp_path / 'other.json'
    _write_scalars(other)
    out = tmp_path / 'curves.png'
    assert analyze_logs.main(['plot_curve', str(path), str(other), '--keys', 'loss', 'lr',
                              'coco/bbox_mAP', '--legend', 'a', 'b', '--out', str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000

    assert analyze_logs.main(['cal_train_time', str(path)]) == 0
    assert f'average iter time: {sum(times[1:]) / 7:.4f}' in capsys.readouterr().out
    assert analyze_logs.main(['plot_curve', str(path), '--keys', 'mIoU', '--out',
                              str(out)]) == 2
    assert 'available keys' in capsys.readouterr().err
    with pytest.raises(ValueError, match='legend'):
        plot_curves([run], ['loss'], str(out), legend=['a', 'b'])
