"""Where ``sparseconv voxelize`` writes, decided (and refused) before anything is read or written.

Rules: ``-o`` names a file when it has an extension and is not an existing directory,
else a directory (a trailing ``/`` forces a directory); a file must end in one of
:data:`VOXEL_EXTENSIONS`; several inputs need a directory, where each output is named
after its input's stem (widened by parent folders when stems clash). No output may be an
input (same path, or :func:`os.path.samefile`); two inputs may not share an output; an
existing output needs ``force``.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import List, Optional, Sequence

from ..io.files import same_file
from .errors import CliError

__all__ = ["VOXEL_EXTENSIONS", "plan_outputs", "check_new_file"]

#: What ``voxelize -o FILE`` can write.
VOXEL_EXTENSIONS = (".npz", ".ply")


def check_new_file(output: str, inputs: Sequence[str], force: bool) -> None:
    """Refuse an ``output`` that is one of ``inputs``, is a directory, or exists without ``force``."""
    for inp in inputs:
        if same_file(output, inp):
            raise CliError(f"{output}: is the input file {inp}; the output must not overwrite an input")
    if os.path.isdir(output):
        raise CliError(f"{output}: is a directory")
    if os.path.lexists(output) and not force:
        raise CliError(f"{output}: exists; pass --force to overwrite it")


def _output_names(files: Sequence[str], ext: str, out_dir: str) -> List[str]:
    """A distinct output file name per input: the stem, widened by parent folders on clashes."""
    real = [os.path.realpath(f) for f in files]
    for i, r in enumerate(real):
        if r in real[:i]:
            raise CliError(f"{files[i]}: is given more than once (as {files[real.index(r)]})")
    parts = [os.path.normpath(os.path.abspath(f)).split(os.sep) for f in files]
    depth = [1] * len(files)

    def name(i):
        comps = parts[i][-depth[i]:]
        comps[-1] = _stem(comps[-1])
        return "_".join(c for c in comps if c) + ext

    first_names = [name(i) for i in range(len(files))]
    while True:
        names = [name(i) for i in range(len(files))]
        clashes = {n for n, k in Counter(names).items() if k > 1}
        if not clashes:
            return names
        widened = False
        for i, n in enumerate(names):
            if n in clashes and depth[i] < len(parts[i]):
                depth[i] += 1
                widened = True
        if not widened:  # same folder, same stem: report the name they share
            clash = next(i for i, n in enumerate(names) if n in clashes)
            who = [files[i] for i, n in enumerate(names) if n == names[clash]]
            raise CliError(f"{' and '.join(who)} would both be written to {os.path.join(out_dir, first_names[clash])}; "
                           f"voxelize them into separate directories")


def _stem(name: str) -> str:
    """``a.ply`` -> ``a``; ``sweep.pcd.bin`` -> ``sweep``."""
    return name[: -len(".pcd.bin")] if name.lower().endswith(".pcd.bin") else os.path.splitext(name)[0]


def plan_outputs(files: Sequence[str], out: str, fmt: Optional[str], force: bool) -> List[str]:
    """One output path per input (see the module docstring); raises :class:`CliError`."""
    ext = os.path.splitext(out.rstrip("/" + os.sep))[1].lower()
    as_dir = out.endswith(("/", os.sep)) or os.path.isdir(out) or not ext
    if not as_dir:
        if ext not in VOXEL_EXTENSIONS:
            raise CliError(f"{out}: cannot write voxels as {ext!r}; supported: {', '.join(VOXEL_EXTENSIONS)} "
                           f"(or name a directory; end it with / when its name has a dot)")
        if len(files) > 1:
            raise CliError(f"-o {out} names one file but {len(files)} inputs were given; pass a directory")
        if fmt is not None and "." + fmt != ext:
            raise CliError(f"--format {fmt} does not match the output file {out}")
        outputs = [out]
    else:
        if os.path.exists(out) and not os.path.isdir(out):
            raise CliError(f"{out}: exists and is not a directory (for several inputs -o names a directory)")
        outputs = [os.path.join(out, n) for n in _output_names(files, "." + (fmt or "npz"), out)]
    for o in outputs:
        check_new_file(o, files, force)
    return outputs
