"""Check sparse modules against their dense PyTorch twins.

The contract of every op in sparseconv: evaluated at the active output sites, the sparse op
equals its dense twin on ``x.dense()``, forward and backward. One module per concern:

* :mod:`.grids`: seeded random sparse inputs, occupancy / reach masks, geometry helpers;
* :mod:`.plain`: twins of the plain convolutions and poolings;
* :mod:`.deform_dynamic`: dense deformable and per-sample (dynamic) convolutions;
* :mod:`.zoo`: twins of the variant zoo (separable, re-parameterised, central difference,
  CoordConv, involution, octave);
* :mod:`.equivalence`: :func:`dense_twin` (the twin of any spatial module) and
  :func:`check_dense_equivalence`.

>>> report = check_dense_equivalence(SparseConv3d(4, 8, 3, stride=2).double(), x.to(torch.float64))
>>> assert report.passed, report
"""
from .deform_dynamic import (
    deform_dense_twin,
    dense_deform_conv3d,
    dense_dynamic_conv3d,
    dense_per_sample_conv3d,
    dynamic_dense_twin,
)
from .equivalence import EquivalenceReport, assert_dense_equivalent, check_dense_equivalence, dense_twin
from .grids import (  # noqa: F401  (the private helpers are imported by tests under their old path)
    DenseFn,
    _occupancy,
    _reach,
    _same_conv3d,
    dense_same_conv3d,
    random_sparse_tensor,
    sites_to_dense,
)
from .plain import plain_dense_twin
from .zoo import (
    dense_axis_chain,
    dense_central_difference_conv3d,
    dense_coordinate_grid,
    dense_involution3d,
    dense_octave_conv3d,
    zoo_dense_twin,
)

__all__ = [
    "random_sparse_tensor", "sites_to_dense", "dense_same_conv3d", "DenseFn", "dense_twin", "plain_dense_twin", "check_dense_equivalence",
    "assert_dense_equivalent", "EquivalenceReport", "dense_deform_conv3d", "deform_dense_twin",
    "dense_per_sample_conv3d", "dense_dynamic_conv3d", "dynamic_dense_twin", "dense_axis_chain",
    "dense_central_difference_conv3d", "dense_coordinate_grid", "dense_involution3d", "dense_octave_conv3d",
    "zoo_dense_twin",
]
