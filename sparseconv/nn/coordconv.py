"""CoordConv on the sparse grid: each voxel's coordinates appended as input channels, then a conv.

The appended channels (:func:`~sparseconv.nn.functional.coords.coordinate_channels`) are the voxel's
normalised grid position (per axis ``2 c / (n - 1) - 1`` in ``[-1, 1]`` over the sample's
``spatial_shape``), or with ``world=True`` its world-space centre (needs ``voxel_size`` and
``origin``), plus with ``with_radius=True`` the norm of those three. They exist at the active sites
only, like every feature: the dense twin convolves ``x.dense()`` concatenated with the coordinate
grids multiplied by the occupancy mask.
"""
from __future__ import annotations

from torch import nn

from .._validation import IntOrTriple
from ..engine.tensor import SparseTensor
from .conv import SparseConv3d, SubMConv3d, _ConvGeometry
from .functional import conv_map_key
from .functional.coords import append_coordinates


class CoordConv3d(_ConvGeometry):
    """A :class:`SubMConv3d` (or, ``submanifold=False``, a :class:`SparseConv3d`) over the input's
    features plus 3 (4 with ``with_radius``) coordinate channels.

    Child ``conv`` has ``in_channels + 3 (+1)`` input channels; the coordinate channels come last.

    Shape:
        - Input ``[N, in_channels]``; output as the child conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTriple,
        stride: IntOrTriple = 1,
        padding: IntOrTriple = 0,
        dilation: IntOrTriple = 1,
        bias: bool = True,
        world: bool = False,
        with_radius: bool = False,
        submanifold: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1)
        conv_map_key(self.kernel_size, self.stride, self.padding, self.dilation, submanifold, type(self).__name__)
        self.world = bool(world)
        self.with_radius = bool(with_radius)
        self.submanifold = bool(submanifold)
        extended = in_channels + 3 + int(self.with_radius)
        if submanifold:
            self.conv: nn.Module = SubMConv3d(extended, out_channels, kernel_size, dilation, bias=bias)
        else:
            self.conv = SparseConv3d(extended, out_channels, kernel_size, stride, padding, dilation, bias=bias)

    def forward(self, input: SparseTensor) -> SparseTensor:
        self._check_input(input)
        return self.conv(append_coordinates(input, self.world, self.with_radius))

    def extra_repr(self) -> str:
        flags = [name for name in ("world", "with_radius") if getattr(self, name)]
        return f"{self.in_channels}, {self.out_channels}" + "".join(f", {f}" for f in flags)
