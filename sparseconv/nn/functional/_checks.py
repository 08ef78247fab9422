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
    if weight.dtype != input.dtype:
        raise TypeError(f"input features are {input.dtype} but weight is {weight.dtype}")
    if weight.device != input.device:
        raise ValueError(f"input features are on {input.device} but weight is on {weight.device}")
    if bias is not None:
        expected = (*lead, out_channels)
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != expected:
            got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            want = f"[B={lead[0]}, C_out={out_channels}]" if per_sample else f"[C_out={out_channels}]"
            raise ValueError(f"bias must have shape {want}, got {got}")
        if bias.dtype != input.dtype:
            raise TypeError(f"input features are {input.dtype} but bias is {bias.dtype}")
        if bias.device != input.device:
            raise ValueError(f"input features are on {input.device} but bias is on {bias.device}")
    return groups


def autocast_conv_inputs(input: SparseTensor, weight: torch.Tensor, *others):
    """Inside ``torch.autocast``: the input's features, the weight and ``others`` (bias, offsets, ...)
    in the autocast dtype, as autocast treats ``F.conv3d``; everything unchanged outside it."""
    check_input(input)
    feats, weight, *others = autocast_inputs(input.feats, weight, *others)
    if feats is not input.feats:
        input = input.replace(feats)
    return (input, weight, *others)
