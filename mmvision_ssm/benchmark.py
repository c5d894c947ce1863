"""Throughput, latency and peak-memory measurement for backbones and whole models.

Plain PyTorch (no OpenMMLab import), so it runs where only torch (+ timm) is installed:

    from mmvision_ssm.benchmark import measure, fit_exponent
    res = measure(model, batch=64, shape=(224, 224), mode='train', dtype='bf16')

Timing (DESIGN.md "Speed"): warm-up iterations first (Triton/compile/cuDNN autotune stay out of
the numbers), then ``iters`` timed iterations; on CUDA each iteration is bracketed by CUDA events
recorded on the stream (no host synchronisation between iterations), on the CPU by
``time.perf_counter``. Reported: throughput = batch x iterations / total time of the timed
iterations, latency median and p90 of the per-iteration times, and peak memory
(``torch.cuda.max_memory_allocated`` after a reset, so it includes weights, gradients and
optimizer state; ``None`` on the CPU).

A training iteration is forward under autocast, ``loss = sum(out.float().mean())`` over the
outputs, backward, SGD(momentum) step, ``zero_grad(set_to_none=True)``.

``trace=True`` adds every iteration's GPU and host time, the garbage collections and the
driver allocations during the timed iterations (:class:`IterationTrace`): when the host time
of an iteration is close to its GPU time, the step is host-bound (docs/benchmarks.md, run AA).

``cuda_graph=True`` (CUDA only) captures one whole iteration in a CUDA graph after the warm-up
and times its replays: the same kernels on the same static tensors, with no Python, dispatch or
launch work on the host. The device machines' host CPUs are slow enough that eager training
steps of these backbones are host-bound (docs/benchmarks.md, run X1), which makes eager ratios
measure the host; graph replays measure the GPU work of each implementation alike.
"""
from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from typing import Callable, Sequence

import torch

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _tensors(out):
    """Every tensor in a (nested) model output: tuple/list/dict of maps, or one tensor."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def default_loss(out) -> torch.Tensor:
    """A scalar that depends on every output element (mean per output, summed)."""
    ts = [t for t in _tensors(out) if t.is_floating_point()]
    if not ts:
        raise ValueError(f'model output has no floating-point tensor: {type(out)}')
    return sum(t.float().mean() for t in ts)


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class IterationTrace:
    """What happened during timed iterations, to tell slow steps apart (``measure(trace=True)``).

    Per iteration: the host time to issue it (``host_ms``; when it is close to the GPU time the
    step is host-bound) and the Python garbage collections that ran inside it (``gc``: iteration,
    generation, ms). Over all iterations: CUDA allocator calls into the driver
    (``device_allocs``/``device_frees``: ``cudaMalloc``/``cudaFree`` synchronise and stall the
    queue) and allocation retries (``alloc_retries``: the cache was flushed to fit a request).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.host_ms: list[float] = []
        self.gc: list[tuple[int, int, float]] = []
        self._gc_start = None

    def _on_gc(self, phase, info):
        if phase == 'start':
            self._gc_start = time.perf_counter()
        elif self._gc_start is not None:
            self.gc.append((len(self.host_ms), info['generation'],
                            (time.perf_counter() - self._gc_start) * 1e3))
            self._gc_start = None

    def _allocator(self) -> dict:
        if self.device.type != 'cuda':
            return {}
        stats = torch.cuda.memory_stats(self.device)
        return dict(device_allocs=stats.get('num_device_alloc', 0),
                    device_frees=stats.get('num_device_free', 0),
                    alloc_retries=stats.get('num_alloc_retries', 0))

    def __enter__(self):
        self._before = self._allocator()
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._on_gc)
        after = self._allocator()
        self.allocator = {k: after[k] - self._before[k] for k in after}

    def summary(self) -> dict:
        return dict(host_ms=[round(t, 3) for t in self.host_ms],
                    gc=[(i, g, round(ms, 3)) for i, g, ms in self.gc],
                    gc_ms=round(sum(ms for _, _, ms in self.gc), 3), **self.allocator)


