"""Model zoo: shapes, coordinates, kernel-map reuse, real-sized scans, serialisation."""
import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import sparseconv.nn as snn
from sparseconv import SparseTensor, voxelize
from sparseconv.data import SEMANTIC_CLASSES, generate_lidar_scan
from sparseconv.models import (
    MINKUNET_LAYERS,
    MinkUNet,
    SparseBasicBlock,
    SparseResNet,
    SparseVoxelBackbone8x,
    centerpoint_backbone,
    minkunet14,
    minkunet18,
    minkunet34,
    second_backbone,
    sparse_resnet14,
    sparse_resnet18,
    sparse_resnet34,
    voxelize_in_range,
)
from sparseconv.testing import random_sparse_tensor

DETECTION_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.2)  # nuScenes-like, z up; 41 height voxels at 0.2 m
DETECTION_VOXEL = (0.1, 0.1, 0.2)


def _x(shape=(12, 12, 12), channels=4, batch_size=2, density=0.2, seed=0, empty=()):
    return random_sparse_tensor(shape, channels, batch_size, density, empty, torch.float32, seed)


@pytest.fixture(scope="module")
def scans():
    """Two real-sized 32-beam street scans (~16k points each)."""
    return [generate_lidar_scan(seed, num_beams=32, horizontal_resolution=1024) for seed in (0, 1)]


def _points_and_feats(scans):
    return [torch.from_numpy(s.points) for s in scans], [torch.from_numpy(s.features()) for s in scans]


def _object_cloud(scan, label, radius=3.0):
    """The points of class ``label`` within ``radius`` (xy) of that class's nearest point: one object."""
    p = scan.points[scan.labels == label]
    seed = p[np.argmin(np.linalg.norm(p[:, :2], axis=1))]
    obj = p[np.linalg.norm(p[:, :2] - seed[:2], axis=1) < radius]
    return torch.from_numpy(obj - obj.mean(0))


def _coordinate_sets(root):
    """Every coordinate set reachable from ``root`` through cached strided maps, finest first."""
    found, queue = [], [root]
    while queue:
        cs = queue.pop(0)
        if any(cs is f for f in found):
            continue
        found.append(cs)
        for key, kmap in cs.cached_kernel_maps().items():
            if key.kind == "conv":
                queue.append(kmap.output)
    return found


