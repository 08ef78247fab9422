"""Reading scans from disk and writing voxelized results, with errors that name the file.

Design: one module per format (:mod:`.ply`, :mod:`.pcd`, :mod:`.text`, :mod:`.lidar` for
KITTI / nuScenes ``.bin`` and SemanticKITTI ``.label``, :mod:`.numpy_scans`, :mod:`.las`,
:mod:`.voxels`), each with a reader ``(path, ReadOptions) -> Scan`` and, where the format
is written, a writer; one table, :data:`FORMATS` in :mod:`.registry`, maps format names
and extensions to them, and :func:`read_scan` / :func:`write_scan` dispatch through it
and nothing else does. Shared pieces: :mod:`.scan` (the :class:`Scan`), :mod:`.attributes`
(column names -> canonical attributes, layouts of unnamed columns), :mod:`.files` (file
checks and the size rule), :mod:`.npformat` (bounded NumPy loading), :mod:`.atomic`
(atomic writes), :mod:`.errors`, :mod:`.describe` (the text of ``sparseconv info``).

Reading -- :func:`read_scan` turns a file into a :class:`Scan`: ``points [P, 3]`` plus a
dictionary of per-point attributes under canonical names:

=============  =========================  ==============================================
attribute      array                      taken from
=============  =========================  ==============================================
``intensity``  float32 ``[P]``            intensity, reflectance, remission, scalar_intensity, i
``colors``     uint8 ``[P, 3]``           red/green/blue, r/g/b, packed PCD ``rgb``
``normals``    float32 ``[P, 3]``         nx/ny/nz, normal_x/normal_y/normal_z
``labels``     int64 ``[P]``              label, class, classification, semantic, ``.label`` files
``instance``   int64 ``[P]``              instance, instance_id, upper 16 bits of ``.label``
anything else  as stored                  other named columns, by their own name
=============  =========================  ==============================================

Formats, by extension (``format=`` overrides): ``.ply``; ``.pcd``; text ``.xyz``,
``.xyzn``, ``.xyzrgb``, ``.pts``, ``.txt``, ``.csv``; KITTI ``.bin`` (+ SemanticKITTI
``.label``); nuScenes ``.pcd.bin``; ``.npy`` / ``.npz`` (and voxel files); ``.las`` /
``.laz`` (``pip install 'sparseconv[las]'``). Each module's docstring says what it
accepts and checks.

Layouts are never guessed. Files without column names (``.bin``, plain ``.npy``, text)
take ``columns=`` (``"x,y,z,intensity,ring"``), else a fixed rule per format
(:data:`~.attributes.LAYOUT_RULES`); where a file fits several layouts (six unnamed
columns; a ``.bin`` whose size fits both the KITTI and the nuScenes records, without a
name or folder that says which) the error lists them. ``labels=`` attaches a separate
``.label`` or ``.npy`` labels file to any scan.

Hostile files: every reader checks the counts and sizes a header declares against the
file's size -- or, for compressed data (``.npz`` members, LAZ, ``binary_compressed``
PCD), against ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`) -- before it allocates
or loops, so a lying header fails at once, in bounded memory.

Every failure raises with the file's path in the message: :class:`FileNotFoundError`,
:class:`ScanFormatError` (an :class:`InputError`, a ``ValueError``) or
:class:`MissingDependencyError` (an ``ImportError``, naming the extra to install).

Writing -- :func:`write_scan` (``.ply``, ``.bin``, ``.npz``, ``.npy``), :func:`write_label`,
:func:`write_voxels` (``.npz`` with coordinates, features, voxel size, origin and the
point-to-voxel map, or ``.ply`` of voxel centres) and :func:`read_voxels`. Every writer
goes through :func:`atomic_write`: a temporary file in the target directory, renamed over
the target only once complete, so a failed or interrupted write never leaves a partial file.
"""
from .atomic import atomic_write, partial_files, remove_partial_files
from .describe import describe_scan
from .errors import InputError, MissingDependencyError, ScanFormatError, UnsupportedFormatError
from .files import DEFAULT_MAX_BYTES
from .lidar import read_label, write_label
from .registry import FORMATS, READ_FORMATS, WRITE_EXTENSIONS, Format, format_of, read_scan, write_scan
from .scan import Scan
from .semantic_kitti import (
    SEMANTIC_KITTI_CLASS_COLORS,
    SEMANTIC_KITTI_CLASSES,
    SEMANTIC_KITTI_LABELS,
    SEMANTIC_KITTI_LEARNING_MAP,
    semantic_kitti_label_colors,
)
from .voxels import VoxelFile, read_voxels, write_voxels

__all__ = [
    "Scan",
    "VoxelFile",
    "InputError",
    "ScanFormatError",
    "UnsupportedFormatError",
    "MissingDependencyError",
    "Format",
    "FORMATS",
    "READ_FORMATS",
    "WRITE_EXTENSIONS",
    "DEFAULT_MAX_BYTES",
    "read_scan",
    "read_label",
    "write_scan",
    "write_label",
    "write_voxels",
    "read_voxels",
    "describe_scan",
    "atomic_write",
    "partial_files",
    "remove_partial_files",
    "format_of",
    "SEMANTIC_KITTI_LABELS",
    "SEMANTIC_KITTI_CLASSES",
    "SEMANTIC_KITTI_LEARNING_MAP",
    "SEMANTIC_KITTI_CLASS_COLORS",
    "semantic_kitti_label_colors",
]
