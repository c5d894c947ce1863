"""The fused cross scan as ``torch.library`` custom ops, which is how it enters a
``torch.compile`` graph: one opaque node with a fake (shape-only) implementation and a
registered backward, so Dynamo neither traces into the Triton launches (Inductor failed on
them) nor breaks the graph around them (breaks made compiled VMamba slower than eager:
docs/benchmarks.md, run P). Eager mode keeps the plain autograd Function in
:mod:`.scan_triton` (a custom op's dispatch costs host time on every call).

Custom ops return tensors only: an absent D / delta_bias gets an empty gradient here and
``None`` in the autograd formula.
"""
from typing import Optional

import torch
from torch import Tensor

from .scan_triton import cross_backward, cross_forward, cross_states_shape


@torch.library.custom_op('mmvision_ssm::cross_scan_fwd', mutates_args=())
def cross_scan_fwd(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                   delta_bias: Optional[Tensor], delta_softplus: bool,
                   channels_last: bool) -> tuple[Tensor, Tensor]:
    return cross_forward(x.contiguous(), delta.contiguous(), A, B.contiguous(), C.contiguous(),
                         D, delta_bias, delta_softplus, channels_last)


@cross_scan_fwd.register_fake
def _(x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last):
    shape = cross_states_shape(x, delta, A, B, C, channels_last)
    return torch.empty_like(x), x.new_empty(shape, dtype=torch.float32)


@torch.library.custom_op('mmvision_ssm::cross_scan_bwd', mutates_args=())
def cross_scan_bwd(gy: Tensor, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Optional[Tensor], delta_bias: Optional[Tensor], states: Tensor,
                   delta_softplus: bool, channels_last: bool
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = cross_backward(gy.contiguous(), x.contiguous(), delta.contiguous(), A,
                           B.contiguous(), C.contiguous(), D, delta_bias, states,
                           delta_softplus, channels_last)
    # a custom op's outputs may not alias each other: the backward returns views of shared
    # buffers (gB / gC, the parameter gradients), so each storage after its first is copied
    out, storages = [], set()
    for g in grads:
        if g is None:
            out.append(x.new_empty(0))
            continue
        ptr = g.untyped_storage().data_ptr()
        out.append(g.clone() if ptr in storages else g)
        storages.add(ptr)
    return tuple(out)


@cross_scan_bwd.register_fake
def _(gy, x, delta, A, B, C, D, delta_bias, states, delta_softplus, channels_last):
    return tuple(torch.empty_like(t) if t is not None else x.new_empty(0)
                 for t in (x, delta, A, B, C, D, delta_bias))


def _setup_context(ctx, inputs, output):
    x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last = inputs
    ctx.save_for_backward(x, delta, A, B, C, D, delta_bias, output[1])
    ctx.meta = (delta_softplus, channels_last, D is not None, delta_bias is not None)


def _backward(ctx, gy, _gstates):
    x, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
    softplus, channels_last, has_d, has_bias = ctx.meta
    gx, gdelta, gA, gB, gC, gD, gbias = cross_scan_bwd(
        gy, x, delta, A, B, C, D, delta_bias, states, softplus, channels_last)
    return (gx, gdelta, gA, gB, gC, gD if has_d else None, gbias if has_bias else None,
            None, None)


cross_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def cross_selective_scan_op(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                            channels_last=False):
    """:func:`mmvision_ssm.ops.cross_selective_scan` (Triton) through the custom op."""
    return cross_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, channels_last)[0]