def _holds_sparse_state(obj, seen=None):
    """Whether any module attribute (recursively through containers) holds tensors/maps of a forward."""
    from sparseconv import CoordinateSet, KernelMap

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    if isinstance(obj, (SparseTensor, CoordinateSet, KernelMap)):
        return True
    if isinstance(obj, nn.Module):
        return any(_holds_sparse_state(v, seen) for v in vars(obj).values())
    if isinstance(obj, dict):
        return any(_holds_sparse_state(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_holds_sparse_state(v, seen) for v in obj)
    return False


# -- MinkUNet --------------------------------------------------------------------------------
@pytest.mark.parametrize("factory,depth", [(minkunet14, 14), (minkunet18, 18), (minkunet34, 34)])
def test_minkunet_output_on_input_coordinates(factory, depth):
    x = _x()
    model = factory(4, 5, base_channels=4)
    assert model.layers == MINKUNET_LAYERS[depth]
    out = model(x)
    assert isinstance(out, SparseTensor)
    assert out.coordinate_set is x.coordinate_set
    assert out.feats.shape == (len(x), 5)
    assert torch.isfinite(out.feats).all()
    blocks = sum(isinstance(m, SparseBasicBlock) for m in model.modules())
    assert blocks == sum(MINKUNET_LAYERS[depth])


def test_minkunet_widths_and_validation():
    model = MinkUNet(3, 7, 18, base_channels=32)
    assert model.planes == (32, 64, 128, 256, 256, 128, 96, 96)
    assert model.head.in_features == 96 and model.head.out_features == 7
    custom = MinkUNet(3, 2, layers=(1, 0, 1, 0, 1, 0, 1, 0), planes=(4, 6, 8, 10, 8, 6, 4, 4), stem_kernel_size=3)
    x = _x(channels=3)
    assert custom(x).feats.shape == (len(x), 2)
    with pytest.raises(ValueError, match="depth must be one of"):
        MinkUNet(3, 2, depth=50)
    with pytest.raises(ValueError, match="layers must be 8 ints"):
        MinkUNet(3, 2, layers=(1, 1))
    with pytest.raises(ValueError, match="in_channels"):
        MinkUNet(0, 2)


def _capture_stem_input(model):
    seen = []
    model.stem[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


def test_minkunet_builds_each_distinct_map_once():
    x = _x((16, 16, 16), seed=1)
    model = minkunet18(4, 3, base_channels=4)
    stem_input = _capture_stem_input(model)
    out = model(x)
    assert stem_input[0] is x  # a grid that is a multiple of 16 is used as is: maps cached on x
    sets = _coordinate_sets(x.coordinate_set)
    assert len(sets) == 5  # strides 1, 2, 4, 8, 16
    kinds = [sorted((k.kind, k.kernel_size) for k in cs.cached_kernel_maps()) for cs in sets]
    assert kinds[0] == [("conv", (2, 2, 2)), ("submanifold", (3, 3, 3)), ("submanifold", (5, 5, 5))]
    for level in kinds[1:4]:
        assert level == [("conv", (2, 2, 2)), ("submanifold", (3, 3, 3))]
    assert kinds[4] == [("submanifold", (3, 3, 3))]
    for cs in sets:  # every cached map was built exactly once
        assert cs.kernel_map_builds == len(cs.cached_kernel_maps())
    builds = [cs.kernel_map_builds for cs in sets]
    assert sum(builds) == 10
    out.feats.square().mean().backward()  # backward and a second forward reuse every map
    model(x.replace(torch.randn_like(x.feats)))
    assert [cs.kernel_map_builds for cs in sets] == builds


def test_minkunet_real_scans_forward_backward(scans):
    points, feats = _points_and_feats(scans)
    st, point_to_voxel = voxelize(points, 0.1, feats)
    assert st.batch_size == 2 and 20_000 < len(st) < 60_000
    model = minkunet18(4, len(SEMANTIC_CLASSES), base_channels=8)
    stem_input = _capture_stem_input(model)
    out = model(st)
    assert out.coordinate_set is st.coordinate_set and out.feats.shape == (len(st), len(SEMANTIC_CLASSES))
    labels = torch.from_numpy(np.concatenate([s.labels for s in scans]))
    loss = nn.functional.cross_entropy(out.feats[point_to_voxel], labels)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    internal = stem_input[0].coordinate_set  # the scan's grid is grown to a multiple of 16
    assert torch.equal(internal.coords, st.coords) and all(n % 16 == 0 for n in internal.spatial_shape)
    assert sum(cs.kernel_map_builds for cs in _coordinate_sets(internal)) == 10


@pytest.mark.parametrize("model_fn", [lambda: minkunet14(4, 3, base_channels=4), lambda: sparse_resnet14(4, 3, 4)],
                         ids=["minkunet", "resnet"])
def test_strided_stages_keep_every_site_on_odd_and_tiny_grids(model_fn):
    from sparseconv.analysis import conv_kernel_map

    model = model_fn()
    downs = [m for m in model.modules() if isinstance(m, snn.SparseConv3d)]
    assert len(downs) == 4
    seen = []
    for conv in downs:
        conv.register_forward_hook(lambda module, args, out: seen.append(conv_kernel_map(module, args[0])))
    for shape in [(13, 11, 9), (3, 2, 1)]:
        seen.clear()
        x = _x(shape, density=0.4, seed=5)
        model(x)
        # k=2, s=2: every site of a level feeds exactly one site of the next, none is dropped
        assert [kmap.num_pairs for kmap in seen] == [kmap.num_inputs for kmap in seen]
        assert seen[0].num_inputs == len(x)


# -- SECOND / CenterPoint backbone -------------------------------------------------------------
def _bev_formula(X, Y, Z, c_out=128):
    h = lambda n: (n - 1) // 2 + 1  # noqa: E731  k3 s2 p1
    g = lambda n: (n - 3) // 2 + 1  # noqa: E731  k3 s2 p0
    return c_out * g(g(h(h(Z)))), h(h(h(X))), h(h(h(Y)))


@pytest.mark.parametrize("shape", [(20, 18, 41), (17, 9, 30), (8, 8, 25)])
def test_backbone_bev_shape_formula(shape):
    x = _x(shape, density=0.05, seed=2)
    model = second_backbone(4)
    bev, features = model(x)
    expected = _bev_formula(*shape)
    assert model.bev_shape(shape) == expected
    assert bev.shape == (2, *expected)
    assert list(features) == ["conv1", "conv2", "conv3", "conv4", "out"]
    assert features["conv1"].coordinate_set is x.coordinate_set
    assert [f.num_channels for f in features.values()] == [16, 32, 64, 64, 128]
    out = features["out"]
    assert out.spatial_shape == SparseVoxelBackbone8x.output_spatial_shape(shape)
    # channel c * D + d of the BEV is height slice d of channel c
    dense = out.dense()
    D = dense.shape[-1]
    for c, d in [(0, 0), (5, D - 1), (127, D // 2)]:
        assert torch.equal(bev[:, c * D + d], dense[:, c, :, :, d])


def test_backbone_keeps_world_geometry_and_validates_height():
    x = voxelize_in_range([torch.rand(500, 3) * torch.tensor([6.0, 6.0, 7.9]) - torch.tensor([3.0, 3.0, 4.9])],
                          DETECTION_VOXEL, (-3.2, -3.2, -5.0, 3.2, 3.2, 3.2))
    assert x.spatial_shape == (64, 64, 41) and x.origin == (-3.2, -3.2, -5.0)
    bev, features = centerpoint_backbone(1)(x)
    assert bev.shape == (1, 256, 8, 8)
    assert features["conv4"].voxel_size == pytest.approx((0.8, 0.8, 1.6))
    with pytest.raises(ValueError, match="at least 25 voxels"):
        second_backbone(4)(_x((16, 16, 24), density=0.05))


def test_backbone_real_scans_forward_backward(scans):
    points, feats = _points_and_feats(scans)
    x = voxelize_in_range(points, DETECTION_VOXEL, DETECTION_RANGE, feats)
    assert x.spatial_shape == (1024, 1024, 41) and x.batch_size == 2 and len(x) > 20_000
    for model in (second_backbone(4), centerpoint_backbone(4)):
        bev, features = model(x)
        assert bev.shape == (2, 256, 128, 128)
        assert features["conv4"].spatial_shape[:2] == (128, 128)
        (bev.square().mean() + features["conv2"].feats.mean()).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


# -- Sparse ResNet -----------------------------------------------------------------------------
@pytest.mark.parametrize("factory,blocks", [(sparse_resnet14, 4), (sparse_resnet18, 8), (sparse_resnet34, 16)])
def test_resnet_logits_shape(factory, blocks):
    x = _x((16, 16, 16), batch_size=3, density=0.1)
    model = factory(4, 10, base_channels=4)
    logits = model(x)
    assert logits.shape == (3, 10)
    assert sum(isinstance(m, SparseBasicBlock) for m in model.modules()) == blocks
    assert model.forward_features(x).shape == (3, 32)


def test_resnet_odd_downsample_kernel_and_validation():
    x = _x((16, 16, 16), density=0.1)
    model = SparseResNet(4, 3, layers=(1, 1, 0, 1), base_channels=4, downsample_kernel_size=3, dropout=0.5)
    assert model(x).shape == (2, 3)
    with pytest.raises(ValueError, match="depth must be one of"):
        SparseResNet(4, 3, depth=50)


def test_resnet_real_object_scans_forward_backward(scans):
    car, tree = SEMANTIC_CLASSES.index("car"), SEMANTIC_CLASSES.index("vegetation")
    objects = [_object_cloud(scans[0], car), _object_cloud(scans[1], tree)]
    st = voxelize(objects, 0.05).tensor
    assert st.batch_size == 2 and (st.batch_counts() > 100).all()
    model = sparse_resnet18(1, 7, base_channels=16)
    logits = model(st)
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([3, 5])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# -- common behaviour --------------------------------------------------------------------------
def _small_models():
    return {
        "minkunet": (minkunet14(4, 3, base_channels=4), (12, 12, 12)),
        "second": (SparseVoxelBackbone8x(4, channels=(4, 4, 8, 8, 8), out_channels=8), (12, 12, 28)),
        "centerpoint": (centerpoint_backbone(4, channels=(4, 4, 8, 8, 8), out_channels=8), (12, 12, 28)),
        "resnet": (sparse_resnet14(4, 3, base_channels=4), (12, 12, 12)),
    }


def _result(out):
    if isinstance(out, SparseTensor):
        return out.feats
    if isinstance(out, tuple):
        return out[0]
    return out


@pytest.mark.parametrize("name", ["minkunet", "second", "centerpoint", "resnet"])
def test_models_accept_empty_batch_entries(name):
    model, shape = _small_models()[name]
    x = _x(shape, batch_size=4, density=0.1, empty=(0, 2))
    out = model(x)
    if name == "resnet":
        model.eval()
        logits = model(x)
        assert torch.allclose(logits[0], model.fc.bias) and torch.allclose(logits[2], model.fc.bias)
    elif name == "minkunet":
        assert out.coordinate_set is x.coordinate_set
    else:
        bev = out.bev
        assert bev.shape[0] == 4 and (bev[0] == 0).all() and (bev[2] == 0).all() and (bev[1] != 0).any()
    _result(out).sum().backward()


@pytest.mark.parametrize("name", ["minkunet", "second", "centerpoint", "resnet"])
def test_models_pickle_deepcopy_and_state_dict_round_trip(name):
    model, shape = _small_models()[name]
    x = _x(shape, density=0.15, seed=4)
    model.train()
    for _ in range(2):  # move BN running statistics away from their defaults
        model(x)
    model.eval()
    expected = _result(model(x))
    assert not _holds_sparse_state(model)
    data = pickle.dumps(model)
    assert b"CoordinateSet" not in data and b"KernelMap" not in data
    for clone in (pickle.loads(data), copy.deepcopy(model)):
        assert torch.equal(_result(clone(x)), expected)
    fresh, _ = _small_models()[name]
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    assert torch.equal(_result(fresh(x)), expected)
    buffer = __import__("io").BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(_result(fresh(x)), expected)


def test_models_take_another_norm_layer():
    x = _x()
    model = minkunet14(4, 3, base_channels=4, norm_layer=snn.SyncBatchNorm)
    assert any(isinstance(m, snn.SyncBatchNorm) for m in model.modules())
    assert not any(type(m) is snn.BatchNorm for m in model.modules())
    model.eval()  # SyncBatchNorm without a process group: eval mode uses running statistics
    assert model(x).feats.shape == (len(x), 3)
