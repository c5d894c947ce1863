"""Where does a backbone spend its GPU time? Kernel-level breakdown of one inference or training step.

    python tools/profile_backbone.py --model ours:VMamba:tiny --batch 128 --shape 224 224 --mode infer
    python tools/profile_backbone.py --model official:mlla --batch 64 --mode train --out prof.json

Models are named as in tools/benchmark.py (``ours:<Name>[:<arch>]``, ``official:<name>``,
``timm:<model>``). The step is the benchmark's (bf16 autocast by default; training = forward,
backward, SGD step); after warm-up, ``--steps`` steps run under ``torch.profiler`` and the CUDA
kernels are summed by name, then by category (GEMM, convolution, normalisation, elementwise,
scan, attention, copy/transpose, reduction, other) so the table says what to optimise first.
"""
from __future__ import annotations

import argparse
import collections
import json
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import torch  # noqa: E402

# first match wins; patterns are matched against the lower-cased kernel name
CATEGORIES = (
    ('scan', r'selective_scan|_cross_|scan_fwd|scan_bwd|_scan_kernel|cross_scan|cross_merge'),
    ('normalisation', r'layer_norm|layernorm|batch_norm|group_norm|rms_norm|_ln_(fwd|bwd)'),
    ('attention', r'flash|fmha|attention|sdpa|efficient_attention'),
    ('gemm', r'gemm|sm90_xmma|cutlass|nvjet|cublas|matmul|splitk'),
    ('convolution', r'conv|implicit|winograd|dgrad|wgrad|depthwise'),
    ('copy/transpose', r'copy|transpose|permute|cat|contiguous|pad|index'),
    ('reduction', r'reduce|sum|mean|norm_kernel'),
    ('elementwise', r'elementwise|vectorized|unrolled|pointwise|triton_poi|mul|add|gelu|silu'),
)


def categorise(name: str) -> str:
    low = name.lower()
    for cat, pattern in CATEGORIES:
        if re.search(pattern, low):
            return cat
    return 'other'


def kernel_table(prof, steps: int) -> list[dict]:
    """Per-kernel CUDA time (ms per step) and launch count, largest first."""
    acc = collections.defaultdict(lambda: [0.0, 0])
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            rec = acc[evt.name]
            rec[0] += evt.device_time_total if hasattr(evt, 'device_time_total') else evt.cuda_time
            rec[1] += 1
    rows = [dict(kernel=k, ms=v[0] / 1e3 / steps, calls=v[1] / steps, category=categorise(k))
            for k, v in acc.items()]
    return sorted(rows, key=lambda r: -r['ms'])


def profile(model, batch, shape, mode, dtype, steps, warmup, cpu_top=0):
    from mmvision_ssm.benchmark import make_step, time_iterations
    device = torch.device('cuda')
    step, _ = make_step(model, batch, shape, mode, dtype, device)
    _, total_s = time_iterations(step, steps, warmup, device)
    wall_ms = total_s / steps * 1e3
    acts = [torch.profiler.ProfilerActivity.CUDA]
    if cpu_top:
        acts.append(torch.profiler.ProfilerActivity.CPU)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    if cpu_top:  # host time per op: what a launch-bound step spends on the CPU
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=cpu_top))
    return wall_ms, kernel_table(prof, steps)


def summarise(rows):
    by_cat = collections.defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        by_cat[r['category']][0] += r['ms']
        by_cat[r['category']][1] += r['calls']
    return {k: dict(ms=v[0], calls=v[1])
            for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1][0])}


def main(argv=None):
    from benchmark import build_spec  # tools/benchmark.py: the same model builders
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', nargs='+', required=True,
                   help='ours:NAME[:ARCH] | official:NAME | timm:NAME')
    p.add_argument('--mode', default='infer', choices=['infer', 'train'])
    p.add_argument('--dtype', default='bf16', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--shape', type=int, nargs='+', default=[224, 224])
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--top', type=int, default=25)
    p.add_argument('--compile', action='store_true')
    p.add_argument('--cpu-top', type=int, default=0,
                   help='also print the N ops with the most host time')
    p.add_argument('--out', help='JSON file; results are appended')
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('profile_backbone.py needs a CUDA device')
    shape = tuple(args.shape * 2 if len(args.shape) == 1 else args.shape)
    results = []
    for spec in args.model:
        model = build_spec(spec)
        if args.compile:
            model = torch.compile(model)
        wall, rows = profile(model, args.batch, shape, args.mode, args.dtype, args.steps,
                             args.warmup, args.cpu_top)
        total = sum(r['ms'] for r in rows)
        categories = summarise(rows)
        print(f'\n### {spec} {args.mode} b{args.batch} {shape[0]}x{shape[1]} {args.dtype}'
              f'{" compiled" if args.compile else ""}: {wall:.2f} ms/step wall, '
              f'{total:.2f} ms/step in kernels, {sum(r["calls"] for r in rows):.0f} launches')
        for cat, v in categories.items():
            print(f'  {cat:15s} {v["ms"]:8.3f} ms  {100 * v["ms"] / total:5.1f} %  '
                  f'{v["calls"]:6.0f} launches')
        for r in rows[:args.top]:
            print(f'  {r["ms"]:8.3f} ms {100 * r["ms"] / total:5.1f} % x{r["calls"]:<5.0f} '
                  f'[{r["category"]}] {r["kernel"][:110]}')
        results.append(dict(model=spec, mode=args.mode, batch=args.batch, shape=list(shape),
                            dtype=args.dtype, compile=args.compile, wall_ms=wall,
                            kernel_ms=total, categories=categories, kernels=rows[:60]))
        if args.out:
            old = json.load(open(args.out)) if osp.exists(args.out) else []
            json.dump(old + results[-1:], open(args.out, 'w'), indent=1)
        del model
        torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
