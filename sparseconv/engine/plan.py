"""Getting a network ready for ``torch.compile`` and ``torch.export``.

Kernel maps are built eagerly (sorting, searching, numba kernels: data-dependent work that a
graph cannot hold) and cached on the coordinate set. A compiled or exported network must find
every map it needs already in that cache; :func:`plan` fills it. :class:`FixedCoordinates` wraps
a network on one coordinate set as a module of plain tensors, the form an exported program
saves and loads.
"""
from __future__ import annotations

import torch
from torch import nn

from .coordinates import CoordinateSet
from .tensor import SparseTensor


def plan(model: nn.Module, *inputs, backward: bool = True, **kwargs) -> None:
    """Run ``model(*inputs, **kwargs)`` once eagerly so that every kernel map it uses, and what
    the core op's backends derive from them, is cached on the inputs' coordinate sets.

    Afterwards ``torch.compile(model, fullgraph=True)`` on the same coordinates traces without
    building a map (no data-dependent Python, no graph break), and ``torch.export`` captures the
    maps as constants. With ``backward`` (default) the layouts a backward pass needs are prepared
    too, for a compiled training step.

    Nothing about the model changes: it runs once in eval mode (no running-statistics update, no
    dropout) without touching ``.grad``, and its train/eval mode is restored. Maps depend on the
    coordinates only, so the same plan serves training and evaluation.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(backward):
            model(*inputs, **kwargs)
    finally:
        model.train(was_training)


class FixedCoordinates(nn.Module):
    """``model`` on one fixed coordinate set, with plain tensors in and out: for ``torch.export``.

    ``forward(feats)`` runs ``model(SparseTensor on coordinate_set with feats)`` and returns its
    output with every SparseTensor replaced by its features and every named tuple by a dict of its
    fields (tuples, lists and dicts keep their structure), which an exported program can save. The
    coordinate set's kernel maps become constants of the exported program, so call :func:`plan`
    first; the program then runs on these coordinates only, with any features of the right shape.

    Shape:
        - Input: ``feats [N, C_in]``, ``N = len(coordinate_set)``.
        - Output: the model's output, SparseTensors as their ``[N_out, C_out]`` features.
    """

    def __init__(self, model: nn.Module, coordinate_set: CoordinateSet):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(coordinate_set, CoordinateSet):
            raise TypeError(f"coordinate_set must be a sparseconv CoordinateSet, got {type(coordinate_set).__name__}")
        self.model = model
        self.coordinate_set = coordinate_set

    def forward(self, feats: torch.Tensor):
        return _plain(self.model(SparseTensor.from_coordinate_set(feats, self.coordinate_set)))


def _plain(output):
    """``output`` with SparseTensors as their features and named tuples as dicts, recursively."""
    if isinstance(output, SparseTensor):
        return output.feats
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return {name: _plain(value) for name, value in zip(output._fields, output)}
    if isinstance(output, (tuple, list)):
        return type(output)(_plain(value) for value in output)
    if isinstance(output, dict):
        return {key: _plain(value) for key, value in output.items()}
    return output
