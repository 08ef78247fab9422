"""The SECOND / CenterPoint backbone's bird's-eye-view order (issue 16).

``bev_layout="yx"`` must give exactly what OpenPCDet's ``HeightCompression`` gives for the same
network run through spconv's API: indices ``(b, z, y, x)``, ``dense()`` ``[N, C, D, H, W]`` viewed as
``[N, C * D, H, W]``. The reference here is that network, built layer for layer from
:mod:`sparseconv.compat.spconv` in spconv's axis order with the native model's weights.
"""
import pytest
import torch
from torch import nn

import sparseconv.compat.spconv as spconv
import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.models import SparseVoxelBackbone8x, second_backbone

GRID = (20, 12, 41)  # (X, Y, Z): X != Y, so a transposed map cannot pass; Z = 41 gives D = 2


def _input(batch_size=3, sites=150, channels=3, seed=0):
    """float64 sites in GRID; batch entry 1 is empty."""
    g = torch.Generator().manual_seed(seed)
    X, Y, Z = GRID
    cells = torch.randperm(X * Y * Z, generator=g)[:sites]
    batch = torch.tensor([0, 2])[torch.randint(0, 2, (sites,), generator=g)]
    coords = torch.stack((batch, cells // (Y * Z), cells // Z % Y, cells % Z), 1)
    feats = torch.randn(sites, channels, generator=g, dtype=torch.float64)
    return SparseTensor(feats, coords, GRID, batch_size)


def _small_backbone(**kwargs):
    torch.manual_seed(0)
    model = second_backbone(3, channels=(4, 4, 6, 6, 8), out_channels=5, num_blocks=(1, 1, 1, 1), **kwargs)
    for m in model.modules():  # non-trivial normalisation, so the copy of every BN is tested too
        if isinstance(m, snn.BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.double().eval()


def _zyx(t):
    """A native (x, y, z) triple in spconv's (z, y, x) order."""
    return [t[2], t[1], t[0]]


def _as_openpcdet_spconv(model: SparseVoxelBackbone8x) -> spconv.SparseSequential:
    """The plain backbone as spconv layers on (z, y, x) grids, with the same weights."""
    layers = []
    for m in model.modules():
        if isinstance(m, snn.SubMConv3d):
            layer = spconv.SubMConv3d(m.in_channels, m.out_channels, _zyx(m.kernel_size), bias=False)
        elif isinstance(m, snn.SparseConv3d):
            layer = spconv.SparseConv3d(
                m.in_channels, m.out_channels, _zyx(m.kernel_size), _zyx(m.stride), _zyx(m.padding), bias=False
            )
        elif isinstance(m, snn.BatchNorm):
            layer = nn.BatchNorm1d(m.num_features, m.eps, m.momentum)
            layer.load_state_dict(m.state_dict())
        elif isinstance(m, snn.ReLU):
            layer = nn.ReLU()
        else:
            continue
        if isinstance(m, (snn.SubMConv3d, snn.SparseConv3d)):
            assert m.bias is None and m.dilation == (1, 1, 1) and m.groups == 1
            with torch.no_grad():  # native [O, I, kx, ky, kz] -> spconv [O, kz, ky, kx, I]
                layer.weight.copy_(m.weight.permute(0, 4, 3, 2, 1))
        layers.append(layer)
    return spconv.SparseSequential(*layers).double().eval()


def _height_compression(x: spconv.SparseConvTensor) -> torch.Tensor:
    """OpenPCDet's HeightCompression: dense() [N, C, D, H, W] viewed as [N, C * D, H, W]."""
    dense = x.dense()
    N, C, D, H, W = dense.shape
    return dense.view(N, C * D, H, W)


def test_yx_layout_equals_openpcdet_height_compression_of_the_spconv_path():
    x = _input()
    model = _small_backbone(bev_layout="yx")
    with torch.no_grad():
        bev = model(x).bev
        ref_net = _as_openpcdet_spconv(model)
        indices = x.coords[:, [0, 3, 2, 1]].to(torch.int32)  # (b, z, y, x)
        ref = _height_compression(ref_net(spconv.SparseConvTensor(x.feats, indices, _zyx(GRID), x.batch_size)))
    X, Y, D = SparseVoxelBackbone8x.output_spatial_shape(GRID)
    assert D == 2 and bev.shape == ref.shape == (3, 5 * D, Y, X) == (3, *model.bev_shape(GRID))
    assert bev[1].abs().max() == 0 and ref[1].abs().max() == 0  # the empty batch entry
    assert bev.abs().max() > 0.1  # a map worth comparing
    assert torch.allclose(bev, ref, rtol=1e-10, atol=1e-12)


def test_default_xy_layout_is_the_transpose():
    x = _input(seed=1)
    xy, yx = _small_backbone(), _small_backbone(bev_layout="yx")
    with torch.no_grad():
        a, b = xy(x).bev, yx(x).bev
    X, Y, D = SparseVoxelBackbone8x.output_spatial_shape(GRID)
    assert a.shape == (3, 5 * D, X, Y) == (3, *xy.bev_shape(GRID))
    assert torch.equal(a, b.transpose(2, 3))
    # channel index c * D + d: channel c's height slices are adjacent
    out = yx(x).features["out"].dense()  # [B, C, X, Y, D]
    assert torch.equal(b[:, 2 * D + 1], out[:, 2, :, :, 1].transpose(1, 2))


def test_bad_bev_layout():
    with pytest.raises(ValueError, match=r"bev_layout must be one of \('xy', 'yx'\).*got 'zyx'"):
        second_backbone(3, bev_layout="zyx")
    with pytest.raises(ValueError, match=r"layout must be one of \('xy', 'yx'\), got 'YX'"):
        SparseVoxelBackbone8x.to_bev(_input(), "YX")
