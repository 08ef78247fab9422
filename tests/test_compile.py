"""torch.compile and torch.export: the registered core op, SparseTensor as a pytree, plan().

Compiled and exported networks must compute what eager ones do: the core op runs the same backend
functions on the same data, so outputs and gradients are compared bitwise wherever the graph around
the op is not re-fused (``backend="aot_eager"``, export); inductor (which may fuse BatchNorm and
ReLU differently) is compared at float32 tolerances.
"""
import copy

import pytest
import torch
import torch.utils._pytree as pytree

import sparseconv.nn as snn
from sparseconv import SparseTensor
from sparseconv.engine import FixedCoordinates, KernelMapKey, backends, plan
from sparseconv.engine.core import gather_gemm_scatter
from sparseconv.models import minkunet14, second_backbone
from sparseconv.testing import random_sparse_tensor

PATHS = ["torch"] + (["numba"] if backends.numba_available() else [])


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test traces from scratch: no compiled frames, guards or recompile counts of another test."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _float(x: SparseTensor) -> SparseTensor:
    return x.replace(x.feats.float())


def _case(seed=0):
    x = _float(random_sparse_tensor((12, 12, 12), 4, batch_size=2, density=0.15, seed=seed))
    kmap = x.coordinate_set.kernel_map(KernelMapKey("conv", (3, 3, 3), (2, 2, 2), (1, 1, 1)))
    weight = torch.randn(kmap.kernel_volume, 1, 4, 5, generator=torch.Generator().manual_seed(seed))
    return x, kmap, weight


def _grads(model):
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("backend", PATHS)
def test_registered_op_passes_opcheck(backend):
    """Schema, fake implementation, autograd registration and AOT dispatch of the registered op."""
    x, kmap, weight = _case()
    tensors = backends.core_backend(backend).map_tensors(kmap, True)
    # a permuted view, as the nn modules pass their [C_out, C_in, kD, kH, kW] weights
    weight = weight.permute(3, 1, 2, 0).contiguous().permute(3, 1, 2, 0).requires_grad_()
    args = (x.feats.clone().requires_grad_(), weight, None, kmap.in_rows, kmap.out_rows,
            list(kmap.offset_bounds), kmap.num_outputs, -1, True, backend, tensors)
    torch.library.opcheck(torch.ops.sparseconv.gather_gemm_scatter.default, args)


@pytest.mark.parametrize("backend", PATHS)
def test_compiled_core_op_equals_eager_bitwise(backend):
    """fullgraph capture of the op and its backward op (AOTAutograd): same bits as eager."""
    x, kmap, weight = _case(1)

    def step(feats, w):
        return gather_gemm_scatter(feats, w, kmap, backend=backend)

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        feats, w = x.feats.clone().requires_grad_(), weight.clone().requires_grad_()
        out = fn(feats, w)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        results.append((out.detach(), feats.grad, w.grad))
    for eager, compiled in zip(*results):
        assert torch.equal(eager, compiled)


def test_inductor_compiled_layer_equals_eager():
    """A SubMConv3d -> BatchNorm -> ReLU -> SparseConv3d net under inductor, fullgraph, training step."""
    torch.manual_seed(0)
    x = _float(random_sparse_tensor((10, 10, 10), 3, batch_size=1, density=0.2, seed=2))
    net = torch.nn.Sequential(
        snn.SubMConv3d(3, 4, 3), snn.BatchNorm(4), snn.ReLU(), snn.SparseConv3d(4, 4, 2, stride=2)
    )
    plan(net, x)
    twin = copy.deepcopy(net)
    compiled = torch.compile(net, fullgraph=True)
    outs = []
    for model in (twin, compiled):
        out = model(x).feats
        out.square().sum().backward()
        outs.append(out.detach())
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for eager, comp in zip(_grads(twin), _grads(net)):
        assert torch.allclose(eager, comp, rtol=1e-4, atol=1e-5)


def test_compiled_network_on_a_new_scan_after_plan():
    """Another coordinate set retraces (guards on its maps) and still equals eager."""
    net = torch.nn.Sequential(snn.SubMConv3d(3, 4, 3), snn.ReLU(), snn.SparseConv3d(4, 4, 2, stride=2)).eval()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    for seed in (7, 8):
        x = _float(random_sparse_tensor((10, 10, 10), 3, batch_size=1, density=0.1 + 0.05 * (seed - 7), seed=seed))
        plan(net, x, backward=False)
        with torch.no_grad():
            assert torch.equal(compiled(x).feats, net(x).feats)


