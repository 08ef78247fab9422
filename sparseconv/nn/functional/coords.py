"""CoordConv's input: each active voxel's coordinates appended to its features.

* normalised (default): per axis ``2 c / (n - 1) - 1`` in ``[-1, 1]`` over the sample's grid
  ``spatial_shape = (n_x, n_y, n_z)`` (0 on an axis of one voxel);
* world (``world=True``): the voxel centre ``origin + (c + 1/2) voxel_size`` (needs both);
* ``with_radius``: one more channel, the Euclidean norm of the three appended coordinates.
"""
from __future__ import annotations

import torch

from ...engine.tensor import SparseTensor
from ._checks import check_input


def coordinate_channels(input: SparseTensor, world: bool = False, with_radius: bool = False) -> torch.Tensor:
    """The appended channels ``[N, 3 (+1)]`` in the features' dtype (see the module docstring)."""
    check_input(input)
    if world:
        if input.voxel_size is None or input.origin is None:
            raise ValueError("world=True needs the input's voxel_size and origin (pass them to SparseTensor or voxelize)")
        coords = input.voxel_centers()
    else:
        extent = torch.tensor([max(n - 1, 1) for n in input.spatial_shape], dtype=torch.float64, device=input.device)
        coords = 2 * input.coords[:, 1:].to(torch.float64) / extent - 1
        coords[:, [n == 1 for n in input.spatial_shape]] = 0
    if with_radius:
        coords = torch.cat((coords, coords.norm(dim=1, keepdim=True)), 1)
    return coords.to(input.dtype)


def append_coordinates(input: SparseTensor, world: bool = False, with_radius: bool = False) -> SparseTensor:
    """``input`` with :func:`coordinate_channels` appended after its features (same coordinates)."""
    return input.replace(torch.cat((input.feats, coordinate_channels(input, world, with_radius)), 1))
