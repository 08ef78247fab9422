"""Involution on the sparse grid: a kernel generated per site from the site's own features.

    H[o] = span(relu(reduce(x[o])))  reshaped  [G, K]
    y[o, c] = sum_t H[o, g(c), t] x[o - l + t d, c]      over the active neighbours

(Li et al., 2021, in 3D; ``reduce``: ``C -> C / r``, ``span``: ``C / r -> G K``, both ``nn.Linear``
on the features; ``l = d (k-1) // 2`` as a submanifold conv.) The kernel is shared by the ``C / G``
channels of a group and differs from site to site, so it is not a convolution weight: it is carried
by the core op's pair weights, one core call per group on the submanifold kernel map
(:func:`~sparseconv.nn.functional.involution.sparse_involution3d` says how). Submanifold only
(the paper's strided form pools the kernel generator's input; not offered).
"""
from __future__ import annotations

from torch import nn

from .._validation import IntOrTriple, positive_int
from ..engine.tensor import SparseTensor
from .conv import _ConvGeometry
from .functional.involution import sparse_involution3d


class Involution3d(_ConvGeometry):
    """Sparse 3D involution over ``channels`` channels (output channels = input channels).

    Args:
        channels: C; ``groups`` must divide it.
        kernel_size, dilation: the neighbourhood (a submanifold map).
        groups: G, channel groups sharing one per-site kernel.
        reduction: the generator's bottleneck ratio r (hidden width ``max(C // r, 1)``).

    Children ``reduce`` and ``span`` (``nn.Linear``); ``span`` outputs ``G * K`` (taps row-major).

    Shape:
        - Input ``[N, channels]``; output ``[N, channels]`` on the same sites.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: IntOrTriple = 3,
        groups: int = 1,
        reduction: int = 4,
        dilation: IntOrTriple = 1,
    ):
        super().__init__(channels, channels, kernel_size, 1, 0, dilation, groups)
        hidden = max(channels // positive_int(reduction, "reduction"), 1)
        self.reduction = reduction
        self.kernel_volume = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        self.reduce = nn.Linear(channels, hidden)
        self.span = nn.Linear(hidden, groups * self.kernel_volume)

    def kernels(self, input: SparseTensor):
        """Per-site kernels ``[N, G, K]`` generated from the input's features."""
        hidden = nn.functional.relu(self.reduce(input.feats))
        return self.span(hidden).view(len(input), self.groups, self.kernel_volume)

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        return sparse_involution3d(input, self.kernels(input), self.kernel_size, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
                f"reduction={self.reduction}" + (f", dilation={self.dilation}" if self.dilation != (1, 1, 1) else ""))
