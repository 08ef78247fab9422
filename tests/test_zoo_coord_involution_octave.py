"""CoordConv, involution and octave convolution against their dense twins (float64, forward and
backward), plus hand-checked pieces and bad input."""
import pytest
import torch

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.nn.functional.coords import coordinate_channels
from sparseconv.nn.functional.involution import sparse_involution3d
from sparseconv.testing import assert_dense_equivalent, random_sparse_tensor


def test_coordinate_channels_by_hand():
    coords = torch.tensor([[0, 0, 0, 0], [0, 4, 2, 0], [1, 2, 1, 0]])
    st = SparseTensor(torch.zeros(3, 1, dtype=torch.float64), coords, (5, 3, 1), 2, voxel_size=0.5, origin=(1, 0, -1))
    assert coordinate_channels(st).tolist() == [[-1, -1, 0], [1, 1, 0], [0, 0, 0]]
    world = coordinate_channels(st, world=True, with_radius=True)
    assert world[1, :3].tolist() == [1 + 4.5 * 0.5, 2.5 * 0.5, -1 + 0.25]
    assert torch.allclose(world[:, 3], world[:, :3].norm(dim=1))
    with pytest.raises(ValueError, match="world=True needs the input's voxel_size and origin"):
        coordinate_channels(SparseTensor(st.feats, coords, (5, 3, 1), 2), world=True)


@pytest.mark.parametrize("kwargs", [dict(), dict(with_radius=True, bias=False),
                                    dict(stride=2, padding=1, submanifold=False), dict(world=True, with_radius=True)])
def test_coordconv_equals_its_dense_twin(kwargs):
    torch.manual_seed(0)
    m = snn.CoordConv3d(3, 5, 3, **kwargs).double()
    x = random_sparse_tensor((7, 6, 8), 3, batch_size=2, density=0.3, seed=1)
    x = SparseTensor(x.feats, x.coords, x.spatial_shape, 2, voxel_size=(0.1, 0.2, 0.1), origin=(-1, 2, 0))
    assert_dense_equivalent(m, x)


@pytest.mark.parametrize("kwargs", [dict(), dict(groups=2, reduction=2), dict(kernel_size=(3, 1, 5), groups=4,
                                                                          dilation=(1, 1, 2))])
def test_involution_equals_its_dense_twin(kwargs):
    torch.manual_seed(0)
    m = snn.Involution3d(8, **kwargs).double()
    x = random_sparse_tensor((7, 6, 8), 8, batch_size=2, density=0.3, empty_batches=(1,), seed=2)
    assert_dense_equivalent(m, x)


def test_involution_with_constant_kernels_is_a_depthwise_conv():
    x = random_sparse_tensor((5, 5, 5), 4, batch_size=1, density=0.4, seed=3)
    taps = torch.randn(27, dtype=torch.float64)
    kernels = taps.expand(len(x), 1, 27).contiguous()
    conv = snn.SubMConv3d(4, 4, 3, groups=4, bias=False).double()
    conv.weight.data.copy_(taps.view(1, 1, 3, 3, 3).expand(4, 1, 3, 3, 3))
    assert torch.allclose(sparse_involution3d(x, kernels, 3).feats, conv(x).feats, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"kernels must have shape \[N=\d+, G, K=27\]"):
        sparse_involution3d(x, kernels[:, :, :8], 3)
    with pytest.raises(ValueError, match="group count G=3 must divide the input's 4 channels"):
        sparse_involution3d(x, torch.zeros(len(x), 3, 27, dtype=torch.float64), 3)


def _octave_net(alpha=0.5):
    return torch.nn.Sequential(snn.OctaveConv3d(4, 6, 3, 0, alpha), snn.OctaveConv3d(6, 6, 3, alpha, alpha),
                               snn.OctaveConv3d(6, 5, 3, alpha, 0))


@pytest.mark.parametrize("shape", [(8, 6, 8), (7, 5, 9)])  # odd extents: the last fine slab has no coarse parent
def test_octave_network_equals_its_dense_twin(shape):
    torch.manual_seed(0)
    net = _octave_net().double()
    x = random_sparse_tensor(shape, 4, batch_size=2, density=0.3, seed=4)
    assert_dense_equivalent(net, x)


def test_octave_shapes_paths_and_bad_input():
    first = snn.OctaveConv3d(4, 6, 3, 0, 0.5)
    assert (first.high_out, first.low_out) == (3, 3) and first.conv_lh is None and first.conv_ll is None
    x = random_sparse_tensor((8, 6, 8), 4, batch_size=1, density=0.3, seed=5, dtype=torch.float32)
    h, low = first(x)
    assert h.coordinate_set is x.coordinate_set and low.spatial_shape == (4, 3, 4) and low.num_channels == 3
    middle = snn.OctaveConv3d(6, 6, 3, 0.5, 0.5)
    h2, low2 = middle((h, low))
    assert low2.coordinate_set is low.coordinate_set
    with pytest.raises(TypeError, match=r"expects \(x_h, x_l\) SparseTensors"):
        middle(h)
    with pytest.raises(ValueError, match="x_l must lie on the 2x2x2 stride-2 downsampling"):
        other = random_sparse_tensor((4, 3, 4), 3, batch_size=1, density=0.5, seed=9, dtype=torch.float32)
        middle((h, other))
    with pytest.raises(ValueError, match=r"alpha_in must be a number in \[0, 1\)"):
        snn.OctaveConv3d(4, 4, 3, alpha_in=1.0)
    with pytest.raises(ValueError, match=r"alpha_out must be a number in \[0, 1\), got -0.5"):
        snn.OctaveConv3d(4, 4, 3, alpha_out=-0.5)
