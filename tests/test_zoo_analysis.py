"""summary() counts every layer: hand-computed pairs, MACs, dense-equivalent MACs, memory and
receptive fields on a 3-voxel line, for every layer type (nested models included); the output-size
and receptive-field formulas against the dense ops."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.analysis import conv_output_size, conv_transpose_output_size, receptive_field, summary
from sparseconv.compat import spconv as spc


def _line(channels=2):
    """Three voxels in a row along x on a (4, 2, 2) grid, batch 1. A 3x3x3 submanifold map has
    2 + 3 + 2 = 7 pairs; the map of a k x 1 x 1 kernel along x the same 7, along y or z only the 3 centres."""
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0]])
    feats = torch.randn(3, channels, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return SparseTensor(feats, coords, (4, 2, 2), 1)


GRID = 4 * 2 * 2  # dense voxels


def _rows(model, x=None):
    s = summary(model.double(), _line() if x is None else x)
    return s, {row.name: row for row in s.layers}


def test_plain_convs_by_hand():
    model = nn.Sequential(snn.SubMConv3d(2, 3, 3), snn.SparseConv3d(3, 4, 2, stride=2), snn.ReLU())
    s, rows = _rows(model)
    assert (rows["0"].kernel_pairs, rows["0"].macs, rows["0"].dense_macs) == (7, 7 * 2 * 3, GRID * 3 * 2 * 27)
    # stride-2 k2 windows: x 0..1 holds voxels 0 and 1, x 2..3 voxel 2: 3 pairs, a (2, 1, 1) output grid
    assert (rows["1"].kernel_pairs, rows["1"].macs, rows["1"].dense_macs) == (3, 3 * 3 * 4, 2 * 4 * 3 * 8)
    assert rows["1"].output_sites == 2 and rows["1"].feature_bytes == 2 * 4 * 8
    assert rows["0"].receptive_field == (3, 3, 3) and rows["1"].receptive_field == (4, 4, 4)
    assert rows["2"].receptive_field == (4, 4, 4) and rows["2"].macs == 0 and rows["2"].kernel_pairs is None
    assert rows["0"].flops == 2 * 42 and s.total_flops == 2 * s.total_macs == 2 * (42 + 36)
    assert s.total_pairs == 10 and s.total_dense_macs == GRID * 3 * 2 * 27 + 2 * 4 * 3 * 8
    assert s.total_feature_bytes == 3 * 3 * 8 + 2 * 4 * 8 + 2 * 4 * 8


def test_dynamic_and_deformable_layers_get_their_own_rows():
    torch.manual_seed(0)
    model = nn.Sequential(snn.SparseDynamicConv3d(2, 3, 3, num_experts=2, submanifold=True),
                          snn.SubMDeformConv3d(3, 3, 3, modulated=True))
    s, rows = _rows(model)
    # dynamic: the conv's 7 x 2 x 3 plus mixing 2 experts' kernels (3 x 2 x 27 each) for the one sample
    assert rows["0"].macs == 42 + 2 * 3 * 2 * 27 and rows["0"].kernel_pairs == 7
    assert rows["0"].params == 2 * 3 * 2 * 27 + 2 * 3
    linears = [r for r in s.layers if r.type == "Linear"]
    assert linears and all(r.macs > 0 for r in linears) and all(r.name.startswith("0.") for r in linears)
    # a fresh deformable layer samples at integer offsets: its corner map is the plain map's 7 pairs
    assert (rows["1"].kernel_pairs, rows["1"].macs) == (7, 7 * 3 * 3)
    assert rows["1"].dense_macs == 8 * GRID * 3 * 3 * 27 and rows["1"].params == 3 * 3 * 27 + 3
    offsets = rows["1.offset_conv"]
    assert (offsets.kernel_pairs, offsets.macs, offsets.calls) == (7, 7 * 3 * 27 * 4, 1)
    assert rows["1"].receptive_field == (5, 5, 5)
    assert s.total_params == sum(p.numel() for p in model.parameters()) == sum(r.params for r in s.layers)


def test_zoo_layers_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(
        snn.DepthwiseSeparableConv3d(2, 3, 3),                               # 0.depthwise, 0.pointwise
        snn.CentralDifferenceConv3d(3, 3, 3),                                # 1
        snn.SpatiallySeparableConv3d(3, 3, 3),                               # 2: chain x, y, z
        snn.SpatiallySeparableConv3d(3, 3, 3, factorised=True),              # 3
        snn.Involution3d(3, 3, groups=1, reduction=1),                       # 4 (+ 4.reduce, 4.span)
        snn.CoordConv3d(3, 2, 3),                                            # 5.conv
        snn.AsymmetricConv3d(2, 2),                                          # 6.cube/axis_x/axis_y/axis_z
    )
    s, rows = _rows(model)
    assert (rows["0.depthwise"].kernel_pairs, rows["0.depthwise"].macs) == (7, 7 * 2)
    assert rows["0.pointwise"].macs == 3 * 2 * 3 and "0" not in rows
    assert (rows["1"].kernel_pairs, rows["1"].macs) == (7, 7 * 3 * 3)
    assert (rows["2"].kernel_pairs, rows["2"].macs) == (7 + 3 + 3, 7 * 9 + 3 * 9 + 3 * 9)
    assert rows["2"].dense_macs == 3 * GRID * 3 * 3 * 3
    assert (rows["3"].kernel_pairs, rows["3"].macs, rows["3"].dense_macs) == (7, 63, GRID * 9 * 27)
    assert (rows["4"].kernel_pairs, rows["4"].macs, rows["4"].dense_macs) == (7, 7 * 3, GRID * 3 * 27)
    assert rows["4.reduce"].macs == 3 * 3 * 3 and rows["4.span"].macs == 3 * 3 * 27
    assert rows["5.conv"].macs == 7 * (3 + 3) * 2 and "5" not in rows
    assert [rows[f"6.{b}"].macs for b in ("cube.conv", "axis_x.conv", "axis_y.conv", "axis_z.conv")] == \
        [7 * 4, 7 * 4, 3 * 4, 3 * 4]
    assert rows["6.cube.bn"].macs == 0
    assert rows["1"].receptive_field == (5, 5, 5) and rows["4"].receptive_field == (11, 11, 11)


def test_octave_layers_and_nested_models():
    torch.manual_seed(0)
    inner = nn.Sequential(snn.OctaveConv3d(2, 4, 3, 0, 0.5), snn.OctaveConv3d(4, 2, 3, 0.5, 0))
    model = nn.Sequential(nn.Sequential(inner), snn.SubMConv3d(2, 2, 1))
    s, rows = _rows(model)
    first, second = rows["0.0.0"], rows["0.0.1"]
    # first: down-sampling of x_h (3 fine sites x 2 channels); coarse sites x = 0 and 1: a 4-pair k3 map
    assert (first.kernel_pairs, first.macs, first.output_sites) == (3, 3 * 2, 3)
    assert rows["0.0.0.conv_hh"].macs == 7 * 2 * 2 and rows["0.0.0.conv_hl"].macs == 4 * 2 * 2
    # second (alpha_out = 0, 2 + 2 channels in, 2 out): only the upsampling of conv_lh's 2 channels
    assert (second.kernel_pairs, second.macs) == (3, 3 * 2)
    assert rows["0.0.1.conv_lh"].macs == 4 * 2 * 2 and rows["0.0.1.conv_hh"].macs == 7 * 2 * 2
    assert rows["1"].macs == 3 * 2 * 2 and s.total_macs == sum(r.macs for r in s.layers)
    assert second.feature_bytes == 3 * 2 * 8 and first.feature_bytes == (3 * 2 + 2 * 2) * 8


def test_compat_spconv_conv_is_counted():
    x = _line()
    indices = torch.stack([x.coords[:, 0], x.coords[:, 3], x.coords[:, 2], x.coords[:, 1]], 1).int()
    st = spc.SparseConvTensor(x.feats, indices, [2, 2, 4], 1)
    model = spc.SparseSequential(spc.SubMConv3d(2, 3, 3, indice_key="a"), spc.SparseConv3d(3, 2, 2, 2))
    s = summary(model.double(), st)
    rows = {r.name: r for r in s.layers}
    assert (rows["0"].kernel_pairs, rows["0"].macs) == (7, 7 * 2 * 3)
    assert (rows["1"].kernel_pairs, rows["1"].macs) == (3, 3 * 3 * 2)


@pytest.mark.parametrize("n,k,s,p,d", [(9, 3, 2, 1, 1), ((10, 7, 5), (3, 2, 1), (1, 2, 3), (0, 1, 0), (2, 1, 1)),
                                       (8, 2, 2, 0, 1)])
def test_output_size_formulas_match_the_dense_ops(n, k, s, p, d):
    size = (n,) * 3 if isinstance(n, int) else n
    kernel = (k,) * 3 if isinstance(k, int) else k
    x = torch.zeros(1, 1, *size)
    assert conv_output_size(size, k, s, p, d) == tuple(F.conv3d(x, torch.zeros(1, 1, *kernel), None, s, p, d).shape[2:])
    stride = (s,) * 3 if isinstance(s, int) else s
    out_pad = tuple(si - 1 for si in stride)
    dense = F.conv_transpose3d(x, torch.zeros(1, 1, *kernel), None, s, p, out_pad, 1, d)
    assert conv_transpose_output_size(size, k, s, p, out_pad, d) == tuple(dense.shape[2:])
    with pytest.raises(ValueError, match="does not fit size"):
        conv_output_size(2, 5)
    with pytest.raises(ValueError, match="output_padding .* must be smaller than stride"):
        conv_transpose_output_size(4, 3, 2, 0, 2)


def test_receptive_field_hand_cases_and_dense_impulse_response():
    # stride products: 3, then 3 + 2*2 = 7 (jump 4), then 7 + 2*4 = 15 (the "current stride only" form gives 9)
    layers = [(3, 2, 1), (3, 2, 1), (3, 1, 1)]
    assert [rf for rf, _ in receptive_field(layers)] == [(3, 3, 3), (7, 7, 7), (15, 15, 15)]
    # (3, 1, 9) after a (3, 1, 5) kernel dilated (1, 1, 2); + 1 voxel (k2 s2); + 2 taps x dilation 3 x jump 2
    assert receptive_field([((3, 1, 5), 1, (1, 1, 2)), (2, 2, 1), (3, 1, 3)])[-1] == ((16, 14, 22), (2, 2, 2))
    # dense check: the input support of one output of the chain of all-ones convs is RF wide
    x = torch.zeros(1, 1, 40, 40, 40, requires_grad=True)
    y = x
    for k, s, d in [(3, 2, 1), (3, 1, 2), (2, 2, 1), (3, 1, 1)]:
        y = F.conv3d(y, torch.ones(1, 1, k, k, k), None, s, 0, d)
    y[0, 0, 1, 1, 1].backward()
    support = x.grad[0, 0].nonzero()
    extent = tuple((support.max(0).values - support.min(0).values + 1).tolist())
    rf, _ = receptive_field([(3, 2, 1), (3, 1, 2), (2, 2, 1), (3, 1, 1)])[-1]
    assert extent == rf == (3 + 8 + 2 + 8,) * 3
