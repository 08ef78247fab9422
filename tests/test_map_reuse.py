"""Kernel maps are built once per coordinate set and kernel geometry, however many layers use them."""
import torch
from torch import nn

import sparseconv.nn as snn
from sparseconv.testing import random_sparse_tensor


class UNet(nn.Module):
    """Two levels, two submanifold convs per level: 4 distinct maps (SubM k3 at both levels, the
    strided conv, and the inverse conv reusing the strided map)."""

    def __init__(self, c=8):
        super().__init__()
        self.enc = nn.Sequential(snn.SubMConv3d(4, c, 3), snn.ReLU(), snn.SubMConv3d(c, c, 3), snn.ReLU())
        self.down = snn.SparseConv3d(c, 2 * c, 2, stride=2)
        self.mid = nn.Sequential(snn.SubMConv3d(2 * c, 2 * c, 3), snn.ReLU(), snn.SubMConv3d(2 * c, 2 * c, 3))
        self.up = snn.SparseInverseConv3d(2 * c, c, 2, stride=2)
        self.dec = nn.Sequential(snn.SubMConv3d(2 * c, c, 3), snn.ReLU(), snn.SubMConv3d(c, 3, 3))

    def forward(self, x):
        skip = self.enc(x)
        coarse = self.mid(self.down(skip))
        up = self.up(coarse)
        return self.dec(up.replace(torch.cat([up.feats, skip.feats], 1))), coarse


def test_unet_forward_builds_each_distinct_map_once():
    x = random_sparse_tensor((12, 12, 12), 4, batch_size=2, density=0.2, dtype=torch.float32, seed=3)
    model = UNet()
    out, coarse = model(x)
    fine_set, coarse_set = x.coordinate_set, coarse.coordinate_set
    assert out.coordinate_set is fine_set
    # fine: SubM k3 and the strided k2 map (the inverse conv reuses it); coarse: SubM k3
    assert fine_set.kernel_map_builds == 2
    assert coarse_set.kernel_map_builds == 1
    assert {key.kind for key in fine_set.cached_kernel_maps()} == {"submanifold", "conv"}
    # a second forward on the same coordinates (new features) builds nothing
    model(x.replace(torch.randn_like(x.feats)))
    assert fine_set.kernel_map_builds == 2 and coarse_set.kernel_map_builds == 1
    # backward uses the same maps
    out.feats.sum().backward()
    assert fine_set.kernel_map_builds == 2 and coarse_set.kernel_map_builds == 1
