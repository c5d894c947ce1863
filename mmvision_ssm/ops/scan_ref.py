"""Sequential reference selective scan: the oracle every other backend is tested against.

One Python step per token, autograd through plain ops, any floating dtype (float64 for tests).
Semantics follow mamba-ssm's ``selective_scan_ref``:

    dt = softplus(delta + delta_bias)          (bias/softplus optional)
    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t       h: (b, d, n), h_{-1} = 0
    y_t = <h_t, C_t> + D * u_t ;  y *= silu(z)              (D/z optional)
"""
import torch
import torch.nn.functional as F

from .common import as_grouped, check_scan_inputs, compute_dtype


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    b, d, l, n, g = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = compute_dtype(dtype_in)
    dt = delta.to(ct)
    if delta_bias is not None:
        dt = dt + delta_bias.to(ct)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uc = u.to(ct)
    # channel block i*(d//g) ... (i+1)*(d//g) - 1 reads group i (mamba-ssm's convention)
    Bx = as_grouped(B, 'B').to(ct).repeat_interleave(d // g, dim=1)  # (b, d, n, l)
    Cx = as_grouped(C, 'C').to(ct).repeat_interleave(d // g, dim=1)
    dA = torch.exp(dt.unsqueeze(2) * A.to(ct).unsqueeze(-1))  # (b, d, n, l)
    dBu = (dt * uc).unsqueeze(2) * Bx                          # (b, d, n, l)
    h = uc.new_zeros(b, d, n)
    ys = []
    # unbind (not indexing) so that the backward does not build a full-size zero tensor per step
    for dA_t, dBu_t, C_t in zip(dA.unbind(-1), dBu.unbind(-1), Cx.unbind(-1)):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1) if l else uc.new_zeros(b, d, 0)
    if D is not None:
        y = y + D.to(ct)[:, None] * uc
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
