"""SECOND / CenterPoint-style sparse voxel backbone with 8x downsampling and a BEV output.

The 3D backbone of voxel-based LiDAR detectors: submanifold blocks at four resolutions
joined by strided sparse convolutions, then a strided convolution along the height axis,
and finally the sparse volume is densified with :meth:`SparseTensor.dense` and its height
folded into channels, giving the bird's-eye-view (BEV) feature map a 2D detection head reads.

Axis convention: sparseconv coordinates are ``(batch, x, y, z)`` with ``z`` **up** (as the
LiDAR generators and :func:`~sparseconv.engine.voxelize.voxelize` produce them), so height is the
*last* spatial axis; every height-specific kernel, stride and padding below acts on it.
(OpenPCDet orders its grids ``(z, y, x)``; its ``(3, 1, 1)`` kernel is our ``(1, 1, 3)``.)

BEV order: by default the map is ``[B, C * D, X', Y']`` (x rows, y columns: the order of
sparseconv's coordinates). OpenPCDet's and mmdetection3d's 2D heads read ``[B, C * D, Y', X']``
(their ``HeightCompression`` views spconv's ``dense()`` ``[N, C, D, H=Y, W=X]``); build the backbone
with ``bev_layout="yx"`` to get exactly that map, so their heads, anchors and target assigners see
the axes they expect.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Sequence, Tuple, Union

import torch
from torch import nn

from .. import nn as snn
from .._validation import number_triple
from ..engine.tensor import SparseTensor
from ..engine.voxelize import voxelize
from .blocks import NormLayer, check_channels, check_counts, down_unit, init_weights, make_blocks

#: ``bev_layout`` values: ``"xy"`` gives ``[B, C*D, X, Y]``, ``"yx"`` OpenPCDet's ``[B, C*D, Y, X]``.
BEV_LAYOUTS = ("xy", "yx")

__all__ = ["BEV_LAYOUTS", "SparseVoxelBackbone8x", "BackboneOutput", "second_backbone", "centerpoint_backbone", "voxelize_in_range"]


class BackboneOutput(NamedTuple):
    """What :class:`SparseVoxelBackbone8x` returns (unpacks as ``bev, features``).

    Attributes:
        bev: dense BEV map ``[B, C_out * D, X', Y']`` (``bev_layout="xy"``, the default) or
            ``[B, C_out * D, Y', X']`` (``bev_layout="yx"``, OpenPCDet / mmdetection3d).
        features: the sparse features of every stage: ``"conv1"`` (stride 1), ``"conv2"``
            (2), ``"conv3"`` (4), ``"conv4"`` (8) and ``"out"`` (8 in x, y; 16 in z), each a
            SparseTensor with ``voxel_size`` / ``origin`` following the strides when the input
            had them.
    """

    bev: torch.Tensor
    features: Dict[str, SparseTensor]


def _conv_out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - (k - 1) - 1) // s + 1


class SparseVoxelBackbone8x(nn.Module):
    r"""SECOND / CenterPoint 3D backbone: sparse stages at strides 1, 2, 4, 8, then BEV.

    Architecture (channels ``c = channels``, blocks ``n = num_blocks``; every conv is
    followed by a norm and ReLU; ``SubM`` blocks are plain ``SubMConv3d(k=3)`` units, or
    residual :class:`~sparseconv.models.blocks.SparseBasicBlock` pairs with ``residual=True``)::

        conv_input  SubMConv3d(C_in -> c0, k=3)                                   stride 1
        conv1       n0 SubM blocks (c0 -> c1)                                     stride 1
        conv2       SparseConv3d(c1 -> c2, k=3, s=2, p=1),       n1 SubM blocks  stride 2
        conv3       SparseConv3d(c2 -> c3, k=3, s=2, p=1),       n2 SubM blocks  stride 4
        conv4       SparseConv3d(c3 -> c4, k=3, s=2, p=(1,1,0)), n3 SubM blocks  stride 8
        conv_out    SparseConv3d(c4 -> C_out, k=(1,1,3), s=(1,1,2), p=0)          stride (8, 8, 16)
        bev         conv_out.dense() [B, C_out, X', Y', D] -> [B, C_out * D, X', Y']   (bev_layout="xy")
                                                          -> [B, C_out * D, Y', X']   (bev_layout="yx")

    With the defaults (``c = (16, 16, 32, 64, 64)``, ``n = (1, 2, 2, 2)``, ``C_out = 128``) this
    is OpenPCDet's ``VoxelBackBone8x`` (SECOND); :func:`centerpoint_backbone` gives the
    residual ``VoxelResBackBone8x`` of CenterPoint. ``conv4`` does not pad the height axis and
    ``conv_out`` strides only along it, shrinking a 41-voxel column to ``D = 2``.

    The BEV channel index is ``c * D + d`` (channel-major, height-minor), as OpenPCDet's
    ``HeightCompression``. Its two spatial axes are ``(x, y)`` by default; ``bev_layout="yx"``
    gives OpenPCDet's and mmdetection3d's ``(y, x)``, equal to ``HeightCompression`` of the same
    features in spconv's ``(z, y, x)`` index order (``tests/test_bev_layout.py`` checks it through
    :mod:`sparseconv.compat.spconv`). Each resolution builds one submanifold and one strided kernel map.

    Args:
        in_channels: input feature channels.
        channels: the five widths ``(conv_input, conv1, conv2, conv3, conv4)``.
        out_channels: width of ``conv_out`` (``C_out``).
        num_blocks: SubM blocks in ``conv1 .. conv4``.
        residual: residual blocks (CenterPoint) instead of plain SubM units (SECOND).
        norm_layer: normalisation factory.
        bev_layout: ``"xy"`` (default): ``bev`` is ``[B, C_out * D, X', Y']``; ``"yx"``:
            ``[B, C_out * D, Y', X']``, the layout OpenPCDet / mmdetection3d heads read.

    Shape:
        - Input: SparseTensor ``[N, in_channels]`` on a grid ``(X, Y, Z)``, ``z`` up, batch ``B``
          (entries may be empty). The height needs ``Z >= 25`` (e.g. ``Z = 41``).
        - Output: :class:`BackboneOutput` with ``bev`` ``[B, C_out * D, X', Y']`` (``"yx"``:
          ``[B, C_out * D, Y', X']``) where, per
          horizontal axis, ``X' = h(h(h(X)))`` with ``h(n) = (n - 1) // 2 + 1`` (``= ceil(X / 8)``),
          and ``D = g(g(h(h(Z))))`` with ``g(n) = (n - 3) // 2 + 1``;
          :meth:`bev_shape` computes it.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (16, 16, 32, 64, 64),
        out_channels: int = 128,
        num_blocks: Sequence[int] = (1, 2, 2, 2),
        residual: bool = False,
        norm_layer: NormLayer = snn.BatchNorm,
        bev_layout: str = "xy",
    ):
        super().__init__()
        if bev_layout not in BEV_LAYOUTS:
            raise ValueError(
                f"bev_layout must be one of {BEV_LAYOUTS} ('yx' is OpenPCDet's / mmdetection3d's [B, C*D, Y, X]), "
                f"got {bev_layout!r}"
            )
        self.bev_layout = bev_layout
        in_channels = check_channels("in_channels", in_channels)
        out_channels = check_channels("out_channels", out_channels)
        c = check_counts("channels", channels, 5, minimum=1)
        n = check_counts("num_blocks", num_blocks, 4, minimum=0)
        if n[0] == 0 and c[0] != c[1]:
            raise ValueError("conv1 needs at least one block to change channels from channels[0] to channels[1]")
        self.in_channels, self.channels, self.out_channels, self.num_blocks = in_channels, c, out_channels, n
        self.residual = bool(residual)
        self.conv_input = nn.Sequential(
            snn.SubMConv3d(in_channels, c[0], 3, bias=False), norm_layer(c[0]), snn.ReLU(inplace=True)
        )
        self.conv1 = make_blocks(n[0], c[0], c[1], residual, 3, norm_layer)

        def stage(i: int, padding) -> nn.Sequential:  # strided conv (channels i -> i + 1), then SubM blocks
            down = down_unit(c[i], c[i + 1], 3, 2, padding, norm_layer)
            return nn.Sequential(down, *make_blocks(n[i], c[i + 1], c[i + 1], residual, 3, norm_layer))

        self.conv2 = stage(1, 1)
        self.conv3 = stage(2, 1)
        self.conv4 = stage(3, (1, 1, 0))  # no padding along the height axis
        self.conv_out = down_unit(c[4], out_channels, (1, 1, 3), (1, 1, 2), 0, norm_layer)
        init_weights(self)

    @staticmethod
    def output_spatial_shape(spatial_shape: Sequence[int]) -> Tuple[int, int, int]:
        """Grid ``(X', Y', D)`` of ``conv_out`` for an input grid ``(X, Y, Z)``."""
        X, Y, Z = (int(s) for s in spatial_shape)
        xy = []
        for n in (X, Y):
            for _ in range(3):
                n = _conv_out_size(n, 3, 2, 1)
            xy.append(n)
        z = _conv_out_size(_conv_out_size(Z, 3, 2, 1), 3, 2, 1)
        z = _conv_out_size(_conv_out_size(z, 3, 2, 0), 3, 2, 0)
        if z < 1:
            raise ValueError(f"the height axis (z, last) needs at least 25 voxels for this backbone, got Z={Z}")
        return xy[0], xy[1], z

    def bev_shape(self, spatial_shape: Sequence[int]) -> Tuple[int, int, int]:
        """``(C_out * D, X', Y')`` (``"yx"``: ``(C_out * D, Y', X')``): the BEV map's shape, less the batch."""
        x, y, d = self.output_spatial_shape(spatial_shape)
        return (self.out_channels * d, y, x) if self.bev_layout == "yx" else (self.out_channels * d, x, y)

    @staticmethod
    def to_bev(x: SparseTensor, layout: str = "xy") -> torch.Tensor:
        """``[B, C, X, Y, D]`` densified and the height folded into channels (index ``c * D + d``):
        ``[B, C * D, X, Y]`` for ``layout="xy"``, ``[B, C * D, Y, X]`` for ``"yx"``."""
        if layout not in BEV_LAYOUTS:
            raise ValueError(f"layout must be one of {BEV_LAYOUTS}, got {layout!r}")
        dense = x.dense()
        B, C, X, Y, D = dense.shape
        if layout == "yx":
            return dense.permute(0, 1, 4, 3, 2).reshape(B, C * D, Y, X)
        return dense.permute(0, 1, 4, 2, 3).reshape(B, C * D, X, Y)

    def forward(self, x: SparseTensor) -> BackboneOutput:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor, got {type(x).__name__}")
        self.output_spatial_shape(x.spatial_shape)  # clear error for a too-short height axis
        x1 = self.conv1(self.conv_input(x))
        x2 = self.conv2(x1)
        x3 = self.conv3(x2)
        x4 = self.conv4(x3)
        out = self.conv_out(x4)
        features = {"conv1": x1, "conv2": x2, "conv3": x3, "conv4": x4, "out": out}
        return BackboneOutput(self.to_bev(out, self.bev_layout), features)


