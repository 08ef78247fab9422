"""Per-sample sparse convolution: every batch entry convolved with its own kernel, on the core op.

Dynamic convolutions (CondConv, DynamicConv, ODConv; modules in :mod:`sparseconv.nn.dynamic`)
mix ``E`` expert kernels per sample, ``W_b = sum_e pi_e(x_b) W_e``. Rather than run the layer once
per sample, or run all experts and mix their outputs (``E`` times the GEMM work), the mixed
kernels ``W_b`` are formed explicitly (``O(B E C_out C_in K / G)`` multiply-adds, tiny next to
the convolution) and the whole batch is one call of the core op over a *per-sample split* of
the ordinary kernel map:

    pairs of tap n whose output site lies in sample b   ->   "offset" n B + b,  weight W_b[n]

A convolution never mixes samples (input and output of a pair share the batch index), so this
is exactly ``F.conv3d(x_b, W_b)`` for every ``b`` at once, with the GEMM work of a single static
convolution and the same gather/GEMM/scatter loop (over ``K B`` weight slices instead of ``K``;
slices of empty samples are skipped). The split map is a stable regrouping of the cached map's
pairs by ``(tap, sample)``; maps built here list each tap's pairs in output order, which for
batch-sorted coordinates is already sample-major, so usually only the boundaries are computed.
It is built once per kernel map and kept with it (:meth:`KernelMap.derived`). With one sample the ordinary
map is used as is (including the core's identity fast path for the submanifold centre tap).
Gradients of the per-sample kernels come from the core; autograd carries them back through
the mixing to the experts and the attention.
"""
from __future__ import annotations

from typing import Optional

import torch

from dataclasses import replace

from ..._validation import IntOrTriple
from ...engine.core import gather_gemm_scatter
from ...engine.kmap import KernelMap
from ...engine.tensor import SparseTensor
from ._checks import autocast_conv_inputs, check_conv_args
from .conv import conv_map_key

def split_by_sample(kmap: KernelMap) -> KernelMap:
    """The map with offset ``k`` split into ``B`` offsets ``k B + b`` (pairs whose output is in
    sample ``b``), ``B = kmap.output.batch_size``. Same pairs, regrouped; built once per map
    (:meth:`KernelMap.derived`), so what is derived from the split map is kept too."""
    if kmap.output.batch_size == 1:
        return kmap
    return kmap.derived("split_by_sample", _split_by_sample)


def _split_by_sample(kmap: KernelMap) -> KernelMap:
    batch_size = kmap.output.batch_size
    device = kmap.in_rows.device
    taps = torch.repeat_interleave(
        torch.arange(kmap.kernel_volume, device=device),
        torch.tensor(kmap.pair_counts(), device=device),
        output_size=kmap.num_pairs,
    )
    segment = taps * batch_size + kmap.output.coords[:, 0].index_select(0, kmap.out_rows)
    in_rows, out_rows = kmap.in_rows, kmap.out_rows
    if segment.numel() > 1 and not bool((segment[1:] >= segment[:-1]).all()):
        order = torch.sort(segment, stable=True).indices
        in_rows, out_rows = in_rows[order], out_rows[order]
    counts = torch.bincount(segment, minlength=kmap.kernel_volume * batch_size).tolist()
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    # replace() keeps kmap's references to its coordinate sets as they are (weak to the set that
    # caches kmap), so this map, cached on kmap, closes no reference cycle
    return replace(kmap, in_rows=in_rows, out_rows=out_rows, offset_bounds=tuple(bounds), identity_offset=None)


def per_sample_weight_to_core(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, C_out, C_in/G, kD, kH, kW]`` -> ``[K B, G, C_in/G, C_out/G]``, slice ``k B + b`` = ``W_b[k]``."""
    batch, c_out, cin_g = weight.shape[:3]
    core = weight.reshape(batch, groups, c_out // groups, cin_g, -1).permute(4, 0, 1, 3, 2)
    return core.reshape(-1, groups, cin_g, c_out // groups)


def sparse_conv3d_per_sample(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrTriple = 1,
    padding: IntOrTriple = 0,
    dilation: IntOrTriple = 1,
    groups: int = 1,
    submanifold: bool = False,
) -> SparseTensor:
    """Sparse convolution of batch entry ``b`` with its own kernel ``weight[b]``.

    Args:
        input: SparseTensor with ``B = input.batch_size`` entries, ``[N, C_in]``.
        weight: ``[B, C_out, C_in / groups, kD, kH, kW]`` (``nn.Conv3d`` layout per sample).
        bias: ``[B, C_out]`` or None.
        stride, padding, dilation, groups: as :func:`~sparseconv.nn.functional.sparse_conv3d`.
        submanifold: outputs at the input sites, 'same' padding (stride 1, padding 0), as
            :func:`~sparseconv.nn.functional.subm_conv3d`.

    Dense twin: ``F.conv3d(x.dense()[b:b+1], weight[b], bias[b], ...)`` for every ``b``
    (:func:`sparseconv.testing.dense_per_sample_conv3d`), read at the active output sites.
    """
    input, weight, bias = autocast_conv_inputs(input, weight, bias)
    groups = check_conv_args(input, weight, bias, groups, per_sample=True)
    key = conv_map_key(tuple(weight.shape[3:]), stride, padding, dilation, submanifold)
    kmap = input.coordinate_set.kernel_map(key)
    out = gather_gemm_scatter(input.feats, per_sample_weight_to_core(weight, groups), split_by_sample(kmap))
    if bias is not None:
        out = out + bias.index_select(0, kmap.output.coords[:, 0])
    return SparseTensor.from_coordinate_set(out, kmap.output)
