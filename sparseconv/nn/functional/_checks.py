"""The one set of input checks for the functional ops: turn bad arguments into errors that name them.

Every convolution in :mod:`sparseconv.nn.functional` (plain, transposed, inverse, deformable,
per-sample) validates its input, weight and bias here, so the rules and their messages are the same
everywhere.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..._validation import positive_int
from ...engine.core import autocast_inputs
from ...engine.tensor import SparseTensor


def check_input(input: SparseTensor, name: str = "input") -> None:
    if not isinstance(input, SparseTensor):
        raise TypeError(f"{name} must be a sparseconv.SparseTensor, got {type(input).__name__}")


def check_conv_args(
    input: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    groups: int,
    transposed: bool = False,
    per_sample: bool = False,
) -> int:
    """Check a convolution's arguments against each other; returns ``groups`` as an int.

    ``weight`` is ``nn.Conv3d``'s ``[C_out, C_in/G, kD, kH, kW]``, ``nn.ConvTranspose3d``'s
    ``[C_in, C_out/G, kD, kH, kW]`` (``transposed``), or one ``nn.Conv3d`` weight per batch entry
    ``[B, C_out, C_in/G, kD, kH, kW]`` (``per_sample``). ``bias`` is ``[C_out]`` (``[B, C_out]`` per
    sample) with the features' dtype and device.
    """
    check_input(input)
    groups = positive_int(groups, "groups")
    lead = (input.batch_size,) if per_sample else ()
    layout = "[C_in, C_out/groups, kD, kH, kW]" if transposed else "[C_out, C_in/groups, kD, kH, kW]"
    if per_sample:
        layout = f"[B={input.batch_size}, C_out, C_in/groups, kD, kH, kW] (one kernel per batch entry)"
    if (
        not isinstance(weight, torch.Tensor)
        or weight.dim() != 5 + len(lead)
        or tuple(weight.shape[: len(lead)]) != lead
    ):
        raise ValueError(f"weight must have shape {layout}, got {tuple(getattr(weight, 'shape', ())) or weight!r}")
    first, second = weight.shape[len(lead)], weight.shape[len(lead) + 1]
    if first % groups:
        name = "in_channels" if transposed else "out_channels"
        raise ValueError(f"weight.shape[{len(lead)}] ({name}={first}) must be divisible by groups ({groups})")
    in_channels = first if transposed else second * groups
    out_channels = second * groups if transposed else first
    if input.num_channels != in_channels:
        raise ValueError(f"input has {input.num_channels} channels but the weight expects in_channels={in_channels}")
    check_dtype_device("weight", weight, input.feats)
    want = f"[B={input.batch_size}, C_out={out_channels}]" if per_sample else f"[C_out={out_channels}]"
    check_bias(bias, (*lead, out_channels), want, input.feats)
    return groups


def check_dtype_device(name: str, tensor: torch.Tensor, feats: torch.Tensor, where: str = "") -> None:
    """``tensor`` (a weight, a bias) must have the input features' dtype and device; ``where``
    prefixes the message (a layer's name)."""
    if tensor.dtype != feats.dtype:
        raise TypeError(f"{where}input features are {feats.dtype} but {name} is {tensor.dtype}")
    if tensor.device != feats.device:
        raise ValueError(f"{where}input features are on {feats.device} but {name} is on {tensor.device}")


def check_bias(bias, shape: tuple, shape_text: str, feats: torch.Tensor, where: str = "") -> None:
    """``bias`` is None or a tensor of exactly ``shape`` (``shape_text`` in the message; no
    broadcasting) with the input features' dtype and device."""
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != tuple(shape):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"{where}bias must have shape {shape_text}, got {got}")
    check_dtype_device("bias", bias, feats, where)


def autocast_conv_inputs(input: SparseTensor, weight: torch.Tensor, *others):
    """Inside ``torch.autocast``: the input's features, the weight and ``others`` (bias, offsets, ...)
    in the autocast dtype, as autocast treats ``F.conv3d``; everything unchanged outside it."""
    check_input(input)
    feats, weight, *others = autocast_inputs(input.feats, weight, *others)
    if feats is not input.feats:
        input = input.replace(feats)
    return (input, weight, *others)