def time_iterations(step: Callable[[], None], iters: int, warmup: int,
                    device: torch.device,
                    trace: IterationTrace | None = None) -> tuple[list[float], float]:
    """(seconds per call, total seconds) of ``iters`` timed calls after ``warmup`` untimed ones.

    The total runs from the first call's start to the last call's end (launch gaps included).
    ``trace`` (entered around the timed calls) records each call's host time and collections."""
    for _ in range(warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    with trace or contextlib.nullcontext():
        if device.type == 'cuda':
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(iters)]
            for start, end in events:
                t0 = time.perf_counter()
                start.record()
                step()
                end.record()
                if trace is not None:
                    trace.host_ms.append((time.perf_counter() - t0) * 1e3)
            torch.cuda.synchronize(device)
            return ([s.elapsed_time(e) / 1e3 for s, e in events],
                    events[0][0].elapsed_time(events[-1][1]) / 1e3)
        times = []
        t_start = time.perf_counter()
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            if trace is not None:
                trace.host_ms.append(times[-1] * 1e3)
        return times, time.perf_counter() - t_start


def graph_replay(step: Callable[[], None], device: torch.device,
                 warmup: int = 3) -> Callable[[], None]:
    """``step`` captured in a CUDA graph; returns the graph's ``replay``.

    Capture needs warm-up calls on a side stream first (lazy allocations such as optimizer
    buffers, cuBLAS workspaces and Triton compiles must not happen inside the capture), as in
    PyTorch's whole-network capture recipe. Random numbers (dropout, drop path) are redrawn on
    every replay through the graph-safe CUDA generator."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def make_step(model: torch.nn.Module, batch: int, shape: Sequence[int], mode: str, dtype: str,
              device: torch.device, loss_fn: Callable = default_loss,
              make_input: Callable | None = None, in_channels: int = 3,
              lr: float = 1e-4) -> tuple[Callable[[], None], object]:
    """(step, optimizer): one inference or training iteration of ``model`` on a fixed random
    batch (see :func:`measure` for the arguments); the optimizer is None for inference."""
    model = model.to(device)
    amp = DTYPES[dtype] != torch.float32
    gen = torch.Generator(device='cpu').manual_seed(0)
    if make_input is None:
        args = (torch.randn(batch, in_channels, *shape, generator=gen).to(device),)
    else:
        args = tuple(make_input(batch, tuple(shape), device))

    def forward():
        with torch.autocast(device.type, dtype=DTYPES[dtype], enabled=amp):
            return model(*args)

    if mode == 'infer':
        model.eval()

        def step():
            with torch.no_grad():
                forward()
        return step, None
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9)

    def train_step():
        loss = loss_fn(forward())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return train_step, opt


def measure(model: torch.nn.Module, batch: int, shape: Sequence[int], mode: str = 'infer',
            dtype: str = 'fp32', iters: int = 20, warmup: int = 5, device=None,
            loss_fn: Callable = default_loss, make_input: Callable | None = None,
            in_channels: int = 3, lr: float = 1e-4, cuda_graph: bool = False,
            trace: bool = False) -> dict:
    """Time ``model`` on random input (batch, in_channels, *shape).

    Args:
        mode: 'infer' (eval(), no_grad) or 'train' (train(), forward+backward+SGD step).
        dtype: 'fp32' (no autocast) | 'bf16' | 'fp16' (autocast; weights stay fp32).
        make_input: optional ``fn(batch, shape, device) -> args tuple`` for models that do not
            take one image tensor (e.g. a whole detector); default a normal random image batch.
        loss_fn: maps the model output to a scalar for training.
        cuda_graph: time replays of one captured iteration (see the module docstring); the
            peak memory then includes the graph's private pool and the eager warm-up.
        trace: also return ``latencies_ms`` (every timed iteration) and ``trace``
            (:class:`IterationTrace`: host time per iteration, garbage collections, driver
            allocations), to tell what made a slow iteration slow.

    Returns a dict: mode, dtype, batch, shape, iters, warmup, device, img_per_s, latency_ms
    (median), latency_p90_ms, peak_mem_gib (None on the CPU), params_m, cuda_graph.
    """
    if mode not in ('infer', 'train'):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
    if iters < 1 or warmup < 0:
        raise ValueError('iters must be >= 1 and warmup >= 0')
    device = torch.device(device if device is not None else
                          ('cuda' if torch.cuda.is_available() else 'cpu'))
    if cuda_graph and device.type != 'cuda':
        raise ValueError(f'cuda_graph=True needs a CUDA device, got device={device}')
    step, opt = make_step(model, batch, shape, mode, dtype, device, loss_fn=loss_fn,
                          make_input=make_input, in_channels=in_channels, lr=lr)

    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if cuda_graph:
        step = graph_replay(step, device, warmup=max(warmup, 1))
    tracer = IterationTrace(device) if trace else None
    times, total = time_iterations(step, iters, warmup, device, tracer)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else None)
    del opt
    extra = {} if tracer is None else dict(
        latencies_ms=[round(t * 1e3, 3) for t in times], trace=tracer.summary())
    return extra | dict(
        mode=mode, dtype=dtype, batch=batch, shape=list(shape), iters=iters, warmup=warmup,
        device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
        img_per_s=batch * len(times) / total,
        latency_ms=statistics.median(times) * 1e3,
        latency_p90_ms=_percentile(times, 90) * 1e3,
        peak_mem_gib=peak,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        cuda_graph=cuda_graph,
    )


def fit_exponent(pixels: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of log(time) = k * log(pixels) + c; returns (k, c).

    k is the scaling exponent in the pixel count: 1.0 = linear (an SSM / linear attention /
    convolution), 2.0 = quadratic (global self-attention at large sizes).
    """
    pts = [(math.log(p), math.log(t)) for p, t in zip(pixels, times)
           if p is not None and t is not None and p > 0 and t > 0]
    if len(pts) < 2:
        raise ValueError(f'need at least 2 positive (pixels, time) points, got {len(pts)}')
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        raise ValueError('all pixel counts are equal: the exponent is undefined')
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return k, my - k * mx


