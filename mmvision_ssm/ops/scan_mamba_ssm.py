"""Adapter to mamba-ssm's CUDA ``selective_scan_fn`` (used only when that package is installed)."""


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    # mamba-ssm wants float32 A/D/delta_bias and contiguous B/C with stride 1 along l
    A = A.float()
    D = D.float() if D is not None else None
    delta_bias = delta_bias.float() if delta_bias is not None else None
    out = selective_scan_fn(u.contiguous(), delta.contiguous(), A, B.contiguous(), C.contiguous(),
                            D, None if z is None else z.contiguous(), delta_bias, delta_softplus,
                            return_last_state)
    if return_last_state:
        y, last = out
        return y.to(u.dtype), last
    return out.to(u.dtype)
