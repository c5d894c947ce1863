"""Side-by-side speed of two or more backbones, alternating them so drift hits all alike.

    python tools/compare_backbones.py --models ours:VMamba:tiny official:vmamba \
        --case infer:128:224x224 --case train:64:224x224 --rounds 3 --out cmp.json

Models are named as in tools/benchmark.py (``ours:<Name>[:<arch>]``, ``rev:<REV>:<Name>`` for
a revision exported by tools/export_revision.sh, ``official:<name>``, ``timm:<model>``); all
are built once and kept on the GPU. Each round measures every model in
every case (``mode:batch:HxW``, or ``mode:batch:HxW:graph`` to time CUDA-graph replays of the
step instead of eager steps: the GPU's work without the host's) with
:func:`mmvision_ssm.benchmark.measure`; the report gives,
per case, each model's median over rounds of img/s and of the per-iteration median latency,
its peak memory, and the ratio to the first model. Machines whose host CPU is slow make
launch-bound models jitter; alternating rounds and medians keep one slow moment from deciding.
"""
from __future__ import annotations

import argparse
import gc
import json
import os.path as osp
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

import torch  # noqa: E402

from mmvision_ssm.benchmark import measure  # noqa: E402


def parse_case(text):
    """'MODE:BATCH:HxW[:graph]' -> (mode, batch, (h, w), graph)."""
    try:
        mode, batch, hw, *rest = text.split(':')
        h, w = (int(v) for v in hw.lower().split('x'))
        if mode not in ('infer', 'train') or rest not in ([], ['graph']):
            raise ValueError
        return mode, int(batch), (h, w), bool(rest)
    except ValueError:
        raise SystemExit(f'--case {text!r}: expected MODE:BATCH:HxW or MODE:BATCH:HxW:graph, '
                         'e.g. train:64:224x224')


def case_name(mode, batch, hw, graph):
    return f'{mode} b{batch} {hw[0]}x{hw[1]}' + (' graph' if graph else '')


def summarise(rows, specs, cases):
    lines = ['| case | model | img/s (median of rounds) | latency median ms | peak GiB | '
             'vs first |', '| --- | --- | --- | --- | --- | --- |']
    summary = []
    for mode, batch, hw, graph in cases:
        ref = None
        name = case_name(mode, batch, hw, graph)
        for spec in specs:
            rs = [r for r in rows if r['model'] == spec and r['case'] == name
                  and 'img_per_s' in r]
            if not rs:
                continue
            ips = statistics.median(r['img_per_s'] for r in rs)
            lat = statistics.median(r['latency_ms'] for r in rs)
            mem = max(r['peak_mem_gib'] for r in rs)
            ref = ref or ips
            summary.append(dict(case=name, model=spec,
                                img_per_s=ips, latency_ms=lat, peak_mem_gib=mem,
                                ratio=ips / ref, rounds=len(rs)))
            lines.append(f'| {name} | {spec} | {ips:.1f} | {lat:.2f} | '
                         f'{mem:.2f} | {ips / ref:.3f}x |')
    return '\n'.join(lines), summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', required=True)
    p.add_argument('--case', action='append', required=True, help='MODE:BATCH:HxW (repeatable)')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--dtype', default='bf16', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--drop-path', type=float, help="stochastic-depth rate of ours and timm's models")
    p.add_argument('--trace', action='store_true',
                   help='record every iteration: GPU and host ms, garbage collections, '
                   'driver allocations (mmvision_ssm.benchmark.IterationTrace)')
    p.add_argument('--gc', choices=['on', 'frozen'], default='on',
                   help="'frozen': gc.freeze() after the models are built, so collections "
                   'skip the objects that exist then (model, library modules)')
    p.add_argument('--out')
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('compare_backbones.py needs a CUDA device')
    cases = [parse_case(c) for c in args.case]
    from benchmark import build_spec  # tools/benchmark.py: the same model builders
    models = {spec: build_spec(spec, args.drop_path).cuda() for spec in args.models}
    if args.gc == 'frozen':
        gc.collect()
        gc.freeze()
    rows = []
    for rnd in range(args.rounds):
        for mode, batch, hw, graph in cases:
            for spec, model in models.items():
                try:
                    r = measure(model, batch, hw, mode=mode, dtype=args.dtype, iters=args.iters,
                                warmup=args.warmup, cuda_graph=graph, trace=args.trace)
                except Exception as err:  # noqa: BLE001  (OOM, or a model that rejects
                    # the size, e.g. timm's fixed-size ViT): recorded, the others go on
                    r = dict(mode=mode, batch=batch, shape=list(hw),
                             error=f'{type(err).__name__}: {str(err)[:200]}')
                    torch.cuda.empty_cache()
                r = {'model': spec, 'round': rnd, 'case': case_name(mode, batch, hw, graph),
                     **{k: v for k, v in r.items()
                        if isinstance(v, (int, float, str, list, dict))}}
                rows.append(r)
                print(json.dumps(r), flush=True)
                if args.out:
                    json.dump(dict(rows=rows), open(args.out, 'w'), indent=1)
    table, summary = summarise(rows, args.models, cases)
    print(table)
    if args.out:
        json.dump(dict(rows=rows, summary=summary, table=table), open(args.out, 'w'), indent=1)


if __name__ == '__main__':
    main()
