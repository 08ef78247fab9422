"""Write the small sample scans in this folder (deterministic; about 3.5 MB in all).

    python datasets/make_samples.py [--out datasets]

Every sample is simulated by ``sparseconv.data.synthetic`` (Open3D ray casting of a
procedural scene) and written with ``sparseconv.io``:

* ``semantickitti/sequences/00/velodyne/00000{0,1}.bin`` + ``labels/00000{0,1}.label`` --
  two 64-beam street scans (768 columns per turn, a third of an HDL-64's), in the KITTI
  Velodyne layout, labelled with raw SemanticKITTI ids.
* ``indoor/room_000.ply`` -- an RGB-D sweep of a furnished room (binary PLY: x, y, z,
  red, green, blue, intensity, label, and ``comment label ID NAME R G B`` lines).
* ``street_000.npz`` -- a 32-beam street scan as NumPy arrays (points, intensity, labels,
  class_names, class_colors).

See README.md in this folder for the formats.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from sparseconv import io as sio  # noqa: E402
from sparseconv.data import synthetic  # noqa: E402

#: Synthetic street class -> raw SemanticKITTI id.
STREET_TO_SEMANTIC_KITTI = {
    "road": 40, "sidewalk": 48, "building": 50, "car": 10, "pole": 80, "vegetation": 70, "terrain": 72,
}

#: Base RGB of each indoor material (the room has no colour camera; this stands in for one).
INDOOR_MATERIAL_RGB = {
    "floor": (150, 111, 74), "wall": (222, 216, 204), "ceiling": (240, 240, 236), "table": (122, 86, 54),
    "chair": (64, 66, 78), "cabinet": (186, 160, 122), "box": (192, 150, 96),
}


def kitti_scan(out: str, frame: int, seed: int) -> None:
    scan = synthetic.generate_lidar_scan(seed, num_beams=64, horizontal_resolution=768)
    raw_ids = np.array([STREET_TO_SEMANTIC_KITTI[n] for n in scan.class_names], dtype=np.int64)
    seq = os.path.join(out, "semantickitti", "sequences", "00")
    os.makedirs(os.path.join(seq, "velodyne"), exist_ok=True)
    os.makedirs(os.path.join(seq, "labels"), exist_ok=True)
    sio.write_scan(os.path.join(seq, "velodyne", f"{frame:06d}.bin"), scan.points, {"intensity": scan.intensity})
    sio.write_label(os.path.join(seq, "labels", f"{frame:06d}.label"), raw_ids[scan.labels])
    print(f"semantickitti/sequences/00 frame {frame:06d}: {len(scan):,} points")


def indoor_ply(out: str, seed: int) -> None:
    scan = synthetic.generate_indoor_scene(seed, num_views=5, image_size=(96, 72))
    rng = np.random.default_rng(seed)
    base = np.array([INDOOR_MATERIAL_RGB[n] for n in scan.class_names], dtype=np.float64)[scan.labels]
    # shade by the simulated IR return (incidence angle and reflectivity), normalised per class
    shade = np.empty(len(scan))
    for c in np.unique(scan.labels):
        m = scan.labels == c
        top = np.percentile(scan.intensity[m], 95) or 1.0
        shade[m] = 0.6 + 0.4 * np.clip(scan.intensity[m] / top, 0, 1)
    rgb = np.clip(base * shade[:, None] + rng.normal(0, 5, size=base.shape), 0, 255).astype(np.uint8)
    os.makedirs(os.path.join(out, "indoor"), exist_ok=True)
    names = dict(enumerate(scan.class_names))
    colors = {i: tuple(int(v) for v in c) for i, c in enumerate(scan.class_colors)}
    sio.write_scan(os.path.join(out, "indoor", "room_000.ply"), scan.points,
                   {"colors": rgb, "intensity": scan.intensity, "labels": scan.labels},
                   label_names=names, label_colors=colors)
    print(f"indoor/room_000.ply: {len(scan):,} points")


def street_npz(out: str, seed: int) -> None:
    scan = synthetic.generate_lidar_scan(seed, num_beams=32, horizontal_resolution=1024)
    sio.write_scan(os.path.join(out, "street_000.npz"), scan.points,
                   {"intensity": scan.intensity, "labels": scan.labels.astype(np.uint8)},
                   label_names=dict(enumerate(scan.class_names)),
                   label_colors={i: tuple(int(v) for v in c) for i, c in enumerate(scan.class_colors)})
    print(f"street_000.npz: {len(scan):,} points")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="output folder (default: this one)")
    args = parser.parse_args(argv)
    kitti_scan(args.out, 0, seed=0)
    kitti_scan(args.out, 1, seed=1)
    indoor_ply(args.out, seed=0)
    street_npz(args.out, seed=2)


if __name__ == "__main__":
    main()
