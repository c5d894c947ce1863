"""CUDA-graphed training and inference of a backbone (``cuda_graph=True``).

Eager training steps of these backbones are host-bound on slow CPUs: issuing a VMamba-T step
at 224^2 b64 took about twice its GPU time on the device machines (docs/benchmarks.md, runs
X1 and AH). ``torch.cuda.make_graphed_callables`` captures the backbone's forward and its
backward once per input signature and replays them as two graph launches per step; the rest of
the model (neck, heads, losses) stays eager. Same kernels, same numerics.

What the caller accepts with it:

* the outputs live in the graph's static buffers: the next training step overwrites them, so
  nothing may keep them across steps or modify them in place (the detectors and segmentors
  here only read them within the step);
* parameters must stay where they are: moving them (``.to()``), replacing them or changing
  which ones require grad drops the captured graphs (checked every step);
* each new input signature (shape, dtype, autocast dtype) costs a capture -- three warm-up
  passes, which also update BatchNorm statistics and draw random numbers -- and memory for the
  graph's private pool; after ``MAX_GRAPHS`` signatures further ones run eagerly (a fixed
  training size, as UperNet's crops or classification, graphs once);
* under ``DistributedDataParallel`` (``tools/dist_train.sh``) the graphed backward hands
  every backbone gradient to autograd at once, when its graph has replayed: the buckets of
  the backbone are all-reduced after it rather than overlapping it (the heads' still overlap).
  The capture's warm-up passes take gradients with ``torch.autograd.grad``, which leaves the
  wrapper's hooks alone (tests/test_cuda_graph_ddp.py: graphed DDP steps equal eager ones
  and the ranks stay identical). Wrappers that move or shard parameters (FSDP) would force
  a new capture every step.

Inference (no autograd recorded, any train/eval mode) replays a graph of the forward alone
(``torch.cuda.graph``), per input signature as above and in a cache of its own: at detection
sizes and small batches an eager forward is host-bound (VMamba-T at 1344x800 b2: 22 ms per
step for 7 ms of GPU work, run AU). Its outputs are copied out of the graph's buffers, so the
caller owns them (inference code keeps features across calls; the copies move the bytes of
the output maps once more, which run AO put at ~3 % of VMamba-T's GPU time at 224^2 b128).
Allowed under ``torch.distributed`` (no gradients are involved).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

#: input signatures graphed per backbone; further ones run eagerly (each holds its own memory)
MAX_GRAPHS = 4
#: a graphed backbone's LayerNorms (``models.layers.LayerNorm`` without a threshold of their
#: own) run the Triton kernels with autograd from this many elements. The eager default
#: (``ops.layer_norm.MIN_TRITON_NUMEL_GRAD``) is high because the kernels' Python costs more
#: host time than ATen's norm, and eager steps are host-bound on slow CPUs; replayed graphs
#: have no host cost, and the kernels take less GPU time (VMamba-T's graphed step +13.8 % with
#: them from 1 M elements, run AF)
GRAPHED_LN_MIN_TRITON_NUMEL_GRAD = 1 << 20


class _EagerForward(nn.Module):
    """The backbone's eager forward as a module of its own, for ``functional_call`` (which
    calls a module, and the backbone's own forward would take the graphs)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.forward_eager(x)


class BackboneGraphs:
    """Per-signature graphs of one backbone (see the module docstring); the subclasses say
    what is captured. Not copied or pickled with the model: a deep copy (EMA, checkpoint)
    starts without graphs."""

    def __init__(self, max_graphs: int = MAX_GRAPHS):
        self.max_graphs = max_graphs
        self.graphs: dict = {}
        self._warned = False

    def __deepcopy__(self, memo):
        return type(self)(self.max_graphs)

    def __getstate__(self):
        return {'max_graphs': self.max_graphs}

    def __setstate__(self, state):
        self.__init__(state['max_graphs'])

    def _capture(self, backbone: nn.Module, x: torch.Tensor, amp: bool):
        """A callable x -> outputs replaying a graph captured for x's signature."""
        raise NotImplementedError

    def __call__(self, backbone: nn.Module, x: torch.Tensor):
        """The outputs of ``backbone``'s forward through its graph, or None where the step
        should run eagerly (too many signatures)."""
        params = tuple((p.data_ptr(), p.requires_grad) for p in backbone.parameters())
        amp = torch.is_autocast_enabled('cuda')
        key = (tuple(x.shape), x.dtype, x.device, x.requires_grad, amp,
               torch.get_autocast_dtype('cuda') if amp else None,
               torch.is_inference_mode_enabled())
        entry = self.graphs.get(key)
        if entry is not None and entry[0] != params:
            self.graphs.clear()  # parameters moved or were frozen: every graph is stale
            entry = None
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                if not self._warned:
                    warnings.warn(f'{type(backbone).__name__}: cuda_graph=True has graphed '
                                  f'{self.max_graphs} input signatures; new ones (here '
                                  f'{tuple(x.shape)}) run eagerly')
                    self._warned = True
                return None
            entry = (params, self._capture(backbone, x, amp))
            self.graphs[key] = entry
        return entry[1](x)


class TrainingGraphs(BackboneGraphs):
    """The training forward+backward (``make_graphed_callables``)."""

    def _capture(self, backbone: nn.Module, x: torch.Tensor, amp: bool):
        return _capture_training(backbone, x, amp)


class InferenceGraphs(BackboneGraphs):
    """The no-grad forward (``torch.cuda.graph``); no gradients, so nothing a distributed
    wrapper would have to see: allowed in any process."""

    def _capture(self, backbone: nn.Module, x: torch.Tensor, amp: bool):
        return _capture_inference(backbone, x, amp)


def _capture_autocast(amp: bool):
    """The caller's autocast state for a capture, without autocast's cast cache: the cache
    would hand the capture weight copies freed when the caller's autocast region ends
    (``make_graphed_callables`` requires it off)."""
    return torch.autocast('cuda', dtype=torch.get_autocast_dtype('cuda'), enabled=amp,
                          cache_enabled=False)


def _capture_inference(backbone: nn.Module, x: torch.Tensor, amp: bool):
    static_x = x.clone()
    with _capture_autocast(amp):
        side = torch.cuda.Stream()  # warm-up off the capturing stream, as capture requires
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles/tunes kernels and settles the allocator
                backbone.forward_eager(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = backbone.forward_eager(static_x)

    def replay(x):
        static_x.copy_(x)
        graph.replay()
        return tuple(o.clone() for o in static_out)
    return replay


def _capture_training(backbone: nn.Module, x: torch.Tensor, amp: bool):
    trainable = [(f'backbone.{n}', p) for n, p in backbone.named_parameters() if p.requires_grad]
    names = tuple(n for n, _ in trainable)
    params = tuple(p for _, p in trainable)
    # The capture runs on detached aliases of the parameters (same storage), so its autograd
    # graph ends in gradient accumulators of its own: DistributedDataParallel holds the
    # parameters' accumulators, made on the default stream, and autograd would make the
    # capture wait on that stream (an error while capturing). The replays take the real
    # parameters as inputs -- at the aliases' addresses, so nothing is copied -- and their
    # gradients reach the parameters' accumulators and the wrapper's hooks as usual.
    aliases = tuple(p.detach().requires_grad_() for p in params)
    module = _EagerForward(backbone)

    def forward(inp, *weights):
        return torch.func.functional_call(module, dict(zip(names, weights)), (inp,))

    with _capture_autocast(amp):
        graphed = torch.cuda.make_graphed_callables(forward, (x, *aliases),
                                                    allow_unused_input=True)
    return lambda inp: graphed(inp, *params)