def sweep_resolution(model: torch.nn.Module, sizes: Sequence[int], dtype: str = 'bf16',
                     batch: int = 1, iters: int = 20, warmup: int = 3, device=None,
                     fit_min: int = 512, on_result: Callable | None = None) -> dict:
    """Inference time and peak memory at square inputs ``sizes``, and the fitted exponent.

    The exponent is fitted over the sizes >= ``fit_min`` (small inputs at batch 1 are bound by
    kernel-launch latency, not by the pixel count). A size that runs out of memory is recorded
    with ``error`` and left out of the fit.
    """
    points = []
    for s in sizes:
        try:
            r = measure(model, batch, (s, s), mode='infer', dtype=dtype, iters=iters,
                        warmup=warmup, device=device)
        except torch.OutOfMemoryError as err:
            r = dict(shape=[s, s], error=f'OutOfMemoryError: {str(err).splitlines()[0]}')
            torch.cuda.empty_cache()
        r['size'], r['pixels'] = s, s * s
        points.append(r)
        if on_result is not None:
            on_result(r)
    fit_pts = [(p['pixels'], p['latency_ms']) for p in points
               if 'latency_ms' in p and p['size'] >= fit_min]
    exponent = None
    if len(fit_pts) >= 2:
        exponent = fit_exponent(*zip(*fit_pts))[0]
    return dict(points=points, exponent=exponent, fit_min=fit_min, dtype=dtype, batch=batch)


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of measure() results (with an optional 'name' key)."""
    head = ('| model | mode | dtype | batch | shape | img/s | median ms | p90 ms | peak GiB |\n'
            '| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    lines = [head]
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r.get('name', '')} | {r.get('mode', '')} | {r.get('dtype', '')} | "
                         f"{r.get('batch', '')} | {r.get('shape', '')} | error: "
                         f"{r['error'][:80]} | | | |")
            continue
        mem = '-' if r['peak_mem_gib'] is None else f"{r['peak_mem_gib']:.2f}"
        lines.append(f"| {r.get('name', '')} | {r['mode']} | {r['dtype']} | {r['batch']} | "
                     f"{r['shape'][0]}x{r['shape'][1]} | {r['img_per_s']:.1f} | "
                     f"{r['latency_ms']:.2f} | {r['latency_p90_ms']:.2f} | {mem} |")
    return '\n'.join(lines)
