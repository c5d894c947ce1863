"""Bytes a training forward keeps for its backward, per module: the activation-memory account.

    python tools/saved_activations.py --models ours:MLLA official:mlla --batch 2 --size 224
    python tools/saved_activations.py --models ours:VMamba --depth 3   # finer module names

Runs one forward under autocast (bf16 by default, CPU or GPU) with a
``torch.autograd.graph.saved_tensors_hooks`` pair that records every tensor autograd saves,
counted once per storage (a view saved twice costs nothing extra), and charges it to the
innermost module running when it was saved (truncated to ``--depth`` name components). It runs
at ``--batch`` and at twice that and reports the difference: the activations, which grow with
the batch and decide a training step's peak memory beyond weights, gradients and optimizer
state (the weights' autocast copies are saved too, but do not grow with the batch). Needs no
GPU, so memory changes can be planned and checked on a laptop; the peak a GPU measures also
holds the transient buffers of the backward (docs/benchmarks.md has both).
Model names as in tools/benchmark.py.
"""
from __future__ import annotations

import argparse
import collections
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import torch  # noqa: E402

from benchmark import build_spec  # noqa: E402
from mmvision_ssm.benchmark import DTYPES  # noqa: E402


def saved_bytes(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, depth: int = 2):
    """(total bytes, {module name: bytes}) of what a forward saves for backward (parameters
    themselves excluded; their autocast copies included)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, per_module, stack = set(), collections.Counter(), ['']
    hooks = []
    for name, mod in model.named_modules():
        short = '.'.join(name.split('.')[:depth]) or '<top>'
        # (hooks must return None: a returned value would replace the inputs/outputs)
        hooks.append(mod.register_forward_pre_hook(lambda m, a, s=short: stack.append(s) and None))
        hooks.append(mod.register_forward_hook(lambda m, a, o: stack.pop() and None))

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        # parameters are not activations (their autocast copies cancel in main's difference)
        if key not in seen and key not in params:
            seen.add(key)
            per_module[stack[-1]] += storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    del out
    return sum(per_module.values()), dict(per_module)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', required=True)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, nargs='+', default=[224])
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='bf16')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--depth', type=int, default=2, help='module-name components per row')
    parser.add_argument('--top', type=int, default=12, help='rows per model')
    args = parser.parse_args(argv)
    hw = tuple(args.size * 2)[:2] if len(args.size) == 1 else tuple(args.size[:2])
    dtype = DTYPES[args.dtype]
    totals = {}
    for spec in args.models:
        torch.manual_seed(0)
        model = build_spec(spec).to(args.device).train()
        one, rows1 = saved_bytes(model, torch.randn(args.batch, 3, *hw, device=args.device),
                                 dtype, args.depth)
        two, rows2 = saved_bytes(model, torch.randn(2 * args.batch, 3, *hw, device=args.device),
                                 dtype, args.depth)
        # what grows with the batch: the activations (weights and their casts cancel)
        total = two - one
        rows = {k: rows2.get(k, 0) - rows1.get(k, 0) for k in rows2}
        totals[spec] = total
        print(f'{spec}: {total / 2**20:.1f} MiB saved for backward '
              f'(batch {args.batch}, {hw[0]}x{hw[1]}, {args.dtype})')
        for name, nbytes in sorted(rows.items(), key=lambda r: -r[1])[:args.top]:
            print(f'    {name:40s} {nbytes / 2**20:9.1f} MiB  {nbytes / total:6.1%}')
    first = args.models[0]
    for spec in args.models[1:]:
        print(f'{first} / {spec}: {totals[first] / totals[spec]:.3f}')


if __name__ == '__main__':
    main()
