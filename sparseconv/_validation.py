"""Argument checks shared by every stage: one place that turns bad input into a clear error."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

IntOrTriple = Union[int, Sequence[int]]

# The one dtype table: which torch dtypes count as integer coordinates / indices.
INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def as_int(value, name: str, minimum: Optional[int] = None) -> int:
    """``value`` as a Python int: ints, NumPy integers and one-element tensors (``x.max() + 1``), and
    floats only when integer-valued (``4.0``, never ``3.7``, which would otherwise be truncated
    silently); never a bool."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    if isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        out = int(value)
    elif isinstance(value, (float, np.floating)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    else:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {out}")
    return out


def positive_int(value, name: str) -> int:
    """``value`` as an int ``>= 1`` (see :func:`as_int`)."""
    out = as_int(value, name)
    if out < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return out


def triple(value: IntOrTriple, name: str, minimum: int = 0) -> Tuple[int, int, int]:
    """Normalise an int or a 3-sequence of ints to a tuple of 3 ints, each ``>= minimum``.

    Each entry follows :func:`as_int`: Python and NumPy integers, and integer-valued floats
    (``3.0`` -> ``3``); ``2.5`` is a ``ValueError`` naming ``name``, never truncated. A 1-D
    tensor or NumPy array of 3 entries counts as a sequence.
    """
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim <= 1:
        value = value.tolist()
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a sequence of 3 ints, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        items = (as_int(value, name),) * 3
    elif isinstance(value, (tuple, list, torch.Size)):
        if len(value) != 3:
            raise ValueError(f"{name} must have 3 entries (one per spatial axis), got {len(value)}: {tuple(value)}")
        numbers = (int, float, np.integer, np.floating, torch.Tensor)
        if any(not isinstance(v, numbers) or isinstance(v, (bool, np.bool_)) for v in value):
            raise TypeError(f"{name} must contain ints, got {tuple(value)}")
        items = tuple(as_int(v, name) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a sequence of 3 ints, got {type(value).__name__}")
    for v in items:
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum} on every axis, got {items}")
    return items  # type: ignore[return-value]


def check_groups(in_channels, out_channels, groups) -> Tuple[int, int, int]:
    """``(in_channels, out_channels, groups)`` as positive ints (see :func:`as_int`), with both
    channel counts divisible by ``groups``."""
    in_channels = positive_int(in_channels, "in_channels")
    out_channels = positive_int(out_channels, "out_channels")
    groups = positive_int(groups, "groups")
    if in_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
    return in_channels, out_channels, groups


def number_triple(value, name: str, positive: bool) -> Tuple[float, float, float]:
    """A number or 3 numbers as 3 finite floats, each also ``> 0`` when ``positive``."""
    what = "a positive number or 3 positive numbers" if positive else "a number or 3 numbers"
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = (value, value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) for v in value):
        raise TypeError(f"{name} must contain numbers, got {value!r}")
    out = tuple(float(v) for v in value)
    if positive and not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{name} must be positive and finite on every axis, got {out}")
    if not positive and not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out  # type: ignore[return-value]
