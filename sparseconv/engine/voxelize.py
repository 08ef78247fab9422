"""Points to voxels and back: the entry and exit of every point-cloud network.

* :func:`voxelize` bins world points into a regular grid and reduces the features of
  the points in each voxel (mean, max, sum, first, count) into a
  :class:`~sparseconv.SparseTensor` that remembers ``voxel_size`` and ``origin``.
* :func:`devoxelize` sends voxel features back to the points that produced them
  (nearest: each point reads its own voxel).
* :func:`trilinear_devoxelize` samples voxel features at arbitrary world points by
  trilinear interpolation between voxel centres, treating inactive voxels as zero.

Everything is vectorised torch (sort/unique on packed int64 keys, ``index_add``,
``scatter_reduce``, a hash query); there is no Python loop over points or voxels, and
every feature path is differentiable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .._validation import number_triple, positive_int
from .coordinates import CoordinateSet
from .hashing import check_grid, offset_key, pack_coords, unpack_keys
from .tensor import SparseTensor

__all__ = ["REDUCTIONS", "Voxelization", "voxelize", "devoxelize", "trilinear_devoxelize"]

#: Reductions accepted by :func:`voxelize`.
REDUCTIONS = ("mean", "max", "sum", "first", "count")

# Integer grid coordinates must stay exactly representable in float64 and far from int64
# overflow before they are shifted and packed.
_MAX_GRID_COORD = 2.0**52

ArrayLike = Union[torch.Tensor, np.ndarray]


@dataclass(frozen=True, eq=False)
class Voxelization:
    """Result of :func:`voxelize`.

    Attributes:
        tensor: the voxels as a :class:`~sparseconv.SparseTensor` with ``N`` active sites,
            sorted by ``(batch, x, y, z)``, carrying ``voxel_size`` and ``origin`` so that
            ``tensor.voxel_centers()`` gives world coordinates.
        point_to_voxel: int64 ``[P]``, the row of ``tensor`` each input point fell into,
            ``-1`` for points dropped by ``drop_invalid=True``. For a list of clouds the
            points are numbered in concatenation (list) order.
        num_points: int64 ``[N]``, number of points in each voxel (always ``>= 1``).

    The object unpacks as ``(tensor, point_to_voxel)``::

        st, point_to_voxel = voxelize(points, 0.05)
    """

    tensor: SparseTensor
    point_to_voxel: torch.Tensor
    num_points: torch.Tensor

    def __iter__(self) -> Iterator[object]:
        yield self.tensor
        yield self.point_to_voxel


# -- argument normalisation ---------------------------------------------------------------
def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _check_points(points, name: str) -> torch.Tensor:
    points = _as_tensor(points, name)
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if points.numel() == 0 and points.dim() != 2:
        points = points.reshape(0, 3)
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must have shape [P, 3], got {tuple(points.shape)}")
    return points


def _check_feats(feats, name: str, rows: int, points_name: str) -> torch.Tensor:
    feats = _as_tensor(feats, name)
    if not feats.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {feats.dtype}")
    if feats.dim() != 2:
        raise ValueError(f"{name} must have shape [P, C], got {tuple(feats.shape)}")
    if feats.shape[0] != rows:
        raise ValueError(f"{name} has {feats.shape[0]} rows but {points_name} has {rows} points")
    return feats


def _gather_inputs(points, feats, batch, batch_size):
    """Normalise the single-cloud / list-of-clouds forms to (points, feats, batch, batch_size)."""
    if isinstance(points, (list, tuple)):
        if batch is not None:
            raise ValueError("batch must be None when points is a list of clouds (the list index is the batch)")
        if len(points) == 0:
            raise ValueError("points is an empty list; need at least one non-empty point cloud")
        clouds = [_check_points(p, f"points[{i}]") for i, p in enumerate(points)]
        devices = {c.device for c in clouds}
        if len(devices) > 1:
            raise ValueError(f"every cloud in points must be on one device, got {sorted(map(str, devices))}")
        dtype = clouds[0].dtype
        for c in clouds[1:]:
            dtype = torch.promote_types(dtype, c.dtype)
        if feats is not None:
            if not isinstance(feats, (list, tuple)) or len(feats) != len(clouds):
                raise ValueError(
                    f"feats must be None or a list of {len(clouds)} feature tensors (one per cloud) when points is a list"
                )
            feat_list = [_check_feats(f, f"feats[{i}]", c.shape[0], f"points[{i}]") for i, (f, c) in enumerate(zip(feats, clouds))]
            channels = {f.shape[1] for f in feat_list}
            if len(channels) > 1:
                raise ValueError(f"every entry of feats must have the same number of channels, got {sorted(channels)}")
            fdtype = feat_list[0].dtype
            for f in feat_list[1:]:
                fdtype = torch.promote_types(fdtype, f.dtype)
            feats = torch.cat([f.to(fdtype) for f in feat_list], 0)
        counts = torch.tensor([c.shape[0] for c in clouds], dtype=torch.int64)
        batch = torch.repeat_interleave(torch.arange(len(clouds)), counts).to(clouds[0].device)
        pts = torch.cat([c.to(dtype) for c in clouds], 0)
        if batch_size is None:
            batch_size = len(clouds)
        elif batch_size < len(clouds):
            raise ValueError(f"batch_size ({batch_size}) is smaller than the number of clouds ({len(clouds)})")
        return pts, feats, batch, batch_size

    pts = _check_points(points, "points")
    if feats is not None:
        if isinstance(feats, (list, tuple)):
            raise ValueError("feats may be a list only when points is a list of clouds")
        feats = _check_feats(feats, "feats", pts.shape[0], "points")
    P = pts.shape[0]
    if batch is None:
        batch = torch.zeros(P, dtype=torch.int64, device=pts.device)
        max_batch = 0
    else:
        batch = _as_tensor(batch, "batch")
        if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
            raise TypeError(f"batch must be an integer tensor, got {batch.dtype}")
        if batch.dim() != 1 or batch.shape[0] != P:
            raise ValueError(f"batch must have shape [P] = [{P}] (one index per point), got {tuple(batch.shape)}")
        batch = batch.to(device=pts.device, dtype=torch.int64)
        min_batch, max_batch = torch.stack((batch.min(), batch.max())).tolist() if P else (0, 0)  # one sync
        if min_batch < 0:
            raise ValueError(f"batch must be non-negative, got minimum {min_batch}")
    if batch_size is None:
        batch_size = max_batch + 1
    elif batch_size <= max_batch:
        raise ValueError(f"batch_size ({batch_size}) must exceed every batch index (max {max_batch})")
    return pts, feats, batch, batch_size


# -- voxelize ------------------------------------------------------------------------------
def voxelize(
    points: Union[ArrayLike, Sequence[ArrayLike]],
    voxel_size: Union[float, Sequence[float]],
    feats: Union[None, ArrayLike, Sequence[ArrayLike]] = None,
    batch: Optional[ArrayLike] = None,
    reduce: str = "mean",
    origin: Union[None, float, Sequence[float]] = None,
    drop_invalid: bool = False,
    *,
    batch_size: Optional[int] = None,
    align: int = 1,
) -> Voxelization:
    r"""Bin points into voxels and reduce the features of the points in each voxel.

    A point :math:`p` of batch entry :math:`b` falls into the voxel

    .. math::
        v(p) = \left\lfloor \frac{p - o}{s} \right\rfloor \in \mathbb{Z}^3

    with ``o = origin`` and ``s = voxel_size`` (per axis), so the grid is aligned to
    ``origin`` (default: the world origin). The integer coordinates are then shifted by
    ``m = min_p v(p)`` (per axis, over the whole batch; rounded down to a multiple of
    ``align``) so that they start at 0 (or just above); the
    returned tensor has ``coords = (b, v - m)``, ``spatial_shape = max(v - m) + 1``,
    ``voxel_size = s`` and ``origin = o + m * s``, so ``tensor.voxel_centers()`` is the
    true world centre :math:`o + (v + 1/2) s` of every voxel.

    For a voxel :math:`V` holding the points :math:`\{p_i\}_{i \in V}` with features
    :math:`f_i`, the output feature is, column by column,

    * ``"mean"``: :math:`\frac{1}{|V|}\sum_{i \in V} f_i`
    * ``"max"``: :math:`\max_{i \in V} f_i`
    * ``"sum"``: :math:`\sum_{i \in V} f_i`
    * ``"first"``: :math:`f_{\min V}`, the feature of the first point (input order) in V
    * ``"count"``: :math:`|V|` as a single float column (``feats`` values are ignored)

    Args:
        points: float ``[P, 3]`` world coordinates (torch tensor or numpy array), or a
            list/tuple of such clouds, one per batch entry (entries may be empty,
            e.g. ``torch.empty(0, 3)``); the list index is the batch index.
        voxel_size: positive voxel edge length, one number or one per axis ``(sx, sy, sz)``.
        feats: float ``[P, C]`` point features (a list of ``[P_i, C]`` when ``points`` is a
            list). When ``None`` the features are a single column of ones (in the dtype of
            ``points``), so ``reduce="sum"`` counts points and ``"mean"`` gives ones.
        batch: int ``[P]`` batch index of every point (alternative to a list of clouds);
            default all zeros.
        reduce: one of ``"mean"``, ``"max"``, ``"sum"``, ``"first"``, ``"count"``.
        origin: world position of the min corner of grid cell ``(0, 0, 0)`` before the
            shift, a number or 3 numbers; default ``(0, 0, 0)``.
        drop_invalid: drop points with a NaN or infinite coordinate instead of raising;
            they get ``point_to_voxel = -1``.
        batch_size: number of batch entries of the output (keyword only); default the
            number of clouds (list input) or ``max(batch) + 1``. Larger values add empty
            batch entries.
        align: the shift ``m`` is rounded down to a multiple of ``align`` per axis (keyword
            only; default 1, no rounding). Give a network's total stride (16 for MinkUNet) so
            that its strided convs cut the world into the same coarse cells whatever else is in
            the batch: a scan then gets the same result alone as batched with others (as on
            the processes of a distributed run).

    Returns:
        Voxelization: ``tensor`` (:class:`~sparseconv.SparseTensor` with ``N`` sites sorted by
        ``(batch, x, y, z)``, features ``[N, C]`` in the dtype of ``feats``, ``[N, 1]`` for
        ``"count"``), ``point_to_voxel`` (int64 ``[P]``) and ``num_points`` (int64 ``[N]``).
        It unpacks as ``st, point_to_voxel = voxelize(...)``.

    The features are differentiable for ``"mean"``, ``"sum"``, ``"max"`` (ties share the
    gradient, as in :func:`torch.Tensor.scatter_reduce`) and ``"first"``.

    Raises:
        TypeError: ``points``/``feats`` not floating point, ``batch`` not integer, or not
            tensors/arrays.
        ValueError: ``points`` not ``[P, 3]``; ``points`` NaN or infinite (without
            ``drop_invalid``); ``voxel_size`` not positive and finite; unknown ``reduce``;
            ``feats`` rows differ from ``points`` rows; ``batch`` negative or of the wrong
            length; no (valid) points at all; a grid too large to index.
    """
    if not isinstance(reduce, str) or reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    size = number_triple(voxel_size, "voxel_size", positive=True)
    origin_t = (0.0, 0.0, 0.0) if origin is None else number_triple(origin, "origin", positive=False)
    align = positive_int(align, "align")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")

    pts, feats, batch, batch_size = _gather_inputs(points, feats, batch, batch_size)
    P = pts.shape[0]
    device = pts.device
    if P == 0:
        raise ValueError("points is empty: every point cloud has 0 points")
    if feats is not None and feats.device != device:
        raise ValueError(f"feats is on {feats.device} but points is on {device}")

    # Grid coordinates in float64 so that the binning agrees with voxel_centers() (float64).
    size64 = torch.tensor(size, dtype=torch.float64, device=device)
    origin64 = torch.tensor(origin_t, dtype=torch.float64, device=device)
    grid = torch.floor((pts.detach().to(torch.float64) - origin64) / size64)

    finite = torch.isfinite(grid).all(1)
    all_finite = bool(finite.all())
    if not all_finite:
        if not drop_invalid:
            bad = torch.isfinite(pts).all(1).logical_not().nonzero()
            row = int(bad[0]) if bad.numel() else int(finite.logical_not().nonzero()[0])
            raise ValueError(
                f"points contain NaN or infinite values ({int((~finite).sum())} rows, first at row {row}: "
                f"{pts[row].tolist()}); pass drop_invalid=True to drop them"
            )
        keep = finite.nonzero().squeeze(1)
        if keep.numel() == 0:
            raise ValueError("points has no valid points: every point is NaN or infinite")
        grid = grid.index_select(0, keep)
        batch = batch.index_select(0, keep)
    else:
        keep = None

    icoords = grid.to(torch.int64)
    shift = torch.div(icoords.min(0).values, align, rounding_mode="floor") * align
    icoords = icoords - shift
    # One device-to-host sync for what the host needs of the grid: its reach (range check), the
    # origin shift and the spatial shape (integers below 2^52: exact in float64).
    reach, *extent = torch.cat((grid.abs().max().reshape(1), shift.double(), icoords.max(0).values.double())).tolist()
    if reach >= _MAX_GRID_COORD:
        raise ValueError(
            f"points are too far from origin for voxel_size {size} (grid coordinate beyond 2^52); "
            "use a larger voxel_size or a nearer origin"
        )
    shift_list = [int(v) for v in extent[:3]]
    spatial_shape = tuple(int(v) + 1 for v in extent[3:])
    try:
        check_grid(spatial_shape, batch_size)
    except ValueError as error:
        raise ValueError(f"points span a grid of {spatial_shape} voxels, too large to index ({error}); "
                         "use a larger voxel_size") from None

    keys = pack_coords(torch.cat((batch.unsqueeze(1), icoords), 1))
    ukeys, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    N = ukeys.numel()

    # -- reduction ---------------------------------------------------------------------
    if feats is None or reduce == "count":
        dtype = feats.dtype if feats is not None else pts.dtype
        if reduce in ("count", "sum"):
            out = counts.to(dtype).unsqueeze(1)
        else:  # mean / max / first of a column of ones
            out = torch.ones(N, 1, dtype=dtype, device=device)
    else:
        f = feats if keep is None else feats.index_select(0, keep)
        C = f.shape[1]
        if reduce in ("sum", "mean"):
            out = f.new_zeros(N, C).index_add(0, inverse, f)
            if reduce == "mean":
                out = out / counts.to(f.dtype).unsqueeze(1)
        elif reduce == "max":
            index = inverse.unsqueeze(1).expand(-1, C)
            out = f.new_zeros(N, C).scatter_reduce(0, index, f, "amax", include_self=False)
        else:  # first
            order = torch.arange(inverse.numel(), device=device)
            first = torch.full((N,), inverse.numel(), dtype=torch.int64, device=device)
            first = first.scatter_reduce(0, inverse, order, "amin", include_self=True)
            out = f.index_select(0, first)

    coords = unpack_keys(ukeys)
    new_origin = tuple(o + m * s for o, m, s in zip(origin_t, shift_list, size))
    cset = CoordinateSet(coords, spatial_shape, batch_size, size, new_origin)
    tensor = SparseTensor.from_coordinate_set(out, cset)

    if keep is None:
        point_to_voxel = inverse
    else:
        point_to_voxel = torch.full((P,), -1, dtype=torch.int64, device=device)
        point_to_voxel[keep] = inverse
    return Voxelization(tensor=tensor, point_to_voxel=point_to_voxel, num_points=counts)


# -- devoxelize ----------------------------------------------------------------------------
def devoxelize(st: SparseTensor, point_to_voxel: ArrayLike) -> torch.Tensor:
    r"""Nearest devoxelization: every point takes the feature of its own voxel.

    .. math::
        \mathrm{out}_i = \begin{cases} \mathrm{st.feats}[\,r_i\,] & r_i \ge 0 \\ 0 & r_i = -1 \end{cases}
        \qquad r = \texttt{point\_to\_voxel}

    This is the adjoint of ``voxelize(..., reduce="sum")`` and the inverse of
    ``reduce="first"`` on the points that were kept.

    Args:
        st: the voxels, e.g. ``voxelize(...).tensor`` or any tensor on the same sites.
        point_to_voxel: int ``[P]`` rows of ``st`` (``-1`` for dropped points), e.g.
            ``voxelize(...).point_to_voxel``.

    Returns:
        Tensor ``[P, C]`` in the dtype of ``st.feats``; differentiable w.r.t. ``st.feats``.

    Raises:
        TypeError: ``st`` not a SparseTensor or ``point_to_voxel`` not integer.
        ValueError: ``point_to_voxel`` not 1-D or holding rows outside ``[-1, N)``.
    """
    if not isinstance(st, SparseTensor):
        raise TypeError(f"st must be a SparseTensor, got {type(st).__name__}")
    p2v = _as_tensor(point_to_voxel, "point_to_voxel")
    if p2v.is_floating_point() or p2v.is_complex() or p2v.dtype == torch.bool:
        raise TypeError(f"point_to_voxel must be an integer tensor, got {p2v.dtype}")
    if p2v.dim() != 1:
        raise ValueError(f"point_to_voxel must have shape [P], got {tuple(p2v.shape)}")
    p2v = p2v.to(device=st.device, dtype=torch.int64)
    N = len(st)
    if p2v.numel() and (int(p2v.min()) < -1 or int(p2v.max()) >= N):
        raise ValueError(
            f"point_to_voxel must hold rows in [-1, {N}) of st, got range [{int(p2v.min())}, {int(p2v.max())}]"
        )
    # Row N of the padded features is the zero row that dropped points (-1) read.
    padded = torch.cat((st.feats, st.feats.new_zeros(1, st.num_channels)), 0)
    return padded.index_select(0, torch.where(p2v < 0, N, p2v))


def trilinear_devoxelize(st: SparseTensor, points: ArrayLike, batch: Optional[ArrayLike] = None) -> torch.Tensor:
    r"""Trilinear interpolation of voxel features at arbitrary world points.

    The features are taken as samples at the voxel centres
    :math:`c_v = o + (v + 1/2) s` (``o = st.origin``, ``s = st.voxel_size``) of a grid that
    is zero at every inactive voxel and outside ``st.spatial_shape``. A point :math:`p` of
    batch entry :math:`b` has continuous grid position :math:`u = (p - o)/s - 1/2`; with
    :math:`u_0 = \lfloor u \rfloor` and :math:`t = u - u_0`,

    .. math::
        \mathrm{out}(p) = \sum_{\delta \in \{0,1\}^3}
            \Big(\prod_{a=1}^{3} t_a^{\delta_a} (1 - t_a)^{1-\delta_a}\Big)\,
            F_b[u_0 + \delta],

    where :math:`F_b[v]` is the feature of the active site ``(b, v)`` and 0 otherwise.
    This equals ``torch.nn.functional.grid_sample(st.dense(), ..., mode="bilinear",
    padding_mode="zeros", align_corners=True)`` on the dense grid of voxel centres, but
    the 8 corners are found with the coordinate hash, without densifying.

    Args:
        st: a :class:`~sparseconv.SparseTensor` with ``voxel_size`` and ``origin`` set
            (as returned by :func:`voxelize`).
        points: float ``[P, 3]`` world coordinates (tensor or numpy array).
        batch: int ``[P]`` batch index of every point, in ``[0, st.batch_size)``;
            default all zeros.

    Returns:
        Tensor ``[P, C]`` in the dtype of ``st.feats``. Differentiable w.r.t. ``st.feats``
        (and, almost everywhere, w.r.t. ``points``).

    Raises:
        TypeError: ``st`` not a SparseTensor, ``points`` not floating point, ``batch`` not
            integer.
        ValueError: ``st`` without ``voxel_size``/``origin``; ``points`` not ``[P, 3]`` or
            NaN or infinite; ``batch`` of the wrong length or outside ``[0, batch_size)``.
    """
    if not isinstance(st, SparseTensor):
        raise TypeError(f"st must be a SparseTensor, got {type(st).__name__}")
    if st.voxel_size is None or st.origin is None:
        raise ValueError(
            "trilinear_devoxelize needs st.voxel_size and st.origin; build st with voxelize() "
            "or pass voxel_size= and origin= to SparseTensor"
        )
    pts = _check_points(points, "points").to(st.device)
    P = pts.shape[0]
    if P and not bool(torch.isfinite(pts).all()):
        raise ValueError("points contain NaN or infinite values")
    if batch is None:
        batch = torch.zeros(P, dtype=torch.int64, device=st.device)
    else:
        batch = _as_tensor(batch, "batch")
        if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
            raise TypeError(f"batch must be an integer tensor, got {batch.dtype}")
        if batch.dim() != 1 or batch.shape[0] != P:
            raise ValueError(f"batch must have shape [P] = [{P}] (one index per point), got {tuple(batch.shape)}")
        batch = batch.to(device=st.device, dtype=torch.int64)
        if P and (int(batch.min()) < 0 or int(batch.max()) >= st.batch_size):
            raise ValueError(
                f"batch must lie in [0, {st.batch_size}) (st.batch_size), got range [{int(batch.min())}, {int(batch.max())}]"
            )

    N, C = len(st), st.num_channels
    device = st.device
    shape = torch.tensor(st.spatial_shape, dtype=torch.int64, device=device)
    size64 = torch.tensor(st.voxel_size, dtype=torch.float64, device=device)
    origin64 = torch.tensor(st.origin, dtype=torch.float64, device=device)
    u = (pts.to(torch.float64) - origin64) / size64 - 0.5
    # Beyond one cell outside the grid every corner is out of range; clamping there keeps
    # the integer corners small without changing the (zero) result.
    u = torch.maximum(torch.minimum(u, (shape + 1).to(torch.float64)), u.new_full((3,), -2.0))
    u0 = torch.floor(u.detach())
    t = u - u0  # [P, 3], in [0, 1)
    base = u0.to(torch.int64)

    # The 8 corners u0 + delta, delta in {0,1}^3 with x slowest. Per axis: the two corner
    # weights (1 - t, t) and in-range flags; their outer products give [P, 8].
    w_axis = torch.stack((1.0 - t, t), 2)  # [P, 3, 2]
    ends = torch.stack((base, base + 1), 2)  # [P, 3, 2]
    in_axis = (ends >= 0) & (ends < shape.view(1, 3, 1))
    weights = (w_axis[:, 0, :, None, None] * w_axis[:, 1, None, :, None] * w_axis[:, 2, None, None, :]).reshape(P, 8)
    inside = (in_axis[:, 0, :, None, None] & in_axis[:, 1, None, :, None] & in_axis[:, 2, None, None, :]).reshape(P, 8)

    # Packed keys are linear in the coordinates, so corner keys are the base key plus a
    # fixed offset (meaningful only where the corner is inside the grid).
    base_key = pack_coords(torch.cat((batch.unsqueeze(1), base), 1))
    corner_step = torch.tensor(
        [offset_key(dx, dy, dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)], device=device
    )
    corner_keys = base_key.unsqueeze(1) + corner_step  # [P, 8]

    rows = torch.full((P, 8), N, dtype=torch.int64, device=device)  # row N = the zero row
    if N and P:
        found = st.coordinate_set.hash_table.query(corner_keys[inside])
        rows[inside] = torch.where(found < 0, N, found)

    padded = torch.cat((st.feats, st.feats.new_zeros(1, C)), 0)
    gathered = padded.index_select(0, rows.reshape(-1)).view(P, 8, C)
    return torch.bmm(weights.to(st.dtype).unsqueeze(1), gathered).squeeze(1)
