"""The Gluon cross-scan kernels (mmvision_ssm/ops/scan_gluon_cross.py) without a GPU.

Gluon has no CPU interpreter, so their values are checked on a GPU by tools/gpu_check_ops.py
(the channels-last cross cases, in several tile layouts). Here: the launch rule that chooses
them, and that both kernels compile for sm_90 with the installed Triton into the registers the
layouts were designed for (no spills; the backward within 3 programs of 128 threads per SM).
"""
import os
import re
import subprocess

import pytest
import torch

triton = pytest.importorskip('triton')
gc = pytest.importorskip('mmvision_ssm.ops.scan_gluon_cross')
st = pytest.importorskip('mmvision_ssm.ops.scan_triton')

SMS = 132


def test_layout_rule_by_map_and_programs_per_sm():
    # VMamba-T 224^2 b64 stage 2: 64 x 6 channel blocks x 4 directions, 784 tokens: the
    # default, the backward in 32 x 32 tiles (the states every 32 tokens), the forward in
    # 32 x 64, both prefetching
    assert gc.pick_layout(64, 192, 28 * 28, SMS) == gc.LAYOUT
    assert gc.tile(gc.LAYOUT) == (32, 32) and gc.tile(gc.fwd_layout(gc.LAYOUT)) == (32, 64)
    assert gc.LAYOUT['FWD_PREFETCH'] and gc.LAYOUT['PREFETCH']
    # stage 1 (3136 tokens, 768 programs): the forward in 8 warps, 128-token chunks
    s1 = gc.pick_layout(64, 96, 56 * 56, SMS)
    assert s1 == dict(gc.LAYOUT, FWD_NUM_WARPS=8)
    assert gc.tile(gc.fwd_layout(s1)) == (32, 128) and gc.tile(s1) == (32, 32)
    # 512^2 b8 stage 2: a long map but 192 programs (1.45 per SM): 4 warps
    assert gc.pick_layout(8, 192, 64 * 64, SMS) == gc.LAYOUT
    # stage 4 (49 tokens, one chunk): no prefetch; stage 3 (196, 4 chunks) neither
    assert gc.pick_layout(64, 768, 7 * 7, SMS) == dict(gc.LAYOUT, FWD_PREFETCH=False)
    assert gc.pick_layout(64, 384, 14 * 14, SMS) == dict(gc.LAYOUT, FWD_PREFETCH=False)
    assert gc.pick_layout(64, 384, 257, SMS) == gc.LAYOUT
    # 1344x800 b2 stage 2: 48 programs -> not these kernels
    assert gc.pick_layout(2, 192, 100 * 168, SMS) is None
    # an explicit (partial) layout is always taken
    assert gc.pick_layout(2, 192, 100 * 168, SMS, dict(TPW_D=8)) == dict(gc.LAYOUT, TPW_D=8)
    assert gc.tile(dict(gc.LAYOUT, TPW_D=8)) == (64, 16)
    assert gc.tile(dict(gc.LAYOUT, WPC_D=1)) == (8, 128)
    # a key no kernel takes is refused, not silently dropped (the default would run instead)
    with pytest.raises(ValueError, match=r"unknown keys \['TPW'\]"):
        gc.pick_layout(64, 96, 56 * 56, SMS, dict(TPW=8))


def test_applies_only_where_gluon_runs(monkeypatch):
    if not gc.SUPPORTED:
        pytest.skip(f'Triton {triton.__version__}: the Gluon kernels need >= 3.6')
    cuda = torch.device('cuda')
    monkeypatch.delenv(gc.ENV_VAR, raising=False)
    assert gc.applies(1, 3136, 96, cuda)
    monkeypatch.setenv(gc.ENV_VAR, '0')  # the switch back to the Triton kernels
    assert not gc.applies(1, 3136, 96, cuda)
    monkeypatch.setenv(gc.ENV_VAR, '1')
    assert gc.applies(1, 3136, 96, cuda)
    assert not gc.applies(16, 3136, 96, cuda)  # d_state 16: the Triton kernels
    assert not gc.applies(1, 3136, 96, torch.device('cpu'))  # no CPU interpreter for Gluon
    assert not gc.applies(1, gc.MAX_TOKENS, 8, cuda)  # the fp32 pixel division's limit
    assert gc.applies(1, 2 ** 21, 255, cuda)  # 32-bit offsets within a map: dt's 4 x CH x L
    assert not gc.applies(1, 2 ** 21, 256, cuda)


