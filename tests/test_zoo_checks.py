"""check_dense_equivalence knows the twin of every op, the deformable and dynamic ones included."""
import pytest
import torch

import sparseconv.nn as snn
from sparseconv.testing import check_dense_equivalence, dense_twin, random_sparse_tensor


@pytest.mark.parametrize("make", [
    lambda: snn.SubMDeformConv3d(4, 6, 3, modulated=True),
    lambda: snn.SparseDeformConv3d(4, 6, 3, 2, 1, offset_groups=2),
    lambda: snn.SparseDynamicConv3d(4, 6, 3, 3, submanifold=True),
    lambda: snn.SparseCondConv3d(4, 6, 3, 2, stride=2),
    lambda: snn.SparseODConv3d(4, 6, 3, 2, submanifold=True),
])
def test_deformable_and_dynamic_ops_need_no_dense_fn(make):
    torch.manual_seed(0)
    m = make().double()
    if hasattr(m, "offset_conv"):
        torch.nn.init.normal_(m.offset_conv.weight, std=0.3)  # fractional offsets
    x = random_sparse_tensor((7, 6, 8), 4, batch_size=2, density=0.3, seed=1)
    report = check_dense_equivalence(m, x)
    assert report.passed, report.failures
    assert report.sites_match and "weight" in report.gradient_errors


def test_a_module_without_a_twin_is_named():
    x = random_sparse_tensor((4, 4, 4), 2, seed=0)
    with pytest.raises(TypeError, match="no built-in dense twin for Sequential; pass dense_fn="):
        dense_twin(torch.nn.Sequential(snn.SubMConv3d(2, 2, 3)), x)
