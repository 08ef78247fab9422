"""Argument checks of the synthetic generators: errors name the argument and what was expected."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["check_int", "check_float", "check_seed"]


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value, *, minimum: float = -math.inf, strict: bool = False,
                maximum: float = math.inf, strict_max: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    low_bad = v <= minimum if strict else v < minimum
    high_bad = v >= maximum if strict_max else v > maximum
    if low_bad or high_bad:
        lo = "(" if strict else "["
        hi = ")" if strict_max else "]"
        raise ValueError(f"{name} must be in {lo}{minimum}, {maximum}{hi}, got {value!r}")
    return v


def check_seed(seed) -> int:
    return check_int("seed", seed, 0)