def test_compiled_network_stops_tracing_once_sizes_are_dynamic():
    """After a few scans dynamo's graph has symbolic sizes (features, pairs, offset bounds): later
    scans run it without tracing again."""
    traced = []

    def counting_backend(graph_module, example_inputs):
        traced.append(graph_module)
        return graph_module.forward

    net = torch.nn.Sequential(snn.SubMConv3d(3, 4, 3), snn.ReLU(), snn.SparseConv3d(4, 4, 2, stride=2)).eval()
    compiled = torch.compile(net, fullgraph=True, backend=counting_backend)
    counts = []
    for seed in range(5):
        x = _float(random_sparse_tensor((10, 10, 10), 3, batch_size=1, density=0.1 + 0.03 * seed, seed=seed))
        plan(net, x, backward=False)
        with torch.no_grad():
            assert torch.equal(compiled(x).feats, net(x).feats)
        counts.append(len(traced))
    assert counts[-1] == counts[-2] == counts[-3] <= 3, counts


def _minkunet_input():
    torch.manual_seed(0)
    return _float(random_sparse_tensor((20, 20, 20), 4, batch_size=1, density=0.04, seed=3))


def _second_input():
    torch.manual_seed(0)
    return _float(random_sparse_tensor((24, 24, 41), 4, batch_size=2, density=0.02, seed=4))


def _tiny_minkunet():
    return minkunet14(4, 5, base_channels=4)


def _tiny_second():
    return second_backbone(4, channels=(4, 4, 8, 8, 8), out_channels=8)


MODELS = pytest.mark.parametrize(
    "make, make_input", [(_tiny_minkunet, _minkunet_input), (_tiny_second, _second_input)], ids=["minkunet14", "second"]
)


def _loss(out):
    if isinstance(out, SparseTensor):
        return out.feats.square().mean()
    return out.bev.square().mean() + out.features["conv2"].feats.sum()


@MODELS
def test_model_traces_without_graph_breaks(make, make_input):
    x, net = make_input(), make()
    plan(net, x)
    builds = x.coordinate_set.kernel_map_builds
    explanation = torch._dynamo.explain(net)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    assert x.coordinate_set.kernel_map_builds == builds  # every map came from the cache


@MODELS
def test_model_compiled_training_step_equals_eager(make, make_input):
    """fullgraph=True forward + backward (AOTAutograd): outputs and every gradient bitwise equal."""
    x, net = make_input(), make()
    plan(net, x)
    twin = copy.deepcopy(net)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out_c, out_e = compiled(x), twin(x)
    _loss(out_c).backward()
    _loss(out_e).backward()
    if isinstance(out_e, SparseTensor):
        assert out_c.coordinate_set is out_e.coordinate_set is x.coordinate_set
        assert torch.equal(out_c.feats, out_e.feats)
    else:
        assert torch.equal(out_c.bev, out_e.bev)
    for eager, comp in zip(_grads(twin), _grads(net)):
        assert torch.equal(eager, comp)
    for eager, comp in zip(twin.buffers(), net.buffers()):  # BatchNorm running statistics
        assert torch.equal(eager, comp)


@pytest.mark.slow
@MODELS
def test_model_inductor_inference_and_training(make, make_input):
    x, net = make_input(), make()
    plan(net, x)
    twin = copy.deepcopy(net)
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        eager_eval, comp_eval = twin.eval()(x), compiled.eval()(x)
    leaf = (lambda o: o.feats) if isinstance(eager_eval, SparseTensor) else (lambda o: o.bev)
    assert torch.allclose(leaf(eager_eval), leaf(comp_eval), rtol=1e-4, atol=1e-5)
    twin.train(), net.train()
    out_c, out_e = compiled(x), twin(x)
    _loss(out_c).backward()
    _loss(out_e).backward()
    assert torch.allclose(leaf(out_c), leaf(out_e), rtol=1e-4, atol=1e-5)
    for eager, comp in zip(_grads(twin), _grads(net)):
        assert torch.allclose(eager, comp, rtol=1e-3, atol=1e-4)


def test_plan_leaves_the_model_unchanged_and_fills_the_cache():
    x, net = _minkunet_input(), _tiny_minkunet().train()
    state = copy.deepcopy(net.state_dict())
    plan(net, x)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # running statistics too
    padded = x.coordinate_set.on_grid((32, 32, 32))
    builds = padded.kernel_map_builds
    assert builds > 0
    net(x).feats.sum().backward()
    assert padded.kernel_map_builds == builds


def test_plan_rejects_non_modules():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        plan(lambda st: st, _minkunet_input())


