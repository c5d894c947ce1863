"""What is alive at a training step's peak GPU memory, by the source line that allocated it.

    python tools/memory_peak.py --models ours:MambaVision:T official:mamba_vision --batch 64

For each model (names as in tools/benchmark.py) it runs the benchmark's training step
(``mmvision_ssm.benchmark.make_step``: bf16 autocast, backward, SGD) a few times, then records
one more step with PyTorch's CUDA allocator history (``torch.cuda.memory._record_memory_history``)
and replays the trace: the allocated bytes over time, the peak, and the blocks alive at the
peak grouped by the innermost Python frame outside PyTorch (our code, timm, the official
code). Bytes alive before the recorded step (weights, gradients' buffers, optimizer state)
are one "before the step" line. Complements tools/saved_activations.py (what autograd keeps,
CPU) with the transient buffers only a GPU run shows.
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import torch  # noqa: E402

MIB = 2 ** 20


def _site(frames) -> str:
    """The innermost frame outside PyTorch and this tool, as 'dir/file.py:line (function)' (the
    benchmark step's own lines, e.g. the loss, show as mmvision_ssm/benchmark.py)."""
    for f in frames:
        name = f.get('filename', '')
        if not name or name.startswith('<') or '/torch/' in name or name.endswith(
                'memory_peak.py'):
            continue
        short = '/'.join(name.split('/')[-2:])
        return f"{short}:{f.get('line')} ({f.get('name')})"
    # the backward's own allocations (gradients) come from the autograd engine's threads
    return '(no Python frame outside PyTorch: autograd engine)'


def peak_breakdown(trace, before: int) -> dict:
    """Replays allocator ``trace`` events: peak bytes (above ``before``), the event index of the
    peak, and the live bytes per allocation site at that moment."""
    live, cur, peak, peak_at, at_peak = {}, 0, -1, -1, {}
    for i, ev in enumerate(trace):
        action = ev['action']
        if action == 'alloc':
            live[ev['addr']] = ev
            cur += ev['size']
            if cur > peak:
                peak, peak_at, at_peak = cur, i, dict(live)
        elif action in ('free_completed',) and ev['addr'] in live:
            cur -= live.pop(ev['addr'])['size']
    sites = collections.Counter()
    for ev in at_peak.values():
        sites[_site(ev.get('frames', []))] += ev['size']
    return dict(peak_bytes=before + peak, before_bytes=before, step_peak_bytes=peak,
                peak_event=peak_at, events=len(trace), sites=sites.most_common())


def record_step(model, batch, shape, dtype, warmup) -> dict:
    from mmvision_ssm.benchmark import make_step
    device = torch.device('cuda')
    step, _opt = make_step(model, batch, shape, 'train', dtype, device)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    # A CUDA-graphed step's activations live in the graphs' private pools, allocated at
    # capture: a replay allocates nothing, so the allocated peak misses them. The reserved
    # peak after empty_cache (which keeps pools in use) counts them for every model alike.
    reserved_before = torch.cuda.memory_reserved()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks='python')
    try:
        step()
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    trace = snap['device_traces'][torch.cuda.current_device()]
    res = peak_breakdown(trace, before)
    res['max_memory_allocated'] = torch.cuda.max_memory_allocated()
    res['max_memory_reserved'] = torch.cuda.max_memory_reserved()
    res['reserved_before_bytes'] = reserved_before
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', required=True)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    p.add_argument('--dtype', default='bf16', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--top', type=int, default=20)
    p.add_argument('--out')
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('memory_peak.py needs a CUDA device')
    from benchmark import build_spec
    results = {}
    for spec in args.models:
        leftover = torch.cuda.memory_reserved()
        model = build_spec(spec).cuda()
        res = record_step(model, args.batch, tuple(args.size), args.dtype, args.warmup)
        res['reserved_at_build_bytes'] = leftover
        results[spec] = res
        print(f"\n== {spec}: peak {res['peak_bytes'] / MIB:.1f} MiB (allocator max "
              f"{res['max_memory_allocated'] / MIB:.1f}, reserved max "
              f"{res['max_memory_reserved'] / MIB:.1f}); before the step "
              f"{res['before_bytes'] / MIB:.1f} MiB allocated, "
              f"{res['reserved_before_bytes'] / MIB:.1f} reserved; left by earlier models "
              f"{leftover / MIB:.1f} MiB; event {res['peak_event']} of {res['events']}",
              flush=True)
        for site, nbytes in res['sites'][:args.top]:
            print(f'  {nbytes / MIB:9.1f} MiB  {site}')
        del model
        gc.collect()  # a graphed model's graphs and pools sit in reference cycles
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
