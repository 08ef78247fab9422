"""Representative checks rerun on CUDA tensors (``python -m pytest -m cuda``; skipped with the reason
"no CUDA device" where there is none): kernel maps and voxelization on the GPU equal the CPU's, the
models and the spconv compatibility layer give the CPU's results on the torch path (float64) and the
Triton backend (float32; float16 under autocast), and ``backend="auto"`` picks Triton there.

The whole dense-equivalence suite of the convolutions also runs on CUDA (``tests/test_conv_dense.py``,
``device`` parameter), and the Triton backend's own tests run compiled on CUDA besides interpreted on
CPU (``tests/test_triton_backend.py``).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import sparseconv.nn as snn
from sparseconv import voxelize
from sparseconv.compat import spconv
from sparseconv.data import generate_lidar_scan
from sparseconv.engine.kmap import KernelMapKey
from sparseconv.models import minkunet14, second_backbone, voxelize_in_range
from sparseconv.testing import random_sparse_tensor

pytestmark = pytest.mark.cuda
DEVICE = "cuda"

KEYS = [
    KernelMapKey("submanifold", (3, 3, 3)),
    KernelMapKey("submanifold", (3, 1, 2), dilation=(2, 1, 1)),
    KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    KernelMapKey("conv", (2, 3, 2), (2, 1, 2)),
    KernelMapKey("transposed", (3, 3, 3), (2, 2, 2), (1, 1, 1)),
]


def _assert_close(actual, expected, rtol, what=""):
    """``|actual - expected| <= rtol * (|expected| + max|expected|)``, on the CPU."""
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{k.kind}-{k.kernel_size}-{k.stride}")
def test_kernel_maps_on_the_gpu_equal_the_cpu_maps(key):
    x = random_sparse_tensor((9, 8, 10), 2, batch_size=3, density=0.2, empty_batches=(1,), seed=1)
    cpu = x.coordinate_set.kernel_map(key)
    gpu = x.to(DEVICE).coordinate_set.kernel_map(key)
    assert gpu.in_rows.device.type == DEVICE
    assert gpu.offset_bounds == cpu.offset_bounds and gpu.identity_offset == cpu.identity_offset
    assert torch.equal(gpu.in_rows.cpu(), cpu.in_rows) and torch.equal(gpu.out_rows.cpu(), cpu.out_rows)
    assert torch.equal(gpu.output.coords.cpu(), cpu.output.coords)


def test_voxelize_on_the_gpu_equals_the_cpu():
    scan = generate_lidar_scan(0, num_beams=16, horizontal_resolution=512)
    points, feats = torch.from_numpy(scan.points), torch.from_numpy(scan.features())
    cpu = voxelize(points, 0.2, feats)
    gpu = voxelize(points.to(DEVICE), 0.2, feats.to(DEVICE))
    assert gpu.tensor.device.type == DEVICE
    assert torch.equal(gpu.tensor.coords.cpu(), cpu.tensor.coords)
    assert gpu.tensor.spatial_shape == cpu.tensor.spatial_shape and gpu.tensor.origin == cpu.tensor.origin
    assert torch.equal(gpu.point_to_voxel.cpu(), cpu.point_to_voxel)
    _assert_close(gpu.tensor.feats, cpu.tensor.feats, 1e-6, "mean features")  # summation order may differ


def test_voxelize_in_range_on_the_gpu_equals_the_cpu():
    scan = generate_lidar_scan(1, num_beams=16, horizontal_resolution=512)
    points, feats = torch.from_numpy(scan.points), torch.from_numpy(scan.features())
    detection_range, voxel = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.2), (0.1, 0.1, 0.2)
    cpu = voxelize_in_range(points, voxel, detection_range, feats)
    gpu = voxelize_in_range(points.to(DEVICE), voxel, detection_range, feats.to(DEVICE))
    assert gpu.device.type == DEVICE and gpu.spatial_shape == cpu.spatial_shape == (1024, 1024, 41)
    assert torch.equal(gpu.coords.cpu(), cpu.coords)
    _assert_close(gpu.feats, cpu.feats, 1e-6, "mean features")


def test_auto_runs_the_triton_backend_on_cuda_tensors(monkeypatch):
    pytest.importorskip("triton")
    from sparseconv.engine.backends import triton_conv

    calls = []
    forward = triton_conv.TritonConv.forward

    def counting(self, *args):
        calls.append(args[0].dtype)
        return forward(self, *args)

    monkeypatch.setattr(triton_conv.TritonConv, "forward", counting)
    x = random_sparse_tensor((8, 8, 8), 4, batch_size=2, density=0.2, dtype=torch.float32, seed=0).to(DEVICE)
    snn.SubMConv3d(4, 8, 3).to(DEVICE)(x)
    with torch.autocast("cuda", dtype=torch.float16):
        snn.SparseConv3d(4, 8, 3, 2, 1).to(DEVICE)(x)
    assert calls == [torch.float32, torch.float16]


def _train_step(model, x, grad_seed=0):
    out = model(x)
    feats = out.feats if hasattr(out, "feats") else out[0]
    grad = torch.randn(feats.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=feats.dtype)
    feats.backward(grad.to(feats.device))
    return feats.detach(), {name: p.grad for name, p in model.named_parameters()}


# float64: the torch path on both devices (rounding only); float32: the Triton backend on CUDA against
# the CPU's float32 path, through a deep network (errors compound across layers and BatchNorms)
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-3)], ids=["float64", "float32"])
def test_minkunet_training_step_on_cuda_matches_cpu(dtype, rtol):
    x = random_sparse_tensor((12, 12, 12), 4, batch_size=2, density=0.2, empty_batches=(), dtype=dtype, seed=0)
    torch.manual_seed(0)
    model = minkunet14(4, 5, base_channels=8).to(dtype)
    gpu_model = copy.deepcopy(model).to(DEVICE)
    out_cpu, grads_cpu = _train_step(model, x)
    out_gpu, grads_gpu = _train_step(gpu_model, x.to(DEVICE))
    _assert_close(out_gpu, out_cpu, rtol, "output")
    for name, grad in grads_cpu.items():
        _assert_close(grads_gpu[name], grad, rtol, f"gradient of {name}")


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-3)], ids=["float64", "float32"])
def test_second_backbone_training_step_on_cuda_matches_cpu(dtype, rtol):
    x = random_sparse_tensor((24, 24, 41), 4, batch_size=2, density=0.03, empty_batches=(), dtype=dtype, seed=2)
    torch.manual_seed(0)
    model = second_backbone(4).to(dtype)
    gpu_model = copy.deepcopy(model).to(DEVICE)
    out_cpu, grads_cpu = _train_step(model, x)
    out_gpu, grads_gpu = _train_step(gpu_model, x.to(DEVICE))
    _assert_close(out_gpu, out_cpu, rtol, "BEV map")
    for name, grad in grads_cpu.items():
        _assert_close(grads_gpu[name], grad, rtol, f"gradient of {name}")


def test_minkunet_under_float16_autocast_on_cuda_stays_near_float32():
    x = random_sparse_tensor((12, 12, 12), 4, batch_size=2, density=0.2, dtype=torch.float32, seed=3).to(DEVICE)
    torch.manual_seed(0)
    model = minkunet14(4, 5, base_channels=8).to(DEVICE).eval()
    reference = model(x).feats
    with torch.autocast("cuda", dtype=torch.float16):
        half = model(x).feats
    assert half.dtype == torch.float16
    _assert_close(half.float(), reference, 3e-2, "float16 autocast")


def _compat_input(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand((2, 9, 8, 7), generator=gen) < 0.2
    indices = active.nonzero().to(torch.int32)
    indices = indices[torch.randperm(indices.shape[0], generator=gen)]
    feats = torch.randn(indices.shape[0], 3, generator=gen, dtype=dtype)
    return spconv.SparseConvTensor(feats.to(DEVICE), indices.to(DEVICE), [9, 8, 7], 2)


def _seeded(module, dtype, seed=0):
    torch.manual_seed(seed)
    for p in module.parameters():
        with torch.no_grad():
            p.normal_(0, 0.3)
    return module.to(dtype).to(DEVICE)


def _rows(dense, x):
    i = x.indices.long()
    return dense[(i[:, 0], slice(None), *i[:, 1:].unbind(1))]


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["float64", "float32"])
def test_spconv_compat_layers_on_cuda_match_dense_conv(dtype, rtol):
    x = _compat_input(dtype)
    subm = _seeded(spconv.SubMConv3d(3, 4, 3, padding=1, indice_key="s"), dtype)
    strided = _seeded(spconv.SparseConv3d(4, 5, 3, 2, 1, indice_key="down"), dtype, 1)
    inverse = _seeded(spconv.SparseInverseConv3d(5, 2, 3, indice_key="down"), dtype, 2)
    as_torch = lambda w: w.permute(0, w.dim() - 1, *range(1, w.dim() - 1))  # noqa: E731  [O, *k, I] -> [O, I, *k]
    y = subm(x)
    ref = F.conv3d(x.dense(), as_torch(subm.weight), subm.bias, 1, 1)
    assert y.indices is x.indices and y.features.device.type == DEVICE
    _assert_close(y.features, _rows(ref, y), rtol, "SubMConv3d")
    z = strided(y)
    ref = F.conv3d(y.dense(), as_torch(strided.weight), strided.bias, 2, 1)
    _assert_close(z.features, _rows(ref, z), rtol, "SparseConv3d")
    back = inverse(z)
    assert back.indices is x.indices
    out_pad = [n - ((m - 1) * 2 + 3 - 2) for n, m in zip(x.spatial_shape, z.spatial_shape)]
    ref = F.conv_transpose3d(z.dense(), inverse.weight.permute(4, 0, 1, 2, 3), inverse.bias, 2, 1, out_pad)
    _assert_close(back.features, _rows(ref, back), rtol, "SparseInverseConv3d")
