"""Two processes on gloo: DDP gradients equal single-process gradients on the same global batch,
SyncBatchNorm equals BatchNorm over the whole batch, and parameters stay identical across ranks."""
import copy

import pytest
import torch
from torch import nn

import sparseconv.nn as snn
from sparseconv.distributed import all_reduce_sum, launch
from sparseconv.testing import random_sparse_tensor

STEPS = 2


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        snn.SubMConv3d(3, 8, 3), snn.BatchNorm(8), snn.ReLU(),
        snn.SparseConv3d(8, 8, 2, stride=2), snn.BatchNorm(8), snn.ReLU(),
        snn.SparseInverseConv3d(8, 4, 2, stride=2),
    )


def _samples():
    # unequal sizes on purpose: rank 0 gets more sites than rank 1
    return [random_sparse_tensor((10, 10, 10), 3, batch_size=1, density=d, dtype=torch.float64, seed=s)
            for s, d in ((1, 0.3), (2, 0.12))]


def _loss(out, global_count):
    return (out.feats ** 2).sum() / global_count


def _batched(samples):
    """Both samples as one batch of two (the single-process view of the global batch)."""
    coords = [s.coords.clone() for s in samples]
    coords[1][:, 0] = 1
    from sparseconv import SparseTensor

    return SparseTensor(torch.cat([s.feats for s in samples]), torch.cat(coords), samples[0].spatial_shape, 2)


def _worker(rank, world_size, out_dir):
    model = snn.convert_sync_batchnorm(_model()).double()
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    sample = _samples()[rank]
    global_count = all_reduce_sum(torch.tensor(float(len(sample))))
    for step in range(STEPS):
        optimizer.zero_grad()
        # DDP averages gradients over ranks: scale so the average is the gradient of the global loss
        (_loss(ddp(sample), global_count) * world_size).backward()
        if step == 0:
            torch.save({n: p.grad.clone() for n, p in model.named_parameters()}, f"{out_dir}/grads{rank}.pt")
        optimizer.step()
    torch.save(model.state_dict(), f"{out_dir}/state{rank}.pt")


def test_two_process_ddp_matches_single_process(tmp_path):
    launch(_worker, 2, str(tmp_path))
    model = _model().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = _batched(_samples())
    for step in range(STEPS):
        optimizer.zero_grad()
        _loss(model(batch), float(len(batch))).backward()
        if step == 0:
            single_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        assert grads.keys() == single_grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, single_grads[name], rtol=1e-9, atol=1e-12), name
    states = [torch.load(tmp_path / f"state{rank}.pt") for rank in range(2)]
    for name, value in model.state_dict().items():
        assert torch.equal(states[0][name], states[1][name]), f"{name} differs across ranks"
        assert torch.allclose(states[0][name].double(), value.double(), rtol=1e-9, atol=1e-12), name


def test_sync_batchnorm_outside_a_process_group_is_batchnorm():
    x = random_sparse_tensor((6, 6, 6), 4, dtype=torch.float32, seed=3)
    bn, sync = snn.BatchNorm(4), snn.SyncBatchNorm(4)
    assert torch.equal(bn(x).feats, sync(x).feats)
    assert torch.equal(bn.running_var, sync.running_var)


def test_convert_sync_batchnorm_keeps_parameters_and_buffers():
    model = _model()
    model[1].running_mean.fill_(0.5)
    converted = snn.convert_sync_batchnorm(copy.deepcopy(model))
    assert isinstance(converted[1], snn.SyncBatchNorm) and isinstance(converted[4], snn.SyncBatchNorm)
    for (name, a), (_, b) in zip(model.state_dict().items(), converted.state_dict().items()):
        assert torch.equal(a, b), name


def test_launch_rejects_bad_nproc():
    with pytest.raises(ValueError, match="nproc must be a positive int"):
        launch(_worker, 0, "unused")