def test_pick_config_sends_cpu_and_overrides_to_triton():
    cpu = torch.device('cpu')
    # the interpreter (CPU) never gets the Gluon kernels: its launch rule stays as tested in
    # test_ops_triton_interpret.py
    assert 'gluon' not in st._pick_config(1, 96, 3136, 4, True, bsz=64, device=cpu)
    try:  # a 'gluon' entry forced on a device where Gluon cannot run is ignored as well
        st.CONFIG_OVERRIDE.update(gluon={})
        assert 'gluon' not in st._pick_config(1, 96, 3136, 4, True, bsz=64, device=cpu)
    finally:
        st.CONFIG_OVERRIDE.clear()


def test_pick_config_on_cuda_takes_gluon_by_programs(monkeypatch):
    # a CUDA device with an H100's 132 SMs, without one: the rule as _pick_config applies it
    if not gc.SUPPORTED:
        pytest.skip(f'Triton {triton.__version__}: the Gluon kernels need >= 3.6')
    monkeypatch.setattr(st, 'sm_count', lambda device, interpreter_sms: SMS)
    monkeypatch.delenv(gc.ENV_VAR, raising=False)
    cuda = torch.device('cuda')
    cfg = st._pick_config(1, 96, 56 * 56, 4, True, bsz=64, device=cuda)  # VMamba-T stage 1
    assert cfg['gluon'] == dict(gc.LAYOUT, FWD_NUM_WARPS=8)
    assert (cfg['BLOCK_D'], cfg['BLOCK_L']) == (32, 32)  # the states' chunks
    assert cfg['split'] and cfg['atomic'] and not cfg['chunk_par']
    cfg = st._pick_config(1, 192, 64 * 64, 4, True, bsz=8, device=cuda)  # 512^2 b8 stage 2
    assert cfg['gluon'] == gc.LAYOUT and cfg['BLOCK_L'] == 32
    for few in (dict(N=1, HD=192, L=100 * 168, bsz=2), dict(N=1, HD=384, L=50 * 84, bsz=2)):
        # 1344x800 b2 stages 2 and 3: too few programs -> the Triton kernels
        cfg = st._pick_config(few['N'], few['HD'], few['L'], 4, True, bsz=few['bsz'],
                              device=cuda)
        assert 'gluon' not in cfg
    assert 'gluon' not in st._pick_config(1, 96, 3136, 4, False, bsz=64, device=cuda)  # NCHW
    assert 'gluon' not in st._pick_config(16, 96, 3136, 4, True, bsz=64, device=cuda)  # n 16
    monkeypatch.setenv(gc.ENV_VAR, '0')
    assert 'gluon' not in st._pick_config(1, 96, 3136, 4, True, bsz=64, device=cuda)
    monkeypatch.delenv(gc.ENV_VAR)
    try:
        st.CONFIG_OVERRIDE.update(BLOCK_D=8)  # a Triton tile forced: the Triton kernels
        assert 'gluon' not in st._pick_config(1, 96, 3136, 4, True, bsz=64, device=cuda)
        st.CONFIG_OVERRIDE.update(gluon=dict(TPW_D=8))  # and a Gluon layout forced
        cfg = st._pick_config(1, 96, 3136, 4, True, bsz=64, device=cuda)
        assert cfg['gluon']['TPW_D'] == 8 and (cfg['BLOCK_D'], cfg['BLOCK_L']) == (64, 16)
    finally:
        st.CONFIG_OVERRIDE.clear()


