"""sparseconv.analysis.summary: exact MACs (against a brute-force pair count), bookkeeping, rendering."""
import itertools

import pytest
import torch
from torch import nn

import sparseconv.nn as snn
from sparseconv.analysis import Summary, conv_kernel_map, format_count, summary, summary_table
from sparseconv.models import minkunet14, second_backbone, sparse_resnet14
from sparseconv.testing import random_sparse_tensor


def _x(shape=(7, 6, 5), channels=4, batch_size=2, density=0.3, seed=0, empty=()):
    return random_sparse_tensor(shape, channels, batch_size, density, empty, torch.float32, seed)


# -- brute force: count (input site, output site, offset) triples from the definitions ---------
def _sites(x):
    return {tuple(c) for c in x.coords.tolist()}


def _taps(kernel_size):
    return list(itertools.product(*(range(k) for k in kernel_size)))


def _subm_pairs(sites, kernel_size, dilation):
    left = [d * (k - 1) // 2 for k, d in zip(kernel_size, dilation)]
    count = 0
    for b, *o in sites:
        for t in _taps(kernel_size):
            i = tuple(oa - la + ta * da for oa, la, ta, da in zip(o, left, t, dilation))
            count += (b, *i) in sites
    return count


def _conv_pairs(sites, shape, kernel_size, stride, padding, dilation):
    """Pairs and output sites of F.conv3d semantics: out o reads in o*s - p + t*d."""
    out_shape = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(shape, kernel_size, stride, padding, dilation)]
    count, outputs = 0, set()
    for b, *i in sites:
        for t in _taps(kernel_size):
            num = [ia + p - ta * d for ia, p, ta, d in zip(i, padding, t, dilation)]
            if all(n % s == 0 and 0 <= n // s < m for n, s, m in zip(num, stride, out_shape)):
                count += 1
                outputs.add((b, *(n // s for n, s in zip(num, stride))))
    return count, outputs, tuple(out_shape)


def _transposed_pairs(sites, shape, kernel_size, stride, padding, dilation, output_padding=(0, 0, 0)):
    out_shape = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, k, s, p, d, op in zip(shape, kernel_size, stride, padding, dilation, output_padding)]
    count, outputs = 0, set()
    for b, *i in sites:
        for t in _taps(kernel_size):
            o = [ia * s - p + ta * d for ia, s, p, ta, d in zip(i, stride, padding, t, dilation)]
            if all(0 <= oa < m for oa, m in zip(o, out_shape)):
                count += 1
                outputs.add((b, *o))
    return count, outputs


class _Net(nn.Module):
    """Every sparse conv kind, groups, dilation, an even kernel, linear layers, pooling."""

    def __init__(self):
        super().__init__()
        self.a = snn.SubMConv3d(4, 6, 3, dilation=2, groups=2)
        self.b = snn.SubMConv3d(6, 8, (3, 1, 2))
        self.norm = snn.BatchNorm(8)
        self.down = snn.SparseConv3d(8, 12, 3, stride=2, padding=1)
        self.up = snn.SparseInverseConv3d(12, 8, 3, stride=2, padding=1)
        self.tr = snn.SparseConvTranspose3d(8, 4, 2, stride=2, groups=2)
        self.lin = snn.Linear(4, 5)
        self.act = snn.ReLU()
        self.pool = snn.GlobalAvgPool()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y = self.norm(self.b(self.a(x)))
        z = self.up(self.down(y))
        return self.fc(self.pool(self.act(self.lin(self.tr(z)))))


def test_macs_match_brute_force_pair_count():
    x = _x()
    sites, shape = _sites(x), x.spatial_shape
    s = summary(_Net(), x)
    layers = {row.name: row for row in s.layers}

    p_a = _subm_pairs(sites, (3, 3, 3), (2, 2, 2))
    p_b = _subm_pairs(sites, (3, 1, 2), (1, 1, 1))
    p_down, down_sites, down_shape = _conv_pairs(sites, shape, (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1))
    p_tr, tr_sites = _transposed_pairs(sites, shape, (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1))
    expected = {
        "a": p_a * (4 // 2) * 6,
        "b": p_b * 6 * 8,
        "down": p_down * 8 * 12,
        "up": p_down * 12 * 8,  # the inverse conv runs over the strided map, transposed
        "tr": p_tr * (8 // 2) * 4,
        "lin": len(tr_sites) * 4 * 5,
        "fc": 2 * 5 * 3,
    }
    for name, macs in expected.items():
        assert layers[name].macs == macs, name
    for name in ("norm", "act", "pool"):
        assert layers[name].macs == 0
    assert layers["a"].kernel_pairs == p_a and layers["down"].kernel_pairs == p_down
    assert layers["down"].output_sites == len(down_sites)
    assert layers["tr"].output_sites == len(tr_sites) and layers["lin"].output_channels == 5
    assert layers["fc"].output_shape == (2, 3) and layers["fc"].output_sites is None
    assert s.total_macs == sum(expected.values())
    # identity offsets count: a 1x1x1 submanifold conv does exactly N x Cin x Cout
    one = summary(snn.SubMConv3d(4, 7, 1), x)
    assert one.total_macs == len(x) * 4 * 7 and one.layers[0].name == ""


def test_inverse_conv_with_explicit_target_and_tuple_input():
    x = _x()
    coarse = snn.SparseConv3d(4, 4, 2, stride=2)(x)
    inv = snn.SparseInverseConv3d(4, 6, 2, stride=2)
    s = summary(inv, (coarse, x))
    kmap = conv_kernel_map(snn.SparseConv3d(4, 4, 2, stride=2), x)
    assert s.total_macs == kmap.num_pairs * 4 * 6 and s.layers[0].output_sites == len(x)


def test_summary_leaves_model_and_input_untouched():
    x = _x((16, 16, 16), density=0.2)
    model = minkunet14(4, 3, base_channels=4)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    s = summary(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())  # eval: BN stats unchanged
    assert x.coordinate_set.kernel_map_builds == 0 and x.coordinate_set.cached_kernel_maps() == {}
    assert s.kernel_maps_built == 10
    # on the caller's coordinate set, the maps stay cached there
    s2 = summary(model.eval(), x, fresh_maps=False)
    assert x.coordinate_set.kernel_map_builds == 3 and s2.kernel_maps_built == 10  # 3 at stride 1, 7 coarser
    assert summary(model, x, fresh_maps=False).kernel_maps_built == 0
    assert not model.training
    assert s2.total_macs == s.total_macs


def test_summary_totals_and_rendering():
    x = _x((16, 16, 28), density=0.05)
    model = second_backbone(4, channels=(4, 4, 8, 8, 8), out_channels=8)
    s = summary(model, x)
    n_params = sum(p.numel() for p in model.parameters())
    assert s.total_params == n_params == sum(row.params for row in s.layers) == s.trainable_params
    assert s.total_macs == sum(row.macs for row in s.layers) > 0
    assert s.input_sites == len(x) and s.input_channels == 4 and s.batch_size == 2
    leaves = [n for n, m in model.named_modules() if next(m.children(), None) is None]
    assert [row.name for row in s.layers] == leaves and all(row.calls == 1 for row in s.layers)
    assert 0 <= sum(row.time_s for row in s.layers) <= s.forward_time_s
    text = str(s)
    header = ["Layer", "Type", "Output", "(sites", "x", "ch)", "Params", "Pairs", "MACs", "Dense", "MACs", "Features",
              "RF", "Time", "(ms)"]
    assert text.splitlines()[0].split() == header
    assert all(name in text for name in leaves) and f"params {n_params:,}" in text
    md = s.to_markdown()
    assert md.startswith("| Layer | Type |") and md.count("\n|") == len(leaves) + 1
    assert "|" not in s.to_markdown(layers=False)
    table = summary_table({"SECOND": s, "ResNet14": summary(sparse_resnet14(4, 3, 4), x)})
    assert table.count("\n") == 3 and "| SECOND |" in table
    assert isinstance(s, Summary) and "SparseVoxelBackbone8x" in repr(s)
    assert s.totals()["macs"] == s.total_macs


def test_repeated_modules_and_dense_convs():
    x = _x((16, 16, 28), density=0.05)

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = second_backbone(4, channels=(4, 4, 8, 8, 8), out_channels=8)
            self.head = nn.Conv2d(8, 2, 3, padding=1)  # D = 1 height slice for Z = 28
            self.act = nn.ReLU()

        def forward(self, x):
            bev = self.backbone(x).bev
            return self.act(self.head(self.act(bev)))

    s = summary(Detector(), x)
    rows = {row.name: row for row in s.layers}
    assert rows["act"].calls == 2
    assert rows["head"].output_shape == (2, 2, 2, 2)
    assert rows["head"].macs == 2 * 2 * 2 * 2 * 8 * 9


def test_summary_rejects_non_modules_and_formats_counts():
    with pytest.raises(TypeError, match="nn.Module"):
        summary(lambda x: x, _x())
    assert format_count(999) == "999" and format_count(1234) == "1.23 K" and format_count(2.5e9) == "2.50 G"
