"""Reference networks built only from :mod:`sparseconv.nn` modules.

=================================  ==================================================================
:class:`MinkUNet`                  sparse residual U-Net for per-voxel segmentation (depth 14/18/34)
:class:`SparseVoxelBackbone8x`     SECOND / CenterPoint 3D detection backbone, dense BEV output
:class:`SparseResNet`              ResNet classifier for object scans (depth 14/18/34)
=================================  ==================================================================

Every model takes a :class:`~sparseconv.SparseTensor`; each kernel map it needs is built
once per coordinate set and reused by every layer (and by the decoder's inverse convs).
``sparseconv.analysis.summary(model, x)`` reports parameters, MACs and per-layer time.
"""
from .blocks import ConvNormAct, SparseBasicBlock
from .minkunet import MINKUNET_LAYERS, MinkUNet, minkunet14, minkunet18, minkunet34
from .resnet import RESNET_LAYERS, SparseResNet, sparse_resnet14, sparse_resnet18, sparse_resnet34
from .second import BackboneOutput, SparseVoxelBackbone8x, centerpoint_backbone, second_backbone, voxelize_in_range

__all__ = [
    "MinkUNet", "minkunet14", "minkunet18", "minkunet34", "MINKUNET_LAYERS",
    "SparseVoxelBackbone8x", "BackboneOutput", "second_backbone", "centerpoint_backbone", "voxelize_in_range",
    "SparseResNet", "sparse_resnet14", "sparse_resnet18", "sparse_resnet34", "RESNET_LAYERS",
    "SparseBasicBlock", "ConvNormAct",
]
