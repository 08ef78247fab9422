"""ONNX export of the core op as a custom-domain node (needs ``onnx`` and ``onnxscript``, optional).

``torch.onnx.export(module, (feats,), dynamo=True, custom_translation_table=onnx_translation_table())``
writes every ``torch.ops.sparseconv.gather_gemm_scatter`` as one node ``sparseconv::GatherGemmScatter``
(opset ``sparseconv`` version 1) and everything around it (BatchNorm, ReLU, Linear, concatenation,
densification) as standard ONNX operators:

* inputs: ``feats [N, C_in]``, ``weight [K, G, C_in/G, C_out/G]``, ``in_rows [P]``, ``out_rows [P]``
  (int64, the kernel map's pairs grouped by offset, stored as initializers), and ``pair_weights [P]``
  when the call has them;
* attributes: ``offset_bounds`` (ints, ``K + 1``), ``num_outputs``, ``identity_offset`` (-1: none),
  ``injective`` (0/1);
* output: ``out [num_outputs, C_out]`` with ``out[o] += a_p * feats[i] @ weight[k]`` over the pairs
  ``(i, o)`` of offset ``k`` (block-diagonal over the ``G`` groups).

No ONNX runtime ships a kernel for this node: a deployment target must implement it (it is a
gather, a GEMM and a scatter-add per offset; ONNX Runtime and TensorRT take custom-op plug-ins).
The backend's map-derived tensors (numba's tile layout) are not exported: they are an
implementation detail of one CPU kernel.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

DOMAIN = "sparseconv"
OP_TYPE = "GatherGemmScatter"
VERSION = 1


def _schema():
    from onnx.defs import OpSchema

    param, attribute, kinds = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType
    return OpSchema(
        OP_TYPE, DOMAIN, VERSION,
        doc="out[o] += a_p * feats[i] @ weight[k] over the kernel map's pairs (i, o) of offset k",
        inputs=[
            param("feats", "T"), param("weight", "T"), param("in_rows", "I"), param("out_rows", "I"),
            param("pair_weights", "T", param_option=OpSchema.FormalParameterOption.Optional),
        ],
        outputs=[param("out", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"], ""),
                          ("I", ["tensor(int64)"], "")],
        attributes=[
            attribute("offset_bounds", kinds.INTS, "K + 1 offsets delimiting each kernel offset's pairs"),
            attribute("num_outputs", kinds.INT, "rows of the output"),
            attribute("identity_offset", kinds.INT, "the offset whose pairs are (i, i) for every row, or -1"),
            attribute("injective", kinds.INT, "1 when every row appears at most once per offset"),
        ],
    )


def onnx_translation_table() -> Dict[torch._ops.OpOverload, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)`` that writes the core op
    as the ``sparseconv::GatherGemmScatter`` node (see the module docstring). Raises ImportError
    naming the missing package when ``onnx`` or ``onnxscript`` is not installed."""
    try:
        import onnxscript
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnx and onnxscript (pip install onnx onnxscript): {error}") from error
    node = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, VERSION), OP_TYPE, _schema())

    def gather_gemm_scatter(feats, weight, pair_weights, in_rows, out_rows, offset_bounds, num_outputs,
                            identity_offset, injective, backend, map_tensors):
        inputs = (feats, weight, in_rows, out_rows) + (() if pair_weights is None else (pair_weights,))
        return node(*inputs, offset_bounds=[int(b) for b in offset_bounds], num_outputs=int(num_outputs),
                    identity_offset=int(identity_offset), injective=int(bool(injective)))

    return {torch.ops.sparseconv.gather_gemm_scatter.default: gather_gemm_scatter}
