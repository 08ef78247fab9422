"""spconv compat: the ``indice_key`` registry. Layers that share an ``indice_key`` share one kernel
map, as in spconv, and misuse spconv accepts silently (one key for layers of different geometry, or
on different coordinates) raises an error naming both layers.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from torch import nn

from ..engine.coordinates import CoordinateSet
from ..engine.kmap import KernelMap, KernelMapKey
from ._spconv_core import IndiceData, SparseConvTensor, describe_layer, same_sites


def lookup_or_register(
    input: SparseConvTensor,
    layer: nn.Module,
    kind: str,
    key: KernelMapKey,
    ndim: int,
    ksize: List[int],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    indice_key: Optional[str],
) -> Tuple[KernelMap, Dict[str, IndiceData]]:
    """The kernel map of a forward layer (``kind`` "subm", "conv", "pool" or "transposed") and
    the ``indice_dict`` for its output.

    A submanifold layer whose key is already registered reuses that map after checking that the
    kernel, dilation and site set agree; a strided/pooling/transposed layer must be the only one
    of its key in a forward pass. Misuse raises ``ValueError`` naming both layers.
    """
    coordinate_set = input._coordinate_set()
    indice_dict = input.indice_dict
    entry = indice_dict.get(indice_key) if indice_key is not None else None
    this = describe_layer(layer)
    if entry is not None:
        if kind != "subm" or entry.kind != "subm":
            raise ValueError(
                f"indice_key {indice_key!r} is used twice in one forward pass: by {entry.layer} "
                f"({_kind_words(entry.kind)}) and by {this} ({_kind_words(kind)}). Only submanifold "
                "convolutions may share a key (to reuse its map); give every strided, pooling and "
                "transposed layer its own key"
            )
        diffs = []
        if entry.ksize != list(ksize):
            diffs.append(f"kernel_size {entry.ksize} vs {list(ksize)}")
        if entry.dilation != list(dilation):
            diffs.append(f"dilation {entry.dilation} vs {list(dilation)}")
        if diffs:
            raise ValueError(
                f"indice_key {indice_key!r} is shared by layers that build different kernel maps: "
                f"{entry.layer} and {this} differ in {', '.join(diffs)}. Use one key per kernel map"
            )
        if not same_sites(entry.kernel_map.input, coordinate_set):
            raise ValueError(
                f"indice_key {indice_key!r} was registered by {entry.layer} on {_sites_words(entry.kernel_map.input)}, "
                f"but {this} applies it to a different coordinate set ({_sites_words(coordinate_set)}). "
                "A submanifold key can only be reused on the same sites; use a new key after the sites change"
            )
        return entry.kernel_map, indice_dict
    kernel_map = coordinate_set.kernel_map(key)
    if indice_key is None:
        return kernel_map, indice_dict
    new_dict = dict(indice_dict)
    new_dict[indice_key] = IndiceData(
        kind, this, kernel_map, ndim, ksize, stride, padding, dilation,
        input.indices, list(input.spatial_shape), input.batch_size,
    )
    return kernel_map, new_dict


def lookup_inverse(
    input: SparseConvTensor, layer: nn.Module, indice_key: str, ksize: List[int], ndim: int
) -> IndiceData:
    """The entry a :class:`SparseInverseConv3d` undoes, checked against ``input`` and the layer."""
    this = describe_layer(layer)
    entry = input.indice_dict.get(indice_key)
    if entry is None:
        known = sorted(input.indice_dict)
        raise ValueError(
            f"{this} found no layer registered under indice_key {indice_key!r} in its input's history "
            f"(keys present: {known}). Pair it with the SparseConv3d/SparseMaxPool3d of the same key, "
            "and make sure that layer ran earlier in the same forward pass on this branch"
        )
    if entry.kind == "subm":
        raise ValueError(
            f"{this} inverts indice_key {indice_key!r}, but that key was registered by {entry.layer}, "
            "a submanifold convolution: only strided convolutions, pooling and transposed convolutions can be inverted"
        )
    if entry.ndim != ndim:
        raise ValueError(f"{this} is {ndim}-D but indice_key {indice_key!r} was registered by {entry.layer} ({entry.ndim}-D)")
    if entry.ksize != list(ksize):
        raise ValueError(
            f"{this} must have the kernel_size of the layer it inverts: indice_key {indice_key!r} was "
            f"registered by {entry.layer} with kernel_size {entry.ksize}, this layer has {list(ksize)}"
        )
    coordinate_set = input._coordinate_set()
    if not same_sites(entry.kernel_map.output, coordinate_set):
        raise ValueError(
            f"{this} inverts indice_key {indice_key!r}, whose layer {entry.layer} produced "
            f"{_sites_words(entry.kernel_map.output)}, but its input is a different coordinate set "
            f"({_sites_words(coordinate_set)}). The inverse conv must receive the sites the keyed layer "
            "output (submanifold layers and feature-wise modules in between keep them)"
        )
    return entry


def _kind_words(kind: str) -> str:
    return {
        "subm": "submanifold conv",
        "conv": "strided/regular sparse conv",
        "pool": "pooling",
        "transposed": "transposed conv",
    }[kind]


def _sites_words(cs: CoordinateSet) -> str:
    return f"{len(cs)} sites, spatial_shape {list(cs.spatial_shape)}, batch_size {cs.batch_size}"