def _ptxas_stats(ptx):
    ptxas = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    if not os.path.exists(ptxas):
        pytest.skip('no ptxas in the Triton wheel')
    target = re.search(r'^\.target\s+(\S+)', ptx, re.M).group(1)
    out = subprocess.run([ptxas, '-v', f'-arch={target}', '-', '-o', os.devnull], input=ptx,
                         capture_output=True, text=True, check=True).stderr
    regs = int(re.search(r'Used (\d+) registers', out).group(1))
    spills = sum(int(n) for n in re.findall(r'(\d+) bytes spill stores', out))
    return regs, spills


# VMamba-T stage 1 at 224^2 (56 x 56 tokens, 96 channels, channels-last): the integer
# arguments the kernels get there, for the JIT's specialisation (1 -> constant, multiples of
# 16 -> aligned)
L, CH = 56 * 56, 96
STAGE1_INTS = dict(L=L, HH=56, WW=56, CH=CH, NCHUNK=L // 32 + 1, su_b=L * CH, su_p=CH,
                   sdt_b=L * 4 * CH, sdt_k=CH, sdt_p=4 * CH, sB_b=L * 4, sB_g=1, sB_p=4,
                   sC_b=L * 4, sC_g=1, sC_p=4, sy_b=L * CH, sy_p=CH, sa_b=L * CH, sa_p=CH)


def _compile_sm90(fn, layout):
    """Compile a kernel as the JIT would for VMamba-T's stage 1 (bf16 maps, fp32 scratch)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    args = gc._kernel_args(layout, fn is gc._cross_fwd_kernel)
    consts = dict(args, HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, STATE_L=gc.tile(layout)[1])
    bf16 = {'u_ptr', 'dt_ptr', 'B_ptr', 'C_ptr', 'gy_ptr', 'gdt_ptr'}
    sig, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        value = consts.get(name, STAGE1_INTS.get(name))
        if fn.params[i].is_constexpr or value == 1:
            sig[name] = 'constexpr'
            constexprs[(i,)] = value
        elif name.endswith('_ptr'):
            sig[name] = '*bf16' if name in bf16 else '*fp32'
            attrs[(i,)] = [['tt.divisibility', 16]]
        elif name == 'inv_hh':
            sig[name] = 'fp32'
        else:
            sig[name] = 'i32'
            if value % 16 == 0:
                attrs[(i,)] = [['tt.divisibility', 16]]
    src = GluonASTSource(fn, sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget('cuda', 90, 32),
                          options=dict(num_warps=args['num_warps']))


# register budgets: within 168, 3 programs of 128 threads fit an SM (65536 registers), as the
# layouts were measured; the 8-warp forward (one program per SM) only has to avoid spilling.
# The layouts pick_layout chooses: the default, stage 1's, stage 4's
@pytest.mark.parametrize('layout, fwd_regs, bwd_regs', [
    ({}, 168, 168), (dict(FWD_NUM_WARPS=8), 255, 168), (dict(FWD_PREFETCH=False), 168, 168)])
def test_kernels_compile_for_sm90_without_spills(layout, fwd_regs, bwd_regs):
    lay = dict(gc.LAYOUT, **layout)
    for fn, max_regs in ((gc._cross_fwd_kernel, fwd_regs), (gc._cross_bwd_kernel, bwd_regs)):
        try:
            kernel = _compile_sm90(fn, lay)
        except (ImportError, RuntimeError) as err:  # no CUDA backend in this Triton build
            pytest.skip(f'cannot compile for sm_90 here: {err}')
        regs, spills = _ptxas_stats(kernel.asm['ptx'])
        assert spills == 0 and regs <= max_regs, (fn.__name__, layout, regs, spills)