def second_backbone(in_channels: int, **kwargs) -> SparseVoxelBackbone8x:
    """SECOND's ``VoxelBackBone8x``: plain SubM units, widths 16-16-32-64-64, ``C_out = 128``."""
    return SparseVoxelBackbone8x(in_channels, **kwargs)


def centerpoint_backbone(in_channels: int, **kwargs) -> SparseVoxelBackbone8x:
    """CenterPoint's ``VoxelResBackBone8x``: residual blocks (2 per stage), widths 16-16-32-64-128."""
    options = dict(channels=(16, 16, 32, 64, 128), out_channels=128, num_blocks=(2, 2, 2, 2), residual=True)
    options.update(kwargs)
    return SparseVoxelBackbone8x(in_channels, **options)


def voxelize_in_range(
    points: Union[torch.Tensor, Sequence[torch.Tensor]],
    voxel_size: Union[float, Sequence[float]],
    point_cloud_range: Sequence[float],
    feats: Union[None, torch.Tensor, Sequence[torch.Tensor]] = None,
    reduce: str = "mean",
) -> SparseTensor:
    """Voxelize onto the fixed grid of a detection range, as detectors do.

    Points outside ``point_cloud_range = (x0, y0, z0, x1, y1, z1)`` are dropped; the grid
    starts at ``(x0, y0, z0)`` (its ``origin``) and has ``round((hi - lo) / voxel_size)``
    voxels per axis whatever the points are, so every scan gives the same BEV shape.
    ``points`` may be a list of clouds (one per batch entry, entries may be empty).
    """
    single = isinstance(points, torch.Tensor)
    clouds = [points] if single else list(points)
    if feats is None:
        feat_list = [None] * len(clouds)
    else:
        feat_list = [feats] if single else list(feats)
    if len(point_cloud_range) != 6:
        raise ValueError(f"point_cloud_range must be (x0, y0, z0, x1, y1, z1), got {point_cloud_range!r}")
    lo = torch.tensor([float(v) for v in point_cloud_range[:3]], dtype=torch.float64)
    hi = torch.tensor([float(v) for v in point_cloud_range[3:]], dtype=torch.float64)
    size = torch.tensor(number_triple(voxel_size, "voxel_size", positive=True), dtype=torch.float64)
    grid = torch.round((hi - lo) / size).to(torch.int64)
    if bool((grid < 1).any()):
        raise ValueError(f"empty grid for range {tuple(point_cloud_range)} and voxel_size {tuple(size.tolist())}")
    kept_points, kept_feats = [], []
    for p, f in zip(clouds, feat_list):
        v = torch.floor((p.to(torch.float64) - lo.to(p.device)) / size.to(p.device))
        keep = ((v >= 0) & (v < grid.to(p.device))).all(1)
        kept_points.append(p[keep])
        if f is None:
            f = p.new_ones(p.shape[0], 1)
        kept_feats.append(f[keep])
    if sum(len(p) for p in kept_points) == 0:
        raise ValueError("no points inside point_cloud_range")
    st = voxelize(kept_points, tuple(size.tolist()), kept_feats, reduce=reduce, origin=tuple(lo.tolist())).tensor
    # voxelize shifts the grid to start at the first occupied voxel; shift it back to `lo`.
    shift = torch.round((torch.tensor(st.origin, dtype=torch.float64) - lo) / size).to(torch.int64)
    coords = st.coords.clone()
    coords[:, 1:] += shift.to(coords.device)
    return SparseTensor(st.feats, coords, tuple(grid.tolist()), len(clouds), voxel_size=tuple(size.tolist()),
                        origin=tuple(lo.tolist()))