def test_sparse_tensor_is_a_pytree():
    x = _minkunet_input()
    leaves, spec = pytree.tree_flatten({"a": x, "b": [x.feats]})
    assert len(leaves) == 2 and leaves[0] is x.feats
    doubled = pytree.tree_unflatten([leaf * 2 for leaf in leaves], spec)
    assert doubled["a"].coordinate_set is x.coordinate_set
    assert torch.equal(doubled["a"].feats, 2 * x.feats)
    mapped = pytree.tree_map(torch.neg, x)
    assert isinstance(mapped, SparseTensor) and torch.equal(mapped.feats, -x.feats)


def test_export_with_sparse_tensor_input_runs_but_cannot_be_saved(tmp_path):
    x, net = _minkunet_input(), _tiny_minkunet().eval()
    plan(net, x)
    program = torch.export.export(net, (x,))
    out = program.module()(x)
    with torch.no_grad():
        assert torch.equal(out.feats, net(x).feats)
    with pytest.raises(TypeError, match="cannot be saved in an ExportedProgram.*FixedCoordinates"):
        torch.export.save(program, tmp_path / "net.pt2")


@MODELS
def test_exported_program_on_fixed_coordinates_saves_loads_and_matches(make, make_input, tmp_path):
    x, net = make_input(), make().eval()
    plan(net, x)
    fixed = FixedCoordinates(net, x.coordinate_set)
    program = torch.export.export(fixed, (x.feats,))
    torch.export.save(program, tmp_path / "net.pt2")
    loaded = torch.export.load(tmp_path / "net.pt2").module()
    new_feats = torch.randn_like(x.feats)
    with torch.no_grad():
        expected = net(x.replace(new_feats))
    got = loaded(new_feats)
    if isinstance(expected, SparseTensor):
        assert torch.equal(got, expected.feats)
    else:
        assert set(got) == {"bev", "features"}  # the named tuple as a dict of its fields
        assert torch.equal(got["bev"], expected.bev)
        assert torch.equal(got["features"]["conv3"], expected.features["conv3"].feats)


def test_fixed_coordinates_checks_its_arguments():
    x = _minkunet_input()
    with pytest.raises(TypeError, match="coordinate_set must be a sparseconv CoordinateSet, got SparseTensor"):
        FixedCoordinates(_tiny_minkunet(), x)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        FixedCoordinates("net", x.coordinate_set)


def test_export_example_saves_loads_and_matches_eager(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "export.py"
    spec = importlib.util.spec_from_file_location("export_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--out", str(tmp_path), "--beams", "16", "--columns", "256", "--voxel-size", "0.2",
                           "--base-channels", "4"])
    assert result["identical"] and result["num_voxels"] > 1000
    assert (tmp_path / "minkunet14.pt2").is_file()


def test_onnx_export_writes_the_core_op_as_a_custom_domain_node():
    pytest.importorskip("onnxscript")
    from onnx import numpy_helper

    from sparseconv.engine.onnx_export import onnx_translation_table

    x = _float(random_sparse_tensor((8, 8, 8), 3, batch_size=1, density=0.3, seed=5))
    net = torch.nn.Sequential(snn.SubMConv3d(3, 4, 3, bias=False), snn.ReLU()).eval()
    plan(net, x)
    program = torch.onnx.export(FixedCoordinates(net, x.coordinate_set), (x.feats,), dynamo=True,
                                custom_translation_table=onnx_translation_table(), verbose=False)
    graph = program.model_proto.graph
    custom = [node for node in graph.node if node.domain == "sparseconv"]
    assert [node.op_type for node in custom] == ["GatherGemmScatter"]
    kmap = x.coordinate_set.kernel_map(KernelMapKey("submanifold", (3, 3, 3)))
    attributes = {a.name: a for a in custom[0].attribute}
    assert list(attributes["offset_bounds"].ints) == list(kmap.offset_bounds)
    assert attributes["num_outputs"].i == kmap.num_outputs and attributes["identity_offset"].i == kmap.identity_offset
    stored = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    assert torch.equal(torch.from_numpy(stored[custom[0].input[2]]), kmap.in_rows)
    assert torch.equal(torch.from_numpy(stored[custom[0].input[3]]), kmap.out_rows)


@pytest.mark.slow
def test_bench_compile_quick_prints_both_paths(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compile.py"
    spec = importlib.util.spec_from_file_location("bench_compile", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| layer")]
    assert [row.split("|")[3].strip() for row in rows] == PATHS
    for row in rows:
        eager_ms, compiled_ms, ratio = (float(cell) for cell in row.strip("|").split("|")[4:7])
        # the ratio is of the unrounded times: it agrees with the printed ones to their rounding (0.05 ms)
        low = (eager_ms - 0.05) / (compiled_ms + 0.05) - 0.005
        assert low <= ratio <= (eager_ms + 0.05) / (compiled_ms - 0.05) + 0.005
