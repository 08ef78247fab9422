"""Sparse modules. Convolutions keep PyTorch's parameter layout; feature-wise modules are
their torch counterparts applied to ``SparseTensor.feats``; ``torch.nn.Sequential`` of
any of these works as is."""
from .conv import SparseConv3d, SparseConvTranspose3d, SparseInverseConv3d, SubMConv3d
from .pointwise import (
    ELU,
    GELU,
    BatchNorm,
    Dropout,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    Mish,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    SyncBatchNorm,
    Tanh,
    convert_sync_batchnorm,
)
from .pooling import GlobalAvgPool, GlobalMaxPool, GlobalSumPool, SparseAvgPool3d, SparseMaxPool3d, ToDense

__all__ = [
    "SparseConv3d", "SubMConv3d", "SparseConvTranspose3d", "SparseInverseConv3d",
    "SparseMaxPool3d", "SparseAvgPool3d", "GlobalAvgPool", "GlobalMaxPool", "GlobalSumPool", "ToDense",
    "BatchNorm", "SyncBatchNorm", "convert_sync_batchnorm", "LayerNorm", "Linear", "Dropout", "Identity",
    "ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh", "Softmax",
]
from .deform import SparseDeformConv3d, SubMDeformConv3d
from .dynamic import SparseCondConv3d, SparseDynamicConv3d, SparseODConv3d

__all__ += ["SparseDeformConv3d", "SubMDeformConv3d", "SparseDynamicConv3d", "SparseCondConv3d", "SparseODConv3d"]
from .cdc import CentralDifferenceConv3d
from .coordconv import CoordConv3d
from .involution import Involution3d
from .octave import OctaveConv3d
from .reparam import AsymmetricConv3d, RepVGGBlock3d, ReparamConv3d
from .separable import DepthwiseSeparableConv3d, FlattenedConv3d, SpatiallySeparableConv3d

__all__ += [
    "DepthwiseSeparableConv3d", "SpatiallySeparableConv3d", "FlattenedConv3d", "ReparamConv3d", "AsymmetricConv3d",
    "RepVGGBlock3d", "CentralDifferenceConv3d", "CoordConv3d", "Involution3d", "OctaveConv3d",
]
