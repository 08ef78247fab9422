r"""Central difference convolution (CDC) on the sparse grid, with its cross and diagonal footprints.

.. math::
    y(p_0) = \sum_{n} w_n\, x(p_0 + u_n) \;-\; \theta\, x(p_0) \sum_{n} w_n

(``theta = 0``: the plain conv; ``theta = 1``: the pure difference ``sum_n w_n (x(p_0 + u_n) - x(p_0))``,
the central form of pixel difference convolution, PDC "cv"). Implemented as a weight transformation:
one ordinary sparse conv with ``W'`` = ``W`` with ``theta * sum_n w_n`` taken off the centre tap
(:func:`~sparseconv.nn.functional.kernels.central_difference_weight`), so it runs on the core op
with the plain conv's map and cost.

Sparse semantics, stated exactly: ``sum_n w_n`` runs over *all* taps of the footprint, including the
ones whose neighbour voxel is empty. So the layer equals dense CDC on the zero-filled grid
``x.dense()`` (an empty neighbour reads ``x = 0`` and contributes ``-theta w_n x(p_0)``), which is the
dense twin (``testing.dense_central_difference_conv3d``). It is not "differences to the active
neighbours only" (that would need ``sum`` over the active taps, a per-site quantity). In the strided
form ``x(p_0)`` is the window's centre voxel ``o s - p + (k-1)/2 d``, zero when it is empty.

Footprints (:func:`~sparseconv.nn.functional.kernels.kernel_footprint`): ``"full"`` (every tap),
``"cross"`` (centre and the axis taps: 7 of 27 for ``k = 3``), ``"diagonal"`` (centre and the space
diagonals: 9 of 27). The masked-out taps of ``weight`` are ignored (they get zero gradient).
The angular and radial PDC forms order a 2D ring of neighbours and do not fall out of this code.
"""
from __future__ import annotations

import math

import torch

from . import functional as SF
from .._validation import IntOrTriple
from ..engine.tensor import SparseTensor
from .conv import _SparseConvNd
from .functional.kernels import central_difference_weight, kernel_footprint


class CentralDifferenceConv3d(_SparseConvNd):
    """CDC with ``theta`` (module docstring); parameters exactly as :class:`SparseConv3d`
    (``weight [C_out, C_in/G, k, k, k]``, odd ``k``; ``bias`` off by default, as in CDC networks).

    Args:
        theta: weight of the central difference term, a finite number (0 = plain conv).
        footprint: ``"full"``, ``"cross"`` or ``"diagonal"``.
        submanifold: outputs at the input sites ('same' padding, stride 1; default), else the
            strided form with ``stride``/``padding`` (output sites of :class:`SparseConv3d`).

    Shape:
        - as :class:`SubMConv3d` (``submanifold=True``) or :class:`SparseConv3d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple = 3,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        groups: int = 1,
        bias: bool = False,
        theta: float = 0.7,
        footprint: str = "full",
        submanifold: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, False)
        SF.conv_map_key(self.kernel_size, self.stride, self.padding, self.dilation, submanifold, type(self).__name__)
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta):
            raise ValueError(f"theta must be a finite number, got {theta!r}")
        self.theta = float(theta)
        self.footprint = footprint
        self.submanifold = bool(submanifold)
        self.register_buffer("footprint_mask", kernel_footprint(self.kernel_size, footprint), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        """The kernel the conv runs: the footprint-masked ``weight`` with CDC's centre correction."""
        masked = self.weight * self.footprint_mask.to(self.weight.dtype)
        return central_difference_weight(masked, self.theta)

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        weight = self.effective_weight()
        if self.submanifold:
            return SF.subm_conv3d(input, weight, self.bias, self.dilation, self.groups)
        return SF.sparse_conv3d(input, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", theta={self.theta:g}"
        if self.footprint != "full":
            s += f", footprint={self.footprint!r}"
        return s + (", submanifold" if self.submanifold else "")
