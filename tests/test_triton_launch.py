"""FastLaunch (ops/triton_launch.py) reuses a compiled kernel only for an argument signature the
JIT would specialise identically, and passes the arguments in the kernel's order. The GPU checks
(tools/gpu_check_ops.py) run every scan and norm kernel through it on real launches."""
import torch

from mmvision_ssm.ops import triton_launch


class FakeCompiled:
    def __init__(self, tag, log):
        self.tag, self.log = tag, log

    def __getitem__(self, grid):
        return lambda *args: self.log.append(('handle', self.tag, grid, args))


class FakeKernel:
    """Stands in for a @triton.jit kernel with parameters (x_ptr, n, BLOCK)."""
    arg_names = ['x_ptr', 'n', 'BLOCK']

    def __init__(self):
        self.log, self.compiles = [], 0

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.run(*args, grid=grid, warmup=False, **kwargs)

    def run(self, *args, grid, warmup, **kwargs):
        self.compiles += 1
        self.log.append(('jit', grid, args, kwargs))
        return FakeCompiled(self.compiles, self.log)


def make(monkeypatch, enabled=True):
    monkeypatch.setattr(triton_launch, '_current_device', lambda: 0)
    if not enabled:
        monkeypatch.setenv(triton_launch.ENV_VAR, '0')
    kernel = FakeKernel()
    return kernel, triton_launch.FastLaunch(kernel)


def test_hit_uses_the_handle_with_every_argument_in_order(monkeypatch):
    kernel, launch = make(monkeypatch)
    x = torch.zeros(64)
    launch[(4,)](x, 100, BLOCK=32, num_warps=4)
    launch[(8, 2)](x, 100, BLOCK=32, num_warps=4)
    assert kernel.compiles == 1
    assert kernel.log[0][0] == 'jit'
    kind, tag, grid, args = kernel.log[1]
    assert (kind, tag, grid) == ('handle', 1, (8, 2, 1))
    assert args[0] is x and args[1:] == (100, 32)  # the constexpr by name, not num_warps


def test_new_specialisations_go_through_the_jit(monkeypatch):
    kernel, launch = make(monkeypatch)
    x = torch.zeros(64)
    launch[(1,)](x, 100, BLOCK=32)
    launch[(1,)](torch.zeros(64), 100, BLOCK=32)  # same dtype and alignment: a hit
    assert kernel.compiles == 1
    launch[(1,)](x[1:], 100, BLOCK=32)  # 4-byte offset: not 16-byte aligned
    launch[(1,)](x.double(), 100, BLOCK=32)  # another dtype
    launch[(1,)](x, 1, BLOCK=32)  # an integer Triton specialises (== 1)
    launch[(1,)](x, 100, BLOCK=64)  # another constexpr
    launch[(1,)](x, 100, BLOCK=32, num_warps=8)  # another launch option
    assert kernel.compiles == 6
    launch[(1,)](x[4:], 100, BLOCK=32)  # 16-byte offset: the aligned entry
    assert kernel.compiles == 6


def test_disabled_by_environment(monkeypatch):
    kernel, launch = make(monkeypatch, enabled=False)
    x = torch.zeros(64)
    for _ in range(3):
        launch[(1,)](x, 100, BLOCK=32)
    assert kernel.compiles == 3 and all(entry[0] == 'jit' for entry in kernel.log)


def test_defaulted_parameter_keeps_the_jit_path(monkeypatch):
    kernel, launch = make(monkeypatch)
    x = torch.zeros(64)
    for _ in range(2):
        launch[(1,)](x, 100)  # BLOCK left to its default: the order is unknown here
    assert kernel.compiles == 2


def test_a_tensor_among_the_by_value_arguments_is_never_cached(monkeypatch):
    kernel, launch = make(monkeypatch)
    x = torch.zeros(64)
    launch[(1,)](x, 100, BLOCK=32)  # learns: one leading pointer
    for _ in range(2):
        launch[(1,)](x, torch.zeros(1), BLOCK=32)
    assert kernel.compiles == 3 and len(launch.cache) == 1
    launch[(1,)](None, 100, BLOCK=32)  # not a tensor where the pointer was: the JIT path
    assert kernel.compiles == 4 and len(launch.cache) == 1
