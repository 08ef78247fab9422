"""Typed, immutable kernel-map objects: :class:`KernelMapKey` (what determines a map) and
:class:`KernelMap` (the rulebook itself), plus the geometry formulas they share.

Ownership (why some references are weak): a map is cached on the coordinate set it was built on
(its *owner*, :meth:`CoordinateSet.kernel_map`). A map never holds its owner strongly, and a
coarse set records the strided map that produced it with a weak reference to the finer set. So
the chain ``input set -> map -> output set -> ...`` has no way back, and a U-Net's whole
coordinate pyramid with its maps is freed by reference counting as soon as the last tensor on
it goes, without waiting for Python's cycle collector (on a GPU that memory would otherwise
outlive the training step).
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Hashable, Optional, Tuple, Union

import torch

if TYPE_CHECKING:  # the coordinate set imports this package to build maps; the types only name it
    from ..coordinates import CoordinateSet

Triple = Tuple[int, int, int]
KINDS = ("submanifold", "conv", "transposed")
SetRef = Union[None, "CoordinateSet", "weakref.ReferenceType[CoordinateSet]"]


def _resolve(ref: SetRef, role: str) -> "CoordinateSet":
    if ref is None:
        raise RuntimeError(f"this kernel map was rebuilt from tensors and does not know its {role} coordinate set")
    if not isinstance(ref, weakref.ReferenceType):
        return ref
    target = ref()
    if target is None:
        raise RuntimeError(
            f"the {role} coordinate set of this kernel map has been freed; keep a SparseTensor on it "
            "(or its coordinate set) alive while using the map"
        )
    return target


@dataclass(frozen=True)
class KernelMapKey:
    """Everything besides the input coordinates that determines a kernel map."""

    kind: str
    kernel_size: Triple
    stride: Triple = (1, 1, 1)
    padding: Triple = (0, 0, 0)
    dilation: Triple = (1, 1, 1)
    output_padding: Triple = (0, 0, 0)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name, minimum in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1), ("output_padding", 0)):
            value = getattr(self, name)
            if len(value) != 3 or any(not isinstance(v, int) or v < minimum for v in value):
                raise ValueError(f"{name} must be 3 ints >= {minimum}, got {value}")

    @property
    def kernel_volume(self) -> int:
        kd, kh, kw = self.kernel_size
        return kd * kh * kw


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Immutable rulebook: pairs of offset ``k`` are ``in_rows[b[k]:b[k+1]]`` / ``out_rows[...]``.

    Attributes:
        key: the parameters it was built for (None for a map the registered core op rebuilds from
            its tensor arguments, :func:`sparseconv.engine.op.kernel_map_from_tensors`).
        in_rows, out_rows: int64 ``[P]``, grouped by offset.
        offset_bounds: ``K + 1`` Python ints delimiting each offset's pairs (no device sync to read).
        num_inputs, num_outputs: rows of the input and output feature matrices.
        input_ref, output_ref: the coordinate sets of the inputs and the outputs (the input's own
            for submanifold maps), each held strongly or as a ``weakref.ref`` (the set that caches
            the map is held weakly, see the module docstring); read them as :attr:`input` and
            :attr:`output`. None in a map rebuilt from tensors (its coordinate sets are unknown).
        identity_offset: an offset whose pairs are exactly ``(i, i)`` for every row, or None;
            the core op skips its gather and scatter.
        injective: within one offset every input row and every output row appears at most once
            (true of every map built here: a tap moves each site by a fixed vector). Maps made
            elsewhere, such as the corner pairs of a deformable convolution, set it False and the
            core op accumulates with a scatter-add instead of gather-add-copy.
    """

    key: Optional[KernelMapKey]
    in_rows: torch.Tensor
    out_rows: torch.Tensor
    offset_bounds: Tuple[int, ...]
    num_inputs: int
    num_outputs: int
    input_ref: SetRef
    output_ref: SetRef
    identity_offset: Optional[int] = None
    injective: bool = True
    # Not an __init__ argument: a map made from another (dataclasses.replace, tests cutting a map)
    # starts with an empty cache instead of sharing, and so misusing, the other's derived data.
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def input(self) -> "CoordinateSet":
        """Coordinate set of the input rows."""
        return _resolve(self.input_ref, "input")

    @property
    def output(self) -> "CoordinateSet":
        """Coordinate set of the output rows."""
        return _resolve(self.output_ref, "output")

    @property
    def kernel_volume(self) -> int:
        return len(self.offset_bounds) - 1

    @property
    def num_pairs(self) -> int:
        return self.offset_bounds[-1]

    def pairs(self, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.offset_bounds[k], self.offset_bounds[k + 1]
        return self.in_rows[lo:hi], self.out_rows[lo:hi]

    def pair_counts(self) -> Tuple[int, ...]:
        b = self.offset_bounds
        return tuple(b[k + 1] - b[k] for k in range(self.kernel_volume))

    def derived(self, name: Hashable, build: Callable[["KernelMap"], Any]) -> Any:
        """``build(self)``, computed on first ask and kept with this map under ``name``: what is
        derived from the pairs alone (the transposed map, a backend's reordering of the pairs)
        is built once per map, like the map itself."""
        value = self._derived.get(name)
        if value is None:
            value = self._derived[name] = build(self)
        return value

    def owned_by(self, owner: "CoordinateSet") -> "KernelMap":
        """This map as ``owner`` caches it: every reference to ``owner`` made weak (see the module
        docstring). Call on a freshly built map, before anything is derived from it."""
        weak = weakref.ref(owner)
        return replace(
            self,
            input_ref=weak if self.input_ref is owner else self.input_ref,
            output_ref=weak if self.output_ref is owner else self.output_ref,
        )

    def transpose(self) -> "KernelMap":
        """The same pairs with inputs and outputs swapped: the map of the inverse convolution."""
        return self.derived("transpose", KernelMap._transposed)

    def _transposed(self) -> "KernelMap":
        return KernelMap(
            key=self.key,
            in_rows=self.out_rows,
            out_rows=self.in_rows,
            offset_bounds=self.offset_bounds,
            num_inputs=self.num_outputs,
            num_outputs=self.num_inputs,
            input_ref=self.output_ref,
            output_ref=self.input_ref,
            identity_offset=self.identity_offset,
            injective=self.injective,
        )


def kernel_offsets(kernel_size: Triple, device=None) -> torch.Tensor:
    """Kernel taps ``[K, 3]`` in row-major order, matching ``weight.reshape(..., K)``."""
    taps = list(itertools.product(*(range(k) for k in kernel_size)))
    return torch.tensor(taps, dtype=torch.int64, device=device).reshape(-1, 3)


def output_spatial_shape(key: KernelMapKey, spatial_shape: Triple) -> Triple:
    """Output grid extent, with PyTorch's formulas for ``F.conv3d`` / ``F.conv_transpose3d``."""
    if key.kind == "submanifold":
        return tuple(spatial_shape)  # type: ignore[return-value]
    shape = []
    for n, k, s, p, d, op in zip(
        spatial_shape, key.kernel_size, key.stride, key.padding, key.dilation, key.output_padding
    ):
        if key.kind == "conv":
            size = (n + 2 * p - d * (k - 1) - 1) // s + 1
        else:
            size = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        shape.append(size)
    if any(size < 1 for size in shape):
        raise ValueError(
            f"{key.kind} with kernel_size={key.kernel_size}, stride={key.stride}, padding={key.padding}, "
            f"dilation={key.dilation} on spatial_shape {tuple(spatial_shape)} gives an empty output grid {tuple(shape)}"
        )
    return tuple(shape)  # type: ignore[return-value]
