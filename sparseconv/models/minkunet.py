"""MinkUNet: the sparse residual U-Net used for LiDAR and indoor semantic segmentation.

Built only from :mod:`sparseconv.nn` modules. The encoder halves the resolution four times
with ``SparseConv3d(k=2, s=2)``; the decoder returns with ``SparseInverseConv3d(k=2, s=2)``,
which reuses the encoder's strided kernel map (transposed) and lands exactly on the
encoder's coordinate set, so skip connections are a plain channel concatenation and no
map is ever built twice (see :class:`MinkUNet`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

from torch import nn

from .. import nn as snn
from ..engine.tensor import SparseTensor
from .blocks import NormLayer, check_channels, check_counts, concat, init_weights, make_blocks, pad_grid

__all__ = ["MinkUNet", "MINKUNET_LAYERS", "minkunet14", "minkunet18", "minkunet34"]

#: Residual blocks per stage ``(enc1, enc2, enc3, enc4, dec1, dec2, dec3, dec4)`` for each depth,
#: as in the common MinkUNet14/18/34 definitions (34 deepens the encoder like ResNet-34).
MINKUNET_LAYERS: Dict[int, Tuple[int, ...]] = {
    14: (1, 1, 1, 1, 1, 1, 1, 1),
    18: (2, 2, 2, 2, 2, 2, 2, 2),
    34: (2, 3, 4, 6, 2, 2, 2, 2),
}

#: Stage widths as multiples of ``base_channels``: encoder ``b, 2b, 4b, 8b``, decoder
#: ``8b, 4b, 3b, 3b`` (``32, 64, 128, 256, 256, 128, 96, 96`` for ``b = 32``).
PLANE_MULTIPLIERS: Tuple[int, ...] = (1, 2, 4, 8, 8, 4, 3, 3)


class _EncoderStage(nn.Module):
    """``SparseConv3d(k2, s2) -> norm -> ReLU`` (channels kept) then residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, norm_layer: NormLayer):
        super().__init__()
        self.down = nn.Sequential(
            snn.SparseConv3d(in_channels, in_channels, 2, stride=2, bias=False),
            norm_layer(in_channels),
            snn.ReLU(inplace=True),
        )
        self.blocks = make_blocks(num_blocks, in_channels, out_channels, True, 3, norm_layer)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.blocks(self.down(x))


