"""spconv compat convolutions: spconv 2.x layer classes over sparseconv's kernel maps and core op.

Weights use spconv 2.x's layout ``[out_channels, *kernel_size, in_channels / groups]`` for every
kind of convolution (submanifold, regular, transposed, inverse), so spconv checkpoints load
unchanged. Internally the weight is permuted to the core layout ``[K, G, C_in/G, C_out/G]`` and
applied by :func:`sparseconv.engine.core.gather_gemm_scatter` over a sparseconv kernel map.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional

import torch
from torch import nn

from .._validation import check_groups
from ..engine.core import autocast_inputs, gather_gemm_scatter
from ..engine.kmap import KernelMapKey
from ..nn.functional._checks import check_bias, check_dtype_device
from ._spconv_core import (
    SparseConvTensor,
    SparseModule,
    _check_ndim,
    describe_layer,
    expand_nd,
    lift,
    same_sites,
)
from ._spconv_registry import lookup_inverse, lookup_or_register

MAX_NUM_VOXELS_BUFFER = "max_num_voxels_during_training"


def _is_no_activation(act_type) -> bool:
    return act_type is None or str(act_type).split(".")[-1] in ("None_", "None", "none")


def _check_positive(name: str, values: List[int], minimum: int) -> None:
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {values}")


class SparseConvolution(SparseModule):
    """spconv 2.x's convolution layer (base of every ``SparseConv*d``, ``SubMConv*d``,
    ``SparseConvTranspose*d`` and ``SparseInverseConv*d``).

    Semantics (checked against spconv 2.3.8's CPU build):

    * regular (``subm=False``): ``out[o] = b + sum_t W[:, t, :] x[o*s - p + t*d]`` (``F.conv3d``
      on the dense grid), at every output site whose window holds an active input; output grid
      ``(n + 2p - d(k-1) - 1) // s + 1``.
    * submanifold (``subm=True``): outputs exactly at the input sites, centre-aligned odd kernel
      (``F.conv3d(padding=d(k-1)/2)`` read at the input sites). ``stride`` and ``padding`` have no
      effect, as in spconv (a ``stride`` other than 1 warns); even kernels are rejected, as spconv
      rejects them.
    * transposed: ``x[i]`` writes ``out[i*s - p + t]`` (``F.conv_transpose3d``, weight read as
      ``W.permute(-1, 0, 1, .., ndim)``); output grid ``(n-1)s - 2p + k + output_padding``.
    * inverse: the map of the strided layer registered under ``indice_key``, transposed, so the
      output lands exactly on that layer's input sites (with its indices and spatial shape).
    * kernel volume 1 with stride 1 (any kind but inverse): spconv computes
      ``features @ weight.reshape(in_channels, out_channels)`` and keeps the input sites; so does
      this layer, so 1x1 weights trained with spconv give the same outputs. (With
      ``groups > 1``, which spconv does not have, the weight is read in its declared layout.)

    ``indice_key`` follows spconv: a submanifold layer reuses the map registered under its key
    (after checking kernel, dilation and sites agree); a regular, transposed or pooling layer
    registers its map; an inverse layer looks it up. Misuse raises ``ValueError`` naming both
    layers (see :func:`~sparseconv.compat._spconv_registry.lookup_or_register`).

    ``groups`` (not supported by spconv) is supported, with weight ``[out, *k, in / groups]``.
    ``algo``, ``fp32_accum`` and ``large_kernel_fast_algo`` are spconv GPU performance hints:
    accepted, and without effect on any result. Fused activations (``act_type``) are not supported.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        subm: bool = False,
        output_padding=0,
        transposed: bool = False,
        inverse: bool = False,
        indice_key: Optional[str] = None,
        algo=None,
        fp32_accum: Optional[bool] = None,
        record_voxel_count: bool = False,
        act_type=None,
        act_alpha: float = 0,
        act_beta: float = 0,
        large_kernel_fast_algo: bool = False,
        name: Optional[str] = None,
        device=None,
        dtype=None,
    ):
        super().__init__(name=name)
        _check_ndim(ndim)
        in_channels, out_channels, groups = check_groups(in_channels, out_channels, groups)
        if not _is_no_activation(act_type):
            raise NotImplementedError(
                f"fused activation act_type={act_type} is an inference-only spconv GPU feature that sparseconv's "
                "compat layer does not implement; apply the activation as a separate module"
            )
        self.ndim = ndim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = expand_nd(ndim, kernel_size, "kernel_size")
        self.stride = expand_nd(ndim, stride, "stride")
        self.padding = expand_nd(ndim, padding, "padding")
        self.dilation = expand_nd(ndim, dilation, "dilation")
        self.output_padding = expand_nd(ndim, output_padding, "output_padding")
        _check_positive("kernel_size", self.kernel_size, 1)
        _check_positive("stride", self.stride, 1)
        _check_positive("padding", self.padding, 0)
        _check_positive("dilation", self.dilation, 1)
        _check_positive("output_padding", self.output_padding, 0)
        self.groups = groups
        self.subm = bool(subm)
        self.transposed = bool(transposed)
        self.inverse = bool(inverse)
        self.indice_key = indice_key
        self.algo = algo
        self.fp32_accum = fp32_accum
        self.large_kernel_fast_algo = large_kernel_fast_algo
        self.record_voxel_count = record_voxel_count
        self.act_type = act_type
        self.act_alpha = act_alpha
        self.act_beta = act_beta
        kernel_volume = math.prod(self.kernel_size)
        self.conv1x1 = kernel_volume == 1 and (self.subm or all(s == 1 for s in self.stride))
        kind = "submanifold" if self.subm else "inverse" if self.inverse else "transposed" if self.transposed else "regular"
        if self.subm:
            if any(k % 2 == 0 for k in self.kernel_size):
                raise ValueError(
                    f"submanifold convolution needs an odd kernel_size on every axis, got {self.kernel_size} "
                    "(spconv 2.x rejects even kernels too; sparseconv.nn.SubMConv3d supports them)"
                )
            if any(s != 1 for s in self.stride):
                warnings.warn(
                    f"SubMConv{ndim}d ignores stride={self.stride}: a submanifold convolution keeps the input sites "
                    "(spconv 2.x ignores it too). Use SparseConv for a strided convolution",
                    stacklevel=3,
                )
        if self.inverse:
            if indice_key is None:
                raise ValueError("SparseInverseConv needs the indice_key of the strided layer it inverts")
            if kernel_volume == 1:
                raise NotImplementedError(
                    "SparseInverseConv with kernel_size 1: spconv 2.x runs it as a plain 1x1 convolution on the "
                    "coarse sites and ignores indice_key, so it inverts nothing; not supported. Use kernel_size of "
                    "the strided layer (> 1) or a SubMConv with kernel_size 1"
                )
        if self.conv1x1 and not self.subm and any(p != 0 for p in self.padding):
            raise ValueError(f"a {kind} convolution with kernel_size 1 and stride 1 must have padding 0, got {self.padding}")
        if self.transposed:
            if any(d != 1 for d in self.dilation):
                raise NotImplementedError(
                    f"transposed convolution with dilation={self.dilation}: spconv 2.x's output grid ignores dilation "
                    "(its results are not a dilated transposed convolution), so there is no spconv result to "
                    "reproduce. Use sparseconv.nn.SparseConvTranspose3d for a true dilated transposed convolution"
                )
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= max(s, d):
                    raise ValueError(
                        f"output_padding {self.output_padding} must be smaller than stride {self.stride} or dilation {self.dilation}"
                    )
        elif any(op != 0 for op in self.output_padding):
            raise ValueError(f"output_padding is only meaningful for transposed convolutions, got {self.output_padding}")
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, *self.kernel_size, in_channels // groups, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        if record_voxel_count and not self.subm and not self.inverse:
            self.register_buffer(MAX_NUM_VOXELS_BUFFER, torch.zeros(1, dtype=torch.int32, device=device))
        self.reset_parameters()

    # -- parameters ------------------------------------------------------------------------------
    @property
    def kernel_volume(self) -> int:
        return math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """Kaiming-uniform weight (``a = sqrt(5)``) and uniform bias over ``fan_in = in/groups * K``,
        the scheme of ``torch.nn.Conv3d`` and of spconv 2.x."""
        fan_in = self.in_channels // self.groups * self.kernel_volume
        gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        bound = gain * math.sqrt(3.0 / fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                b = 1.0 / math.sqrt(fan_in)
                self.bias.uniform_(-b, b)

    def core_weight(self) -> torch.Tensor:
        """The weight in the core op's layout ``[K, G, C_in/G, C_out/G]`` (differentiable view)."""
        return self._core_layout(self.weight)

    def _core_layout(self, w: torch.Tensor) -> torch.Tensor:
        if self.conv1x1 and self.groups == 1:
            # spconv 2.x multiplies features by weight.view(in_channels, out_channels) for 1x1 layers.
            return w.reshape(1, 1, self.in_channels, self.out_channels)
        g = self.groups
        return w.reshape(g, self.out_channels // g, self.kernel_volume, self.in_channels // g).permute(2, 0, 3, 1)

    def is_inverseable(self) -> bool:
        return self.indice_key is not None and not self.subm

    def get_max_num_voxels(self) -> Optional[torch.Tensor]:
        return getattr(self, MAX_NUM_VOXELS_BUFFER, None)

    # -- forward ---------------------------------------------------------------------------------
    def _map_key(self) -> KernelMapKey:
        if self.conv1x1:
            return KernelMapKey("submanifold", (1, 1, 1))
        k = lift(self.kernel_size, 1)
        if self.subm:
            return KernelMapKey("submanifold", k, dilation=lift(self.dilation, 1))
        if self.transposed:
            return KernelMapKey(
                "transposed", k, lift(self.stride, 1), lift(self.padding, 0), (1, 1, 1), lift(self.output_padding, 0)
            )
        return KernelMapKey("conv", k, lift(self.stride, 1), lift(self.padding, 0), lift(self.dilation, 1))

    def _checked_parameters(self, feats: torch.Tensor):
        """``(feats, core weight, bias)``, cast as autocast casts ``F.conv3d``'s inputs, after checking
        that weight and bias have their declared shapes and the features' dtype and device (a bias is
        never broadcast, and never changes the output's dtype)."""
        where = f"{describe_layer(self)}: "
        shape = (self.out_channels, *self.kernel_size, self.in_channels // self.groups)
        if not isinstance(self.weight, torch.Tensor) or tuple(self.weight.shape) != shape:
            got = tuple(self.weight.shape) if isinstance(self.weight, torch.Tensor) else type(self.weight).__name__
            raise ValueError(f"{where}weight must have shape [out, *kernel_size, in/groups] = {shape}, got {got}")
        feats, weight, bias = autocast_inputs(feats, self.weight, self.bias)
        check_dtype_device("weight", weight, feats, where)
        check_bias(bias, (self.out_channels,), f"[out_channels={self.out_channels}]", feats, where)
        return feats, self._core_layout(weight), bias

    def _check_input(self, input) -> None:
        if not isinstance(input, SparseConvTensor):
            raise TypeError(f"{describe_layer(self)} expects a SparseConvTensor, got {type(input).__name__}")
        if input.ndim != self.ndim:
            raise ValueError(f"{describe_layer(self)} is {self.ndim}-D but its input has {input.ndim} spatial axes")
        if input.features.dim() != 2 or input.features.shape[1] != self.in_channels:
            raise ValueError(
                f"{describe_layer(self)} expects in_channels={self.in_channels}, input features have shape "
                f"{tuple(input.features.shape)}"
            )

    def forward(self, input: SparseConvTensor, add_input: Optional[SparseConvTensor] = None) -> SparseConvTensor:
        self._check_input(input)
        out_indices = None
        if self.inverse:
            entry = lookup_inverse(input, self, self.indice_key, self.kernel_size, self.ndim)  # type: ignore[arg-type]
            kernel_map = entry.kernel_map.transpose()
            indice_dict = input.indice_dict
            out_indices = entry.indices
        else:
            if self.conv1x1:
                kind, ksize, dilation = "subm", self.kernel_size, [1] * self.ndim
            else:
                kind = "subm" if self.subm else "transposed" if self.transposed else "conv"
                ksize, dilation = self.kernel_size, self.dilation
            kernel_map, indice_dict = lookup_or_register(
                input, self, kind, self._map_key(), self.ndim, ksize, self.stride, self.padding, dilation,
                self.indice_key,
            )
            if kind == "subm":
                out_indices = input.indices
        feats, weight, bias = self._checked_parameters(input._sparse_tensor().feats)
        feats = gather_gemm_scatter(feats, weight, kernel_map)
        if bias is not None:
            feats = feats + bias
        if add_input is not None:
            if not isinstance(add_input, SparseConvTensor) or not same_sites(
                add_input._coordinate_set(), kernel_map.output
            ):
                raise ValueError(f"{describe_layer(self)}: add_input must be a SparseConvTensor on the output sites")
            feats = feats + add_input.features
        out = SparseConvTensor._from_coordinate_set(
            feats, kernel_map.output, self.ndim, indice_dict, like=input, indices=out_indices
        )
        buffer = getattr(self, MAX_NUM_VOXELS_BUFFER, None)
        if buffer is not None and not self.conv1x1:
            with torch.no_grad():
                buffer.clamp_(min=kernel_map.num_outputs)
        return out

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if not self.subm and not self.inverse and any(v != 1 for v in self.stride):
            s += f", stride={self.stride}"
        if not self.subm and not self.inverse and any(v != 0 for v in self.padding):
            s += f", padding={self.padding}"
        if any(v != 1 for v in self.dilation):
            s += f", dilation={self.dilation}"
        if any(v != 0 for v in self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.indice_key is not None:
            s += f", indice_key={self.indice_key!r}"
        return s


def _make(ndim: int, kind: str):
    """Build the public ``SparseConv{n}d``-style subclasses with spconv's constructor signatures."""

    if kind == "inverse":

        def __init__(self, in_channels, out_channels, kernel_size, indice_key, bias=True, algo=None,
                     fp32_accum=None, large_kernel_fast_algo=False, name=None):
            SparseConvolution.__init__(
                self, ndim, in_channels, out_channels, kernel_size, bias=bias, inverse=True, indice_key=indice_key,
                algo=algo, fp32_accum=fp32_accum, large_kernel_fast_algo=large_kernel_fast_algo, name=name,
            )

    elif kind == "subm":

        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, indice_key=None, algo=None, fp32_accum=None, large_kernel_fast_algo=False, name=None):
            SparseConvolution.__init__(
                self, ndim, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, True,
                indice_key=indice_key, algo=algo, fp32_accum=fp32_accum,
                large_kernel_fast_algo=large_kernel_fast_algo, name=name,
            )

    else:
        transposed = kind == "transposed"

        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, indice_key=None, algo=None, fp32_accum=None, record_voxel_count=False,
                     large_kernel_fast_algo=False, name=None, output_padding=0):
            SparseConvolution.__init__(
                self, ndim, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                output_padding=output_padding, transposed=transposed, indice_key=indice_key, algo=algo,
                fp32_accum=fp32_accum, record_voxel_count=record_voxel_count,
                large_kernel_fast_algo=large_kernel_fast_algo, name=name,
            )

    return __init__


class SparseConv1d(SparseConvolution):
    __init__ = _make(1, "conv")


class SparseConv2d(SparseConvolution):
    __init__ = _make(2, "conv")


class SparseConv3d(SparseConvolution):
    """spconv ``SparseConv3d(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
    indice_key=None, ...)``: a regular sparse convolution; registers its map under ``indice_key``
    so a :class:`SparseInverseConv3d` of the same key can return to its input sites."""

    __init__ = _make(3, "conv")


class SubMConv1d(SparseConvolution):
    __init__ = _make(1, "subm")


class SubMConv2d(SparseConvolution):
    __init__ = _make(2, "subm")


class SubMConv3d(SparseConvolution):
    """spconv ``SubMConv3d(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
    indice_key=None, ...)``: submanifold convolution (output at the input sites; odd kernels;
    ``stride``/``padding`` without effect, as in spconv). Layers sharing ``indice_key`` share one map."""

    __init__ = _make(3, "subm")


class SparseConvTranspose1d(SparseConvolution):
    __init__ = _make(1, "transposed")


class SparseConvTranspose2d(SparseConvolution):
    __init__ = _make(2, "transposed")


class SparseConvTranspose3d(SparseConvolution):
    """spconv ``SparseConvTranspose3d(in, out, kernel_size, stride=1, padding=0, dilation=1, ...)``:
    generative transposed convolution (new sites). ``output_padding`` (keyword) extends the grid as
    in ``nn.ConvTranspose3d``; ``dilation`` other than 1 is not supported (see :class:`SparseConvolution`)."""

    __init__ = _make(3, "transposed")


class SparseInverseConv1d(SparseConvolution):
    __init__ = _make(1, "inverse")


class SparseInverseConv2d(SparseConvolution):
    __init__ = _make(2, "inverse")


class SparseInverseConv3d(SparseConvolution):
    """spconv ``SparseInverseConv3d(in, out, kernel_size, indice_key, bias=True, ...)``: inverts the
    strided conv or pooling registered under ``indice_key`` (same kernel_size), returning to its
    input sites, indices and spatial shape."""

    __init__ = _make(3, "inverse")


def _unsupported_4d(name: str):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{name}: 4-D sparse convolution is not supported by sparseconv's compat layer")

    return __init__


class SparseConv4d(SparseConvolution):
    __init__ = _unsupported_4d("SparseConv4d")


class SubMConv4d(SparseConvolution):
    __init__ = _unsupported_4d("SubMConv4d")


class SparseConvTranspose4d(SparseConvolution):
    __init__ = _unsupported_4d("SparseConvTranspose4d")


class SparseInverseConv4d(SparseConvolution):
    __init__ = _unsupported_4d("SparseInverseConv4d")
