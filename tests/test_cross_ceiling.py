"""tools/cross_ceiling.py, the probes that bound the fused cross op's speed, without a GPU.

The probes are only a bound if they move all of the op's minimum bytes: every input read, every
output written, at the right places. Their ``mem`` variants (no inline assembly) run here in
Triton's interpreter (a subprocess: the interpreter must be chosen before Triton compiles
anything) on maps with two channel blocks, a ragged last tile and several tiles a program, and
are compared with the same arithmetic in PyTorch. The ``poly`` and ``mufu`` variants, whose
exponentials are PTX, are compiled for sm_90 and must not spill.
"""
import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip('triton')
pytest.importorskip('triton.experimental.gluon')  # the tool uses scan_gluon_cross's constants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, 'tools')
    import cross_ceiling as cc

    b, d, h, w = 2, 48, 3, 7  # 42 tokens: a ragged last tile; 48 channels: 2 blocks of 32
    inp = {k: v.float() for k, v in cc.probe_inputs(b, d, h, w, device='cpu').items()}
    y = cc.fwd_probe(inp, 'mem', 16, 32, 1)
    torch.testing.assert_close(y, cc.fwd_probe_reference(inp, 'mem'), rtol=1e-5, atol=1e-5)

    f = inp
    A, D = f['A'].view(4, d), f['D'].view(4, d)
    gh = f['gy'][..., None, :] * f['C']                       # (b, h, w, 4, d)
    gdt = gh * f['x'][..., None, :] * f['B'] + f['delta'] * A
    ref = dict(gdt=gdt, gB=(gh * f['x'][..., None, :]).sum(-1, keepdim=True),
               gC=(f['gy'][..., None, :] * f['delta']).sum(-1, keepdim=True),
               gx=(gh * f['B'] + D * f['gy'][..., None, :]).sum(-2),
               gA=gdt.sum((0, 1, 2, 3)), gbias=gh.sum((0, 1, 2, 3)),
               gD=(f['gy'] * f['x']).sum((0, 1, 2)))
    grads = dict(gx=torch.empty_like(f['x']), gdt=torch.empty_like(f['delta']),
                 gB=torch.empty_like(f['B']), gC=torch.empty_like(f['C']),
                 gA=torch.empty(4 * d), gD=torch.empty(4 * d), gbias=torch.empty(4 * d))
    # 8-token tiles, one program a channel block: each program walks all 6 tiles
    cc.bwd_probe(inp, 'mem', 8, 32, 1, 1, grads, stages=2)
    for name, want in ref.items():
        got = grads[name][:d] if name in ('gA', 'gD', 'gbias') else grads[name]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)
    print('probes ok')
''')


def test_mem_probes_move_every_byte_to_its_place():
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and 'probes ok' in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize('kernel, consts, warps', [
    ('_fwd_probe', dict(BLOCK_T=16, BLOCK_C=32), 2),
    ('_bwd_probe', dict(BLOCK_T=8, BLOCK_C=128, STAGES=1), 4),
    ('_bwd_probe', dict(BLOCK_T=8, BLOCK_C=32, STAGES=2), 1),
    ('_bwd_probe', dict(BLOCK_T=8, BLOCK_C=128, STAGES=3), 4)])
def test_math_probes_compile_for_sm90_without_spills(kernel, consts, warps):
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    cc = pytest.importorskip('cross_ceiling')
    from test_ops_gluon_cross import _ptxas_stats
    for math in (1, 2):  # poly, mufu
        try:
            compiled = cc.compile_sm90(kernel, warps, MATH=math, **consts)
        except (ImportError, RuntimeError) as err:  # no CUDA backend in this Triton build
            pytest.skip(f'cannot compile for sm_90 here: {err}')
        regs, spills = _ptxas_stats(compiled.asm['ptx'])
        assert spills == 0 and regs <= 255, (kernel, consts, math, regs, spills)