class _DecoderStage(nn.Module):
    """``SparseInverseConv3d(k2, s2) -> norm -> ReLU``, concatenate the skip, residual blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, num_blocks: int,
                 norm_layer: NormLayer):
        super().__init__()
        self.up = snn.SparseInverseConv3d(in_channels, out_channels, 2, stride=2, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = snn.ReLU(inplace=True)
        self.blocks = make_blocks(num_blocks, out_channels + skip_channels, out_channels, True, 3, norm_layer)

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        # target=skip names the strided conv being undone: its map is transposed, not rebuilt.
        y = self.act(self.norm(self.up(x, skip)))
        return self.blocks(concat(y, skip))


class MinkUNet(nn.Module):
    r"""Sparse residual U-Net (MinkUNet) for per-voxel prediction.

    Architecture (``b = base_channels``, default widths ``P = (b, 2b, 4b, 8b, 8b, 4b, 3b, 3b)``,
    ``L`` = :data:`MINKUNET_LAYERS` ``[depth]``; every conv is followed by a norm and ReLU)::

        stem      SubMConv3d(C_in -> b, k=stem_kernel_size)                      stride 1  -> s0
        enc_i     SparseConv3d(k=2, s=2) then L[i] BasicBlocks -> P[i]     i=1..4  stride 2^i -> s_i
        dec_j     SparseInverseConv3d(k=2, s=2) -> P[4+j], concat skip, L[4+j] BasicBlocks
                  (skips: s3, s2, s1, s0 for j = 1..4)                             stride 16/2^j
        head      Linear(P[7] -> num_classes) per site

    A BasicBlock is two submanifold ``3x3x3`` convolutions with a residual connection
    (:class:`~sparseconv.models.blocks.SparseBasicBlock`). Strided convs keep their channel
    count; the first block of a stage changes it (with a projected shortcut).

    Kernel maps: the encoder builds, per resolution, one submanifold map (shared by every
    block there) and one strided ``k=2, s=2`` map; the decoder's inverse convs transpose
    the strided maps instead of searching again, and their outputs *are* the encoder's
    coordinate sets, so the decoder blocks reuse the encoder's submanifold maps. A forward
    builds ``2 + 2 + 2 + 2 + 1`` maps plus the stem's (10 with the default ``k=5`` stem),
    each exactly once (``coordinate_set.kernel_map_builds``).

    Grid: a ``k=2, s=2`` conv has output grid ``floor(n / 2)`` per axis (as ``F.conv3d``) and
    would drop the last slab of an odd extent, so the network runs on the input's sites in a
    grid grown to a multiple of 16 (:func:`~sparseconv.models.blocks.pad_grid`). When the
    input's ``spatial_shape`` is already a multiple of 16 the maps are built and cached on
    the input's own coordinate set; otherwise on a copy of it (grown grid, same sites and
    rows) that the input's set caches (:meth:`~sparseconv.engine.CoordinateSet.on_grid`), so
    later calls on the same coordinates reuse the maps; the output is placed back on the
    input's coordinate set.

    Args:
        in_channels: input feature channels (e.g. 4 for ``x, y, z, intensity``).
        num_classes: output channels (class logits).
        depth: 14, 18 or 34 (block counts of :data:`MINKUNET_LAYERS`); ignored when
            ``layers`` is given.
        base_channels: ``b`` above; widths scale with it.
        layers: explicit 8 block counts (encoder 4, decoder 4), overriding ``depth``.
        planes: explicit 8 stage widths, overriding ``base_channels``.
        stem_kernel_size: kernel of the stem submanifold conv (5, as MinkUNet; 3 is cheaper).
        norm_layer: normalisation factory (``sparseconv.nn.BatchNorm``; ``SyncBatchNorm`` for DDP).

    Shape:
        - Input: SparseTensor ``[N, in_channels]`` on any grid ``(X, Y, Z)``, batch ``B``
          (entries may be empty).
        - Output: SparseTensor ``[N, num_classes]`` on the input's coordinate set (the same
          object: ``out.coordinate_set is x.coordinate_set``), so rows align with the input.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 18,
        base_channels: int = 32,
        *,
        layers: Optional[Sequence[int]] = None,
        planes: Optional[Sequence[int]] = None,
        stem_kernel_size: int = 5,
        norm_layer: NormLayer = snn.BatchNorm,
    ):
        super().__init__()
        in_channels = check_channels("in_channels", in_channels)
        num_classes = check_channels("num_classes", num_classes)
        base_channels = check_channels("base_channels", base_channels)
        if layers is None:
            if depth not in MINKUNET_LAYERS:
                raise ValueError(f"depth must be one of {sorted(MINKUNET_LAYERS)} (or pass layers=), got {depth!r}")
            layers = MINKUNET_LAYERS[depth]
        layers = check_counts("layers", layers, 8, minimum=0)
        if planes is None:
            planes = tuple(m * base_channels for m in PLANE_MULTIPLIERS)
        planes = check_counts("planes", planes, 8, minimum=1)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.layers, self.planes = layers, planes

        stem_channels = planes[0]
        self.stem = nn.Sequential(
            snn.SubMConv3d(in_channels, stem_channels, stem_kernel_size, bias=False),
            norm_layer(stem_channels),
            snn.ReLU(inplace=True),
        )
        encoder, channels, skips = [], stem_channels, [stem_channels]
        for i in range(4):
            encoder.append(_EncoderStage(channels, planes[i], layers[i], norm_layer))
            channels = planes[i] if layers[i] else channels
            skips.append(channels)
        self.encoder = nn.ModuleList(encoder)
        decoder = []
        for j in range(4):
            skip_channels = skips[3 - j]
            decoder.append(_DecoderStage(channels, skip_channels, planes[4 + j], layers[4 + j], norm_layer))
            channels = planes[4 + j] if layers[4 + j] else planes[4 + j] + skip_channels
        self.decoder = nn.ModuleList(decoder)
        self.head = snn.Linear(channels, num_classes)
        self.out_channels = num_classes
        init_weights(self)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"MinkUNet expects a SparseTensor, got {type(x).__name__}")
        # Grid grown to a multiple of the total stride 16, so no k2-s2 conv drops a boundary slab.
        padded = pad_grid(x, 16)
        skips = [self.stem(padded)]
        for stage in self.encoder:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for stage in self.decoder:
            y = stage(y, skips.pop())
        out = self.head(y)
        return out if padded is x else x.replace(out.feats)


def minkunet14(in_channels: int, num_classes: int, base_channels: int = 32, **kwargs) -> MinkUNet:
    """MinkUNet with one residual block per stage (see :class:`MinkUNet`)."""
    return MinkUNet(in_channels, num_classes, 14, base_channels, **kwargs)


def minkunet18(in_channels: int, num_classes: int, base_channels: int = 32, **kwargs) -> MinkUNet:
    """MinkUNet with two residual blocks per stage (see :class:`MinkUNet`)."""
    return MinkUNet(in_channels, num_classes, 18, base_channels, **kwargs)


def minkunet34(in_channels: int, num_classes: int, base_channels: int = 32, **kwargs) -> MinkUNet:
    """MinkUNet with a ResNet-34 encoder (2, 3, 4, 6 blocks) and two blocks per decoder stage."""
    return MinkUNet(in_channels, num_classes, 34, base_channels, **kwargs)
