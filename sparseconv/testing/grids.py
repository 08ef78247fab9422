"""Grids for the dense twins: seeded random sparse inputs, occupancy and reach masks, 'same'
convolution and conv-geometry helpers shared by every twin in :mod:`sparseconv.testing`."""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..engine.tensor import SparseTensor

DenseFn = Callable[[torch.Tensor], torch.Tensor]


def random_sparse_tensor(
    spatial_shape: Sequence[int] = (8, 8, 8),
    channels: int = 4,
    batch_size: int = 2,
    density: float = 0.15,
    empty_batches: Sequence[int] = (),
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> SparseTensor:
    """A seeded random SparseTensor: each site active with probability ``density``
    (batch entries listed in ``empty_batches`` stay empty), standard-normal features."""
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand((batch_size, *spatial_shape), generator=gen) < density
    for b in empty_batches:
        active[b] = False
    coords = active.nonzero()
    feats = torch.randn(coords.shape[0], channels, generator=gen, dtype=dtype)
    return SparseTensor(feats, coords, tuple(spatial_shape), batch_size)


def _occupancy(x: SparseTensor) -> torch.Tensor:
    occ = torch.zeros((x.batch_size, 1, *x.spatial_shape), dtype=torch.float64, device=x.device)
    c = x.coords
    occ[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = 1.0
    return occ


def _reach(occ: torch.Tensor, kernel_size, stride, padding, dilation, transposed=False, output_padding=0):
    """Sites a kernel reaches from occupied inputs: the dense conv of the occupancy with ones."""
    ones = torch.ones((1, 1, *kernel_size), dtype=occ.dtype, device=occ.device)
    if transposed:
        hit = F.conv_transpose3d(occ, ones, None, stride, padding, output_padding, 1, dilation)
    else:
        hit = F.conv3d(occ, ones, None, stride, padding, dilation)
    return hit[:, 0] > 0.5


def _inverse_output_padding(module, coarse_shape, fine_shape) -> Tuple[int, ...]:
    return tuple(
        n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)
        for n, m, s, p, d, k in zip(
            fine_shape, coarse_shape, module.stride, module.padding, module.dilation, module.kernel_size
        )
    )


def dense_same_conv3d(d: torch.Tensor, weight: torch.Tensor, bias=None, dilation=(1, 1, 1), groups: int = 1):
    """``F.conv3d(d, weight, bias, padding='same', dilation, groups)``, padding explicitly (low side
    ``dil (k-1) // 2``, the rest high, as PyTorch) so even kernels do not trigger PyTorch's warning
    about an internal padded copy."""
    pads = []
    for k, dil in reversed(list(zip(weight.shape[2:], dilation))):
        total = dil * (k - 1)
        pads += [total // 2, total - total // 2]
    return F.conv3d(F.pad(d, pads), weight, bias, 1, 0, dilation, groups)


def _same_conv3d(d: torch.Tensor, m) -> torch.Tensor:
    """:func:`dense_same_conv3d` with a conv module's weight, bias, dilation and groups."""
    return dense_same_conv3d(d, m.weight, m.bias, m.dilation, m.groups)


def _dense_geometry(spatial_shape, kernel_size, stride, padding, dilation):
    """``(output grid, low-side padding)`` of a dense conv; ``padding='same'`` needs stride 1."""
    kernel3 = _triple_of(kernel_size)
    stride3, dilation3 = _triple_of(stride), _triple_of(dilation)
    if isinstance(padding, str):
        if padding != "same" or stride3 != (1, 1, 1):
            raise ValueError(f"padding must be 'same' (with stride 1) or ints, got {padding!r} with stride {stride3}")
        low = tuple(d * (k - 1) // 2 for k, d in zip(kernel3, dilation3))
        return tuple(spatial_shape), low
    padding3 = _triple_of(padding)
    out = tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(spatial_shape, kernel3, stride3, padding3, dilation3)
    )
    return out, padding3


def _triple_of(value) -> Tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def sites_to_dense(values: torch.Tensor, coords: torch.Tensor, batch_size: int, spatial_shape) -> torch.Tensor:
    """Per-site rows ``[N, D]`` placed on a dense ``[B, D, X, Y, Z]`` grid (zero elsewhere)."""
    out = values.new_zeros(batch_size, *spatial_shape, values.shape[1])
    out = out.index_put((coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]), values)
    return out.permute(0, 4, 1, 2, 3)


