"""spconv 2.x's PyTorch API on sparseconv: ``import sparseconv.compat.spconv as spconv``.

Model code written against ``spconv.pytorch`` (SECOND, PV-RCNN, CenterPoint, sparse U-Nets,
Point Transformer V3 stems) runs here unchanged, on CPU or GPU, through sparseconv's kernel
maps and its single core op (:func:`sparseconv.engine.core.gather_gemm_scatter`). With
:func:`sparseconv.compat.install_spconv_shim` even ``import spconv.pytorch as spconv`` resolves
here when spconv itself is not installed.

Mapping
-------
* ``SparseConvTensor(features, indices, spatial_shape, batch_size)``: ``indices`` are
  ``(batch, i, j, k)`` rows (spconv writes ``(b, z, y, x)``) over ``spatial_shape`` ordered like
  the columns (``[D, H, W]``). Column ``j`` maps to sparseconv's column ``j`` and the spatial
  shape is passed through unchanged (sparseconv's ``(x, y, z)`` naming is only a label), so
  :meth:`SparseConvTensor.dense` is spconv's ``[B, C, *spatial_shape]`` (channels first) or
  ``[B, *spatial_shape, C]``. 1-D and 2-D tensors and layers (``SubMConv2d``, ...) run as 3-D
  ones with leading axes of extent 1.
* Weights keep spconv 2.x's layout ``[out_channels, *kernel_size, in_channels]`` for every
  convolution kind, so spconv checkpoints load with ``load_state_dict`` unchanged; the layer
  permutes it to the core layout ``[K, G, C_in/G, C_out/G]``. :func:`to_native` /
  :func:`from_native` convert modules, :func:`state_dict_to_native` /
  :func:`state_dict_from_native` checkpoints, both ways, to sparseconv's native
  ``sparseconv.nn`` modules (PyTorch layout ``[out, in/groups, kD, kH, kW]``).
* ``indice_key``: each SparseConvTensor carries ``indice_dict``, the registry of the keyed layers
  it went through in this forward pass. A ``SubMConv3d`` reuses the map of an earlier submanifold
  layer with its key; a ``SparseConv3d`` / ``SparseMaxPool3d`` / ``SparseConvTranspose3d``
  records its map; a ``SparseInverseConv3d(indice_key=K)`` transposes the map recorded under
  ``K`` and returns exactly to that layer's input sites (indices and spatial shape).

Semantics, verified against spconv 2.3.8's CPU build layer by layer (see
``tests/test_compat_spconv.py``):

* ``SparseConv3d`` = ``F.conv3d`` on the dense grid at every output site reached by an active
  input; ``SubMConv3d`` = centred odd kernel at the input sites (``stride``/``padding`` have no
  effect, as in spconv); ``SparseConvTranspose3d`` = ``F.conv_transpose3d`` with
  ``weight.permute(-1, 0, 1, 2, 3)``; ``SparseInverseConv3d`` = the transposed map of its pair.
* Kernel-1, stride-1 layers: spconv multiplies the features by ``weight.view(in, out)`` (not by
  the transposed ``[out, in]`` matrix); reproduced, so trained 1x1 weights mean the same.
* ``SparseMaxPool3d``: spconv's outputs start at 0, so the result is ``max(0, max over active
  inputs)``; reproduced (equal to a plain sparse max pool after ReLU).
* ``SparseAvgPool3d``: mean over the active inputs of each window (spconv's definition).
* ``SparseSequential`` passes the SparseConvTensor to sparse modules and ``x.features`` to
  plain torch modules (``nn.BatchNorm1d``, ``nn.ReLU``, ...), re-wrapping their result.

What differs from spconv
------------------------
* Errors instead of silent misbehaviour: an ``indice_key`` shared by layers with different
  kernel size or dilation (kernel-1 layers included, which spconv lets through), used on a
  different coordinate set (spconv only compares site counts), or registered twice by strided
  layers, raises ``ValueError`` naming both layers and what differs. Duplicate or out-of-grid
  indices raise ``ValueError``. ``x + y`` of tensors on different sites raises.
* Output rows of strided/transposed layers are in sparseconv's order (sorted by batch, then
  coordinates); spconv's order is a hash order. Sites, features and ``dense()`` agree.
* Supported beyond spconv: ``groups`` (weight ``[out, *k, in/groups]``), any index dtype,
  non-contiguous indices (spconv's CPU build misreads those), gradients for every layer on CPU.
* Not supported (``NotImplementedError`` with a reason): 4-D layers, dilated transposed
  convolution (spconv's output grid ignores the dilation), kernel-1 inverse convolution (spconv
  ignores its key), fused activations (``act_type``), int8/quantized tensors, submanifold pooling.
  Even-kernel submanifold convolutions are rejected, as spconv rejects them.
* Accepted and without effect on any result (spconv performance or profiling options): ``algo``,
  ``fp32_accum``, ``large_kernel_fast_algo``, ``grid``, ``voxel_num``, ``benchmark``,
  ``permanent_thrust_allocator``, ``enable_timer``, ``force_algo``, ``spconv.constants``.
  ``record_voxel_count`` keeps spconv's ``max_num_voxels_during_training`` buffer up to date.
* ``SparseGlobalAvgPool`` returns ``[B, C]`` (spconv 2.3.8 has no CPU version and its GPU
  version returns the first channel only). ``select_by_index`` leaves the source tensor's
  ``indice_dict`` untouched (spconv clears the shared dict).
"""
from ._spconv_conv import (
    SparseConv1d,
    SparseConv2d,
    SparseConv3d,
    SparseConv4d,
    SparseConvolution,
    SparseConvTranspose1d,
    SparseConvTranspose2d,
    SparseConvTranspose3d,
    SparseConvTranspose4d,
    SparseInverseConv1d,
    SparseInverseConv2d,
    SparseInverseConv3d,
    SparseInverseConv4d,
    SubMConv1d,
    SubMConv2d,
    SubMConv3d,
    SubMConv4d,
)
from ._spconv_convert import (
    from_native,
    native_weight_to_spconv,
    spconv_weight_to_native,
    state_dict_from_native,
    state_dict_to_native,
    to_native,
)
from ._spconv_core import (
    SPCONV_API_VERSION,
    ConvAlgo,
    IndiceData,
    SparseConvTensor,
    SparseModule,
    assign_name_for_sparse_modules,
)
from ._spconv_modules import (
    AddTable,
    AddTableMisaligned,
    ConcatTable,
    Identity,
    JoinTable,
    RemoveGrid,
    SparseAvgPool1d,
    SparseAvgPool2d,
    SparseAvgPool3d,
    SparseBatchNorm,
    SparseGlobalAvgPool,
    SparseGlobalMaxPool,
    SparseIdentity,
    SparseMaxPool1d,
    SparseMaxPool2d,
    SparseMaxPool3d,
    SparseMaxPool4d,
    SparseReLU,
    SparseSequential,
    SparseSyncBatchNorm,
    ToDense,
)
from . import _spconv_conv as conv
from . import _spconv_core as core
from . import _spconv_functional as functional
from . import _spconv_modules as modules
from . import _spconv_modules as pool
from . import _spconv_modules as tables

