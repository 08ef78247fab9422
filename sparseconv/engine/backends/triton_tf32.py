"""The Triton backend with TF32 float32 GEMMs: the core op's ``allow_tf32=True`` (inputs rounded to a
10-bit mantissa on tensor cores). Everything else is :mod:`.triton_conv`'s."""
from .triton_conv import SUPPORTED, TritonConv, attach_map_tensors, map_tensors, supports

__all__ = ["SUPPORTED", "supports", "forward", "backward", "map_tensors", "attach_map_tensors"]

_TF32 = TritonConv(allow_tf32=True)
forward = _TF32.forward
backward = _TF32.backward
