"""FLOP counts of the scan ops, for complexity tools (mmengine / fvcore style op handles).

Convention (the one VMamba's ``flops_selective_scan_fn`` and mamba-ssm's reference flop count
use, so numbers compare with the papers): a real-valued selective scan costs ``9 * b * d * l * n``
FLOPs (discretisation dt*A and dt*B*u, the recurrence h = a*h + x, and the readout <h, C>, summed
per state element and token), ``+ b*d*l`` for the skip term ``D * u`` and ``+ b*d*l`` for the gate
``y * silu(z)``.
The softplus of delta and its bias are not counted (as in mamba-ssm).
"""


def selective_scan_flops(b, d, l, n, with_D=True, with_z=False):  # noqa: E741
    """FLOPs of ``selective_scan`` on u (b, d, l) with state size n (see the module docstring)."""
    flops = 9 * b * d * l * n
    if with_D:
        flops += b * d * l
    if with_z:
        flops += b * d * l
    return flops


def cross_selective_scan_flops(b, d, h, w, n, with_D=True):
    """FLOPs of ``cross_selective_scan``: four directional scans of d channels over h*w tokens.

    Cross-scan/merge are data movement except the merge's 3 additions per output element.
    """
    return selective_scan_flops(b, 4 * d, h * w, n, with_D=with_D) + 3 * b * d * h * w


def selective_scan_flop_handle(inputs, outputs=None):
    """fvcore/mmengine jit handle for the scan: ``inputs`` are the op's inputs (tensors or objects
    with ``.type().sizes()`` as jit values give) in ``selective_scan`` order (u, delta, A, B, C,
    D, z, ...); returns the FLOP count as an int."""
    def shape(v):
        if v is None:
            return None
        if hasattr(v, 'shape'):
            return tuple(v.shape)
        try:
            return tuple(v.type().sizes())
        except Exception:  # a jit None / non-tensor constant
            return None

    shapes = [shape(v) for v in inputs]
    b, d, l = shapes[0]  # noqa: E741
    n = shapes[2][1]
    with_D = len(shapes) > 5 and shapes[5] is not None
    with_z = len(shapes) > 6 and shapes[6] is not None
    return selective_scan_flops(b, d, l, n, with_D=with_D, with_z=with_z)
