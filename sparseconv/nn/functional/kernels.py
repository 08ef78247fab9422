"""Stateless kernel algebra for the variant zoo: kernels built from other kernels, then run as one
ordinary sparse convolution on the core op (no second compute path).

* :func:`embed_kernel`: a smaller kernel placed at the centre of a larger one (``k x 1 x 1`` or
  ``1 x 1 x 1`` inside ``k x k x k``), so branches of different shapes add up to one kernel;
* :func:`fold_batchnorm`: ``BN(conv(x))`` in eval mode as one conv (weight and bias);
* :func:`compose_axis_kernels`: the kernel of the chain ``k x 1 x 1 -> 1 x k x 1 -> 1 x 1 x k``
  (contracted over the middle channels);
* :func:`flattened_kernel`: pointwise then three depthwise axis kernels as one kernel
  (a per-channel outer product);
* :func:`kernel_footprint` and :func:`central_difference_weight`: CDC's weight transformation.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..._validation import IntOrTriple, triple

FOOTPRINTS = ("full", "cross", "diagonal")


def embed_kernel(weight: torch.Tensor, kernel_size: IntOrTriple) -> torch.Tensor:
    """``weight [C_out, C_in/G, a, b, c]`` zero-padded to ``kernel_size``, centred as a submanifold
    ('same') conv centres it: tap ``t`` of an axis of size ``a`` moves to ``t + (k-1)//2 - (a-1)//2``.

    Exact for submanifold convolutions when ``k - a`` is even on every axis (both centres then sit on
    the same voxel offset); a ValueError names the axis otherwise.
    """
    target = triple(kernel_size, "kernel_size", 1)
    pads = []
    for axis, (k, a) in enumerate(zip(target, weight.shape[2:])):
        if a > k or (k - a) % 2:
            raise ValueError(
                f"cannot centre a kernel of size {a} inside {k} on axis {axis}: needs a <= k and k - a even"
            )
        pads.append(((k - a) // 2, (k - a) // 2))
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad order: last axis first
    return torch.nn.functional.pad(weight, flat)


def fold_batchnorm(
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: Optional[torch.Tensor],
    beta: Optional[torch.Tensor],
    eps: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``BN(conv(x; weight, bias))`` with BN's running statistics (eval mode) as one conv:

        scale = gamma / sqrt(var + eps);   W' = W * scale[o];   b' = beta + (b - mean) * scale
    """
    scale = running_var.add(eps).rsqrt()
    if gamma is not None:
        scale = scale * gamma
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    if beta is not None:
        shift = shift + beta
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), shift


def compose_axis_kernels(wx: torch.Tensor, wy: torch.Tensor, wz: torch.Tensor) -> torch.Tensor:
    """The kernel of ``conv(wz) o conv(wy) o conv(wx)`` on an unbounded dense grid:

        W[o, i, a, b, c] = sum_{m, n} wz[o, n, 0, 0, c] wy[n, m, 0, b, 0] wx[m, i, a, 0, 0]

    ``wx [M, C_in, k, 1, 1]``, ``wy [N, M, 1, k, 1]``, ``wz [C_out, N, 1, 1, k]`` (groups 1).
    """
    return torch.einsum("onc,nmb,mia->oiabc", wz[:, :, 0, 0, :], wy[:, :, 0, :, 0], wx[:, :, :, 0, 0])


def flattened_kernel(pointwise: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor, uz: torch.Tensor) -> torch.Tensor:
    """Flattened convolution's kernel: a pointwise ``[C_out, C_in, 1, 1, 1]`` then depthwise axis kernels
    ``ux [C_out, 1, k, 1, 1]``, ``uy [C_out, 1, 1, k, 1]``, ``uz [C_out, 1, 1, 1, k]`` as one kernel,
    the outer product ``W[o, i, a, b, c] = P[o, i] ux[o, a] uy[o, b] uz[o, c]``."""
    return torch.einsum(
        "oi,oa,ob,oc->oiabc", pointwise[:, :, 0, 0, 0], ux[:, 0, :, 0, 0], uy[:, 0, 0, :, 0], uz[:, 0, 0, 0, :]
    )


def kernel_footprint(kernel_size: IntOrTriple, footprint: str, device=None) -> torch.Tensor:
    """Bool mask ``[kD, kH, kW]`` of the taps a footprint keeps, by offset ``u = t - (k-1)/2``
    from the centre (odd kernels):

    * ``"full"``: every tap;
    * ``"cross"``: the centre and the taps on the three axes (at most one ``u`` nonzero);
    * ``"diagonal"``: the centre and the taps on the four space diagonals (``|u_x| = |u_y| = |u_z|``).
    """
    kernel3 = triple(kernel_size, "kernel_size", 1)
    if footprint not in FOOTPRINTS:
        raise ValueError(f"footprint must be one of {FOOTPRINTS}, got {footprint!r}")
    if any(k % 2 == 0 for k in kernel3):
        raise ValueError(f"a footprint needs an odd kernel_size (a centre tap), got {kernel3}")
    grids = torch.meshgrid(*(torch.arange(k, device=device) - (k - 1) // 2 for k in kernel3), indexing="ij")
    u = torch.stack(grids).abs()
    if footprint == "full":
        return torch.ones(kernel3, dtype=torch.bool, device=device)
    if footprint == "cross":
        return (u != 0).sum(0) <= 1
    return (u[0] == u[1]) & (u[1] == u[2])


def central_difference_weight(weight: torch.Tensor, theta: float) -> torch.Tensor:
    """CDC's kernel ``W'``: ``W`` with ``theta * sum_taps W`` taken off its centre tap (odd kernel), so

        conv(x; W') = conv(x; W) - theta * x(p0) * sum_taps W

    ``weight`` is ``[C_out, C_in/G, kD, kH, kW]``, already masked to its footprint.
    """
    kernel3 = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in kernel3):
        raise ValueError(f"central difference convolution needs an odd kernel_size (a centre tap), got {kernel3}")
    centre = torch.zeros(kernel3, dtype=weight.dtype, device=weight.device)
    centre[tuple((k - 1) // 2 for k in kernel3)] = 1
    return weight - theta * weight.sum((2, 3, 4), keepdim=True) * centre