__version__ = SPCONV_API_VERSION

__all__ = [
    "SparseConvTensor", "IndiceData", "ConvAlgo", "SparseModule", "SparseSequential",
    "SparseConvolution", "SparseConv1d", "SparseConv2d", "SparseConv3d", "SparseConv4d",
    "SubMConv1d", "SubMConv2d", "SubMConv3d", "SubMConv4d",
    "SparseConvTranspose1d", "SparseConvTranspose2d", "SparseConvTranspose3d", "SparseConvTranspose4d",
    "SparseInverseConv1d", "SparseInverseConv2d", "SparseInverseConv3d", "SparseInverseConv4d",
    "SparseMaxPool1d", "SparseMaxPool2d", "SparseMaxPool3d", "SparseMaxPool4d",
    "SparseAvgPool1d", "SparseAvgPool2d", "SparseAvgPool3d", "SparseGlobalMaxPool", "SparseGlobalAvgPool",
    "SparseBatchNorm", "SparseSyncBatchNorm", "SparseReLU", "SparseIdentity", "Identity",
    "ToDense", "RemoveGrid", "JoinTable", "AddTable", "AddTableMisaligned", "ConcatTable",
    "assign_name_for_sparse_modules",
    "to_native", "from_native", "state_dict_to_native", "state_dict_from_native",
    "spconv_weight_to_native", "native_weight_to_spconv",
    "conv", "core", "functional", "modules", "pool", "tables",
]
