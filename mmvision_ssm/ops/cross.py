"""VMamba's four scan directions over a 2-D map, in plain PyTorch (autograd through views).

Direction k of an (h, w) map visits the pixels in the order
  0: row-major (l = i*w + j),  1: column-major (l = j*h + i),  2: reverse of 0,  3: reverse of 1.
``cross_scan`` and ``cross_merge`` are adjoint linear maps:
<cross_scan(x), y> == <x, cross_merge(y)>.
"""
import torch


def _to_channels_first(x, channels_last):
    return x.permute(0, 3, 1, 2) if channels_last else x


def cross_scan(x, channels_last=False):
    """(b, c, h, w) -- or (b, h, w, c) with ``channels_last`` -- to (b, 4, c, h*w)."""
    if x.dim() != 4:
        raise ValueError(f'cross_scan expects a 4-D map, got shape {tuple(x.shape)}')
    x = _to_channels_first(x, channels_last)
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def cross_merge(y, h, w, channels_last=False):
    """(b, 4, c, h*w) to (b, c, h, w) -- or (b, h, w, c): the sum of the four directions, each put
    back at its pixels (the adjoint of :func:`cross_scan`)."""
    if y.dim() != 4 or y.shape[1] != 4 or y.shape[-1] != h * w:
        raise ValueError(f'cross_merge expects (b, 4, c, h*w={h * w}), got shape {tuple(y.shape)}')
    b, _, c, _ = y.shape
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    out = row.view(b, c, h, w) + col.view(b, c, w, h).transpose(2, 3)
    return out.permute(0, 2, 3, 1) if channels_last else out


def traverse(t):
    """(b, 4, c, h, w) with one map per direction to (b, 4, c, h*w): slice k in order k."""
    b, k, c, h, w = t.shape
    row = t[:, 0::2].flatten(3)                  # directions 0 and 2
    col = t[:, 1::2].transpose(3, 4).flatten(3)  # directions 1 and 3
    return torch.stack([row[:, 0], col[:, 0], row[:, 1].flip(-1), col[:, 1].flip(-1)], dim=1)


def check_cross_inputs(x, delta, A, B, C, D, delta_bias, channels_last):
    """Shapes of :func:`mmvision_ssm.ops.cross_selective_scan`; returns (b, d, h, w, n)."""
    if x.dim() != 4:
        raise ValueError(f'x must be a 4-D map, got shape {tuple(x.shape)}')
    if channels_last:
        b, h, w, d = x.shape
        want_delta, want_bc = (b, h, w, 4, d), lambda n: (b, h, w, 4, n)
    else:
        b, d, h, w = x.shape
        want_delta, want_bc = (b, 4, d, h, w), lambda n: (b, 4, n, h, w)
    if A.dim() != 2 or A.shape[0] != 4 * d:
        raise ValueError(f'A must be (4*d={4 * d}, n), got shape {tuple(A.shape)}')
    n = A.shape[1]
    if tuple(delta.shape) != want_delta:
        raise ValueError(f'delta must be {want_delta}, got {tuple(delta.shape)}')
    for name, t in (('B', B), ('C', C)):
        if tuple(t.shape) != want_bc(n):
            raise ValueError(f'{name} must be {want_bc(n)}, got {tuple(t.shape)}')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (4 * d,):
            raise ValueError(f'{name} must be (4*d={4 * d},), got {tuple(t.shape)}')
    return b, d, h, w, n


def cross_selective_scan_composed(scan, x, delta, A, B, C, D=None, delta_bias=None,
                                  delta_softplus=True, channels_last=False):
    """cross_scan -> selective scan with 4 B/C groups -> cross_merge (materialises 4 copies)."""
    b, d, h, w, n = check_cross_inputs(x, delta, A, B, C, D, delta_bias, channels_last)
    if channels_last:  # (b, h, w, 4, c) -> (b, 4, c, h, w)
        delta, B, C = (t.permute(0, 3, 4, 1, 2) for t in (delta, B, C))
    xs = cross_scan(x, channels_last).reshape(b, 4 * d, h * w)
    ys = scan(xs, traverse(delta).reshape(b, 4 * d, h * w), A, traverse(B), traverse(C), D=D,
              delta_bias=delta_bias, delta_softplus=delta_softplus)
    return cross_merge(ys.view(b, 4, d, h * w), h, w, channels_last)
