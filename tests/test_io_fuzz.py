"""Hostile files of every format: each fails with one clean error naming the file, in bounded time
and memory, and leaves nothing behind.

Every case writes a small file whose header lies (billions of points or records, zero or negative
counts), that is truncated, compressed far beyond its size, byte-swapped or plain garbage, and reads
it in this process under :mod:`tracemalloc` (NumPy reports its buffers to it). The bounds -- a few
seconds and 500 MB -- are safety nets against hangs and bombs, not speed measurements: a correct
reader fails in milliseconds and kilobytes.
"""
import io
import os
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from sparseconv import io as sio

MAX_SECONDS = 5.0
MAX_BYTES = 500 * 1024 * 1024


def read_bounded(path, **kwargs):
    """read_scan under a time and memory bound; returns (scan or exception, seconds, peak bytes)."""
    before = set(os.listdir(os.path.dirname(path)))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = sio.read_scan(path, **kwargs)
    except Exception as exc:  # returned, for the caller to assert on
        result = exc
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"{path}: {elapsed:.1f} s"
    assert peak < MAX_BYTES, f"{path}: peak {peak / 2**20:.0f} MB"
    assert set(os.listdir(os.path.dirname(path))) == before  # nothing written beside the input
    return result


def fails_cleanly(path, match, error=sio.ScanFormatError, **kwargs):
    """The read raises ``error``, one line, starting with the file's path, matching ``match``."""
    exc = read_bounded(str(path), **kwargs)
    assert isinstance(exc, error), f"expected {error.__name__}, got {exc!r}"
    message = str(exc)
    assert "\n" not in message, message
    assert message.startswith(str(path) + ": "), message
    import re

    assert re.search(match, message), f"{match!r} not in {message!r}"
    return message


@pytest.fixture(params=["plain", "unicode"])
def folder(request, tmp_path):
    """A folder for the hostile files: plain, and one whose name is not ASCII."""
    d = tmp_path / ("in" if request.param == "plain" else "scän 日本 ✓")
    d.mkdir()
    return d


# -- PLY ------------------------------------------------------------------------------------

def _ply(folder, name, header_lines, body=b"", fmt="binary_little_endian"):
    head = "\n".join(["ply", f"format {fmt} 1.0", *header_lines, "end_header"]) + "\n"
    path = folder / name
    path.write_bytes(head.encode() + body)
    return path


XYZ = ["property float x", "property float y", "property float z"]


def test_ply_billion_vertices_in_a_small_file(folder):
    path = _ply(folder, "big.ply", ["element vertex 4000000000", *XYZ], b"\0" * 1200)
    fails_cleanly(path, r"truncated: the PLY header declares 4000000000 vertices \(48000000000 bytes\) but only 1200")
    path = _ply(folder, "bigascii.ply", ["element vertex 4000000000", *XYZ], b"1 2 3\n" * 10, fmt="ascii")
    fails_cleanly(path, r"truncated: the PLY header declares 4000000000 vertices but only 10 lines")


def test_ply_huge_element_before_the_vertices(folder):
    path = _ply(folder, "pre.ply", ["element camera 3000000000", "property double k", "element vertex 2", *XYZ],
                b"\0" * 64)
    fails_cleanly(path, r"truncated: the PLY header declares 2 vertices")


def test_ply_zero_negative_and_garbage_counts(folder):
    fails_cleanly(_ply(folder, "zero.ply", ["element vertex 0", *XYZ]), r"contains no points")
    fails_cleanly(_ply(folder, "neg.ply", ["element vertex -5", *XYZ], b"\0" * 60), r"header line 3 does not parse")
    fails_cleanly(_ply(folder, "word.ply", ["element vertex many", *XYZ]), r"header line 3 does not parse")


def test_ply_list_properties(folder):
    path = _ply(folder, "list.ply", ["element vertex 2", *XYZ, "property list uchar int idx"], b"\0" * 64)
    fails_cleanly(path, r"'vertex' element has list properties")
    path = _ply(folder, "listfirst.ply", ["element face 1", "property list uchar int idx", "element vertex 1", *XYZ],
                b"\3" + b"\0" * 40)
    fails_cleanly(path, r"element 'face' with list properties precedes 'vertex'")
    path = _ply(folder, "badlist.ply", ["element vertex 1", *XYZ, "property list uchar quaternion idx"])
    fails_cleanly(path, r"unknown type 'quaternion'")


def test_ply_lying_property_table(folder):
    fails_cleanly(_ply(folder, "noz.ply", ["element vertex 1", "property float x", "property float y"], b"\0" * 8),
                  r"no z property")
    fails_cleanly(_ply(folder, "dup.ply", ["element vertex 1", *XYZ, "property float x"], b"\0" * 16),
                  r"repeats the property x")
    fails_cleanly(_ply(folder, "type.ply", ["element vertex 1", "property float128 x"]), r"unknown type 'float128'")
    fails_cleanly(_ply(folder, "fmt.ply", ["element vertex 1", *XYZ], fmt="binary_middle_endian"),
                  r"unknown PLY format")


def test_ply_truncated_garbage_and_headerless(folder):
    rec = np.zeros((10, 3), "<f4")
    fails_cleanly(_ply(folder, "cut.ply", ["element vertex 10", *XYZ], rec.tobytes()[:-5]), r"truncated")
    fails_cleanly(_ply(folder, "junk.ply", ["element vertex 2", *XYZ], b"\xff\xfe garbage\n1 2\n", fmt="ascii"),
                  r"(non-ASCII|does not parse)")
    (folder / "noend.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\n" + b"x" * 5000)
    fails_cleanly(folder / "noend.ply", r"no 'end_header'")
    (folder / "noise.ply").write_bytes(os.urandom(3000))
    fails_cleanly(folder / "noise.ply", r"not a PLY file")
    (folder / "latin.ply").write_bytes(b"ply\nformat ascii 1.0\ncomment \xe9\xe8\nend_header\n")
    fails_cleanly(folder / "latin.ply", r"not ASCII")


def test_ply_wrong_endianness_reads_as_declared(folder):
    """Byte order cannot be detected: the header is obeyed, and the values are the swapped ones."""
    rec = np.arange(12, dtype="<f4").reshape(4, 3)
    path = _ply(folder, "swapped.ply", ["element vertex 4", *XYZ], rec.tobytes(), fmt="binary_big_endian")
    scan = read_bounded(str(path))
    np.testing.assert_array_equal(scan.points, rec.view(">f4").astype(np.float32))


# -- PCD ------------------------------------------------------------------------------------

def _pcd(folder, name, fields="x y z", size="4 4 4", type_="F F F", count="1 1 1", width="100", height="1",
         points="100", data="binary", body=b""):
    lines = ["# .PCD v0.7", "VERSION 0.7", f"FIELDS {fields}", f"SIZE {size}", f"TYPE {type_}", f"COUNT {count}",
             f"WIDTH {width}", f"HEIGHT {height}", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {points}", f"DATA {data}"]
    path = folder / name
    path.write_bytes(("\n".join(lines) + "\n").encode() + body)
    return path


def test_pcd_counts(folder):
    body = b"\0" * 1200
    fails_cleanly(_pcd(folder, "count0.pcd", count="0 0 0", body=body), r"COUNT must be at least 1 .* got 0 0 0")
    fails_cleanly(_pcd(folder, "countneg.pcd", count="1 -1 1", body=body), r"COUNT must be at least 1")
    fails_cleanly(_pcd(folder, "neg.pcd", points="-5", body=body), r"negative size .*POINTS -5")
    fails_cleanly(_pcd(folder, "negw.pcd", width="-100", height="-1", body=body), r"negative size")
    fails_cleanly(_pcd(folder, "lie.pcd", width="10", height="10", points="50", body=body),
                  r"POINTS 50 is not WIDTH x HEIGHT = 10 x 10")
    fails_cleanly(_pcd(folder, "zero.pcd", width="0", points="0"), r"contains no points")


def test_pcd_billion_points(folder):
    fails_cleanly(_pcd(folder, "big.pcd", width="1000000000", points="1000000000", body=b"\0" * 1200),
                  r"truncated: the PCD header declares 1000000000 points \(12000000000 bytes\) but only 1200")
    fails_cleanly(_pcd(folder, "bigascii.pcd", width="1000000000", points="1000000000", data="ascii",
                       body=b"1 2 3\n" * 5), r"ascii PCD data has 5 rows of 3 values; .* declares 1000000000 points")


def test_pcd_compressed_bombs(folder):
    # declares the uncompressed size 300M points need, from 100 compressed bytes: more than LZF can expand to
    n = 300_000_000
    body = struct.pack("<II", 100, n * 12) + b"\0" * 100
    fails_cleanly(_pcd(folder, "lzf.pcd", width=str(n), points=str(n), data="binary_compressed", body=body),
                  r"more than LZF can produce from 100 compressed bytes")
    body = struct.pack("<II", 100, 999) + b"\0" * 100
    fails_cleanly(_pcd(folder, "size.pcd", data="binary_compressed", body=body),
                  r"declares 999 uncompressed bytes, the header's points need 1200")
    body = struct.pack("<II", 5000, 1200) + b"\0" * 100
    fails_cleanly(_pcd(folder, "cut.pcd", data="binary_compressed", body=body), r"truncated: .* declares 5000 compressed")
    # within LZF's reach but over the caller's cap
    body = struct.pack("<II", 100, 1200) + b"\0" * 100
    fails_cleanly(_pcd(folder, "cap.pcd", data="binary_compressed", body=body), r"over the 1000 B limit",
                  max_bytes=1000)


def test_pcd_compressed_garbage_fails_quietly(folder, capfd):
    pytest.importorskip("open3d")
    body = struct.pack("<II", 100, 1200) + np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8).tobytes()
    fails_cleanly(_pcd(folder, "garbage.pcd", data="binary_compressed", body=body), r"could not be decoded")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # Open3D's own warnings are silenced: the error says it once


def test_pcd_bad_fields_and_garbage(folder):
    fails_cleanly(_pcd(folder, "type.pcd", size="3 4 4"), r"unknown TYPE/SIZE pair F/3")
    fails_cleanly(_pcd(folder, "kind.pcd", type_="Q F F"), r"unknown TYPE/SIZE pair Q/4")
    fails_cleanly(_pcd(folder, "dup.pcd", fields="x y x", body=b"\0" * 1200), r"repeats the field 'x'")
    fails_cleanly(_pcd(folder, "len.pcd", size="4 4"), r"different lengths")
    fails_cleanly(_pcd(folder, "mode.pcd", data="zstd"), r"unknown PCD DATA mode 'zstd'")
    fails_cleanly(_pcd(folder, "words.pcd", width="lots"), r"header is incomplete or malformed")
    fails_cleanly(_pcd(folder, "text.pcd", data="ascii", width="2", points="2", body=b"1 2 3\nfoo bar baz\n"),
                  r"ascii PCD data does not parse")
    (folder / "noise.pcd").write_bytes(bytes(range(256)) * 8)
    fails_cleanly(folder / "noise.pcd", r"(not a PCD file|no DATA line)")


def test_pcd_padding_fields_are_dropped(folder):
    rec = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("_0", "<f4"), ("_1", "<f4")])
    rec["x"] = [1, 2]
    path = _pcd(folder, "pad.pcd", fields="x y z _ _", size="4 4 4 4 4", type_="F F F F F", count="1 1 1 1 1",
                width="2", points="2", body=rec.tobytes())
    scan = read_bounded(str(path))
    np.testing.assert_array_equal(scan.points[:, 0], [1, 2])
    assert scan.attributes == {}


# -- text -----------------------------------------------------------------------------------

def test_text_hostile(folder):
    (folder / "count.pts").write_text("4000000000\n1 2 3\n")
    fails_cleanly(folder / "count.pts", r"the first line declares 4000000000 points but 1 rows follow")
    (folder / "bin.xyz").write_bytes(os.urandom(2000) + b"\xff")
    fails_cleanly(folder / "bin.xyz", r"is not a text point file")
    (folder / "ragged.txt").write_text("1 2 3\n4 5 6 7\n")
    fails_cleanly(folder / "ragged.txt", r"text point data does not parse")
    (folder / "six.csv").write_text("1,2,3,4,5,6\n7,8,9,10,11,12\n")
    fails_cleanly(folder / "six.csv", r"6 unnamed columns are ambiguous: x,y,z,red,green,blue or x,y,z,nx,ny,nz")
    fails_cleanly(folder / "six.csv", r"columns= names 4 columns but the file has 6", columns="x,y,z,intensity")
    scan = read_bounded(str(folder / "six.csv"), columns="x,y,z,nx,ny,nz")
    np.testing.assert_array_equal(scan.normals, [[4, 5, 6], [10, 11, 12]])
    with pytest.raises(sio.InputError, match=r"columns 'a,b,c' must name x, y and z"):
        sio.read_scan(folder / "six.csv", columns="a,b,c")
    (folder / "named.csv").write_text("x,y,z,nx,ny,nz\n1,2,3,4,5,6\n")  # a header line names the columns
    np.testing.assert_array_equal(read_bounded(str(folder / "named.csv")).normals, [[4, 5, 6]])
    (folder / "badnames.csv").write_text("a,b,c\n1,2,3\n")
    fails_cleanly(folder / "badnames.csv", r"header line: columns 'a,b,c' must name x, y and z")
    (folder / "dupnames.txt").write_text("x y z x\n1 2 3 4\n")
    fails_cleanly(folder / "dupnames.txt", r"header line: columns 'x,y,z,x' name x more than once")
    (folder / "onlyheader.csv").write_text("x,y,z\n")
    fails_cleanly(folder / "onlyheader.csv", r"contains no points \(only a header line\)")


# -- KITTI / nuScenes .bin and .label ---------------------------------------------------------

def test_bin_layouts_are_never_guessed(folder):
    np.arange(80 * 4, dtype="<f4").tofile(folder / "both.bin")  # 1280 bytes: 80 KITTI or 64 nuScenes points
    msg = fails_cleanly(folder / "both.bin", r"ambiguous: 1280 bytes fit KITTI records \(x,y,z,intensity: 80 points\) "
                                            r"and nuScenes records \(x,y,z,intensity,ring: 64 points\)")
    assert "format='kitti' or 'nuscenes'" in msg
    assert len(read_bounded(str(folder / "both.bin"), format="kitti")) == 80
    sweep = read_bounded(str(folder / "both.bin"), format="nuscenes")
    assert len(sweep) == 64 and sweep.format == "nuscenes"
    np.testing.assert_array_equal(sweep.attributes["ring"], np.arange(4, 320, 5))
    np.arange(7 * 5, dtype="<f4").tofile(folder / "five.bin")  # 140 bytes: only nuScenes fits
    fails_cleanly(folder / "five.bin", r"not a multiple of 16: .* fits nuScenes records .*7 points.*\*\.pcd\.bin")
    np.arange(7 * 5, dtype="<f4").tofile(folder / "n015__LIDAR_TOP__1.pcd.bin")
    assert read_bounded(str(folder / "n015__LIDAR_TOP__1.pcd.bin")).format == "nuscenes"
    with pytest.raises(sio.UnsupportedFormatError, match=r"x\.pcd\.bin: cannot write '\.pcd\.bin'"):
        sio.write_scan(folder / "x.pcd.bin", np.zeros((3, 3)))  # 4-float records would read back as 5-float
    (folder / "cut.pcd.bin").write_bytes(b"\0" * 33)
    fails_cleanly(folder / "cut.pcd.bin", r"size 33 bytes is not a multiple of 20: not a nuScenes sweep")
    fails_cleanly(folder / "five.bin", r"size 140 bytes is not a multiple of 24: not float32 records of x,y,z,a,b,c",
                  columns="x,y,z,a,b,c")


def test_bin_in_a_velodyne_folder_is_kitti(folder):
    (folder / "velodyne").mkdir()
    np.zeros((80, 4), "<f4").tofile(folder / "velodyne" / "000000.bin")
    assert len(read_bounded(str(folder / "velodyne" / "000000.bin"))) == 80


def test_label_files(folder):
    np.zeros((10, 4), "<f4").tofile(folder / "s.bin")
    (folder / "s.label").write_bytes(b"\0" * 41)  # the error names the label file, not the scan
    msg = str(read_bounded(str(folder / "s.bin")))
    assert msg.startswith(str(folder / "s.label") + ": size 41 bytes is not a multiple of 4"), msg
    (folder / "s.label").write_bytes(b"\0" * 400000)
    msg = str(read_bounded(str(folder / "s.bin")))
    assert msg.startswith(str(folder / "s.label")) and "holds 100000 labels but the scan has 10 points" in msg
    fails_cleanly(folder / "s.label", r"a \.label file holds labels, not points")


# -- NumPy ----------------------------------------------------------------------------------

def _npy_header(shape, descr="<f4", fortran=False):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def test_npy_lying_headers(folder):
    (folder / "huge.npy").write_bytes(_npy_header((10**12, 3)) + b"\0" * 48)
    fails_cleanly(folder / "huge.npy", r"its header lies: it declares shape \(1000000000000, 3\) \(float32, 10\.9 TB\) "
                                       r"but only 48 bytes follow")
    (folder / "neg.npy").write_bytes(_npy_header((-4, 3)) + b"\0" * 48)
    fails_cleanly(folder / "neg.npy", r"declares the shape \(-4, 3\)")
    (folder / "void.npy").write_bytes(_npy_header((4, 3), "|V0"))
    fails_cleanly(folder / "void.npy", r"zero-size items")
    (folder / "magic.npy").write_bytes(b"\x93NUMPY\x09\x00" + b"\0" * 100)
    fails_cleanly(folder / "magic.npy", r"is not a readable NumPy file")
    (folder / "dict.npy").write_bytes(b"\x93NUMPY\x01\x00\x20\x00{'descr': __import__('os')}     \n")
    fails_cleanly(folder / "dict.npy", r"is not a readable NumPy file")


def test_npy_types(folder):
    np.save(folder / "obj.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    fails_cleanly(folder / "obj.npy", r"holds Python objects .*never loaded")
    np.save(folder / "cplx.npy", np.ones((5, 3), np.complex64))
    fails_cleanly(folder / "cplx.npy", r"holds a complex64 array; expected real numbers")
    np.save(folder / "six.npy", np.zeros((5, 6), np.float32))
    fails_cleanly(folder / "six.npy", r"6 unnamed columns are ambiguous")
    big_endian = np.arange(12, dtype=">f8").reshape(4, 3)
    np.save(folder / "be.npy", big_endian)
    np.testing.assert_array_equal(read_bounded(str(folder / "be.npy")).points, big_endian)
    fortran = np.asfortranarray(np.arange(12, dtype="<f4").reshape(3, 4))
    np.save(folder / "f.npy", fortran)
    np.testing.assert_array_equal(read_bounded(str(folder / "f.npy")).intensity, fortran[:, 3])


@pytest.fixture(scope="module")
def bomb_bytes(tmp_path_factory):
    """700 MB of zeros deflated into a zip of under a megabyte (made once: inflating costs seconds)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    n = 700 * 2**20 // 12
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("points.npy", "w", force_zip64=True) as f:
            f.write(_npy_header((n, 3)))
            zeros = bytes(1 << 22)
            left = n * 12
            while left:
                f.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
    return path.read_bytes()


def test_npz_compression_bomb(folder, bomb_bytes):
    """Refused from the archive's directory, never inflated."""
    assert len(bomb_bytes) < 2**20
    path = _write(folder, "bomb.npz", bomb_bytes)
    fails_cleanly(path, r"the archive would decompress to 700\.0 MB, over the 512\.0 MB limit .*max_bytes")
    fails_cleanly(path, r"would decompress to 700\.0 MB, over the 10\.0 MB limit", max_bytes=10 * 2**20)


def test_npz_lying_members(folder):
    with zipfile.ZipFile(folder / "lie.npz", "w") as z:
        z.writestr("points.npy", _npy_header((10**12, 3)) + b"\0" * 36)
    fails_cleanly(folder / "lie.npz", r"\(entry 'points'\): truncated, or its header lies: it declares shape "
                                      r"\(1000000000000, 3\)")
    with zipfile.ZipFile(folder / "junk.npz", "w") as z:
        z.writestr("points.npy", os.urandom(200))
    fails_cleanly(folder / "junk.npz", r"is not a readable NumPy file \(entry 'points'\)")
    np.savez(folder / "cplx.npz", points=np.ones((10, 3)) + 1j)
    fails_cleanly(folder / "cplx.npz", r"'points' holds complex numbers \(complex128\); expected real values")
    np.savez(folder / "cplxattr.npz", points=np.ones((10, 3)), phase=np.ones(10) * 1j)
    fails_cleanly(folder / "cplxattr.npz", r"'phase' holds complex numbers")
    np.savez(folder / "obj.npz", points=np.array([None] * 3, dtype=object))
    fails_cleanly(folder / "obj.npz", r"holds Python objects \(entry 'points'\)")
    np.savez(folder / "ok.npz", points=np.zeros((500, 3), np.float32))
    data = (folder / "ok.npz").read_bytes()
    (folder / "cut.npz").write_bytes(data[: len(data) // 2])
    fails_cleanly(folder / "cut.npz", r"is a corrupt or truncated \.npz archive")
    (folder / "noise.npz").write_bytes(b"PK\x03\x04" + os.urandom(500))
    fails_cleanly(folder / "noise.npz", r"is a corrupt or truncated \.npz archive")
    np.save(folder / "single.npz", np.zeros((3, 3)))
    (folder / "single.npz.npy").rename(folder / "single.npz")
    fails_cleanly(folder / "single.npz", r"single \.npy array saved with an \.npz extension")


def test_voxel_files_with_lying_entries(folder):
    good = dict(coords=np.array([[0, 0, 0, 0], [0, 1, 0, 0]], np.int32), feats=np.zeros((2, 1), np.float32), voxel_size=np.ones(3))
    np.savez(folder / "float.npz", **{**good, "coords": np.zeros((2, 4), np.float32)})
    fails_cleanly(folder / "float.npz", r"'coords' must be integers")
    np.savez(folder / "p2v.npz", **good, point_to_voxel=np.array([0, 5]))
    fails_cleanly(folder / "p2v.npz", r"point_to_voxel refers to rows outside \[0, 2\)")
    np.savez(folder / "shape.npz", **good, spatial_shape=np.array([-1, 4, 4]))
    fails_cleanly(folder / "shape.npz", r"is not a valid voxel file \(spatial_shape must be 3 positive ints")
    np.savez(folder / "counts.npz", **good, num_points=np.int64(3))
    fails_cleanly(folder / "counts.npz", r"num_points has shape \(\) for 2 voxels")
    np.savez(folder / "size.npz", **{**good, "voxel_size": np.zeros(3)})
    fails_cleanly(folder / "size.npz", r"is not a valid voxel file")


# -- LAS / LAZ --------------------------------------------------------------------------------

@pytest.fixture
def las_bytes():
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = [0.01, 0.01, 0.01]
    las = laspy.LasData(header)
    las.x, las.y, las.z = np.arange(3.0), np.arange(3.0), np.arange(3.0)
    buf = io.BytesIO()
    las.write(buf)
    return bytearray(buf.getvalue())


def _patched(data, offset, fmt, *values):
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_las_lying_headers(folder, las_bytes):
    assert len(read_bounded(_write(folder, "ok.las", las_bytes))) == 3
    fails_cleanly(_write(folder, "vlrs.las", _patched(las_bytes, 100, "<I", 4_000_000_000)),
                  r"declares 4000000000 variable-length records, but only 0 bytes lie between")
    fails_cleanly(_write(folder, "points.las", _patched(las_bytes, 107, "<I", 4_000_000_000)),
                  r"truncated or lying header: it declares 4000000000 points")
    fails_cleanly(_write(folder, "scale.las", _patched(las_bytes, 131, "<d", 0.0)), r"scale factors must be finite and non-zero")
    fails_cleanly(_write(folder, "nan.las", _patched(las_bytes, 155, "<d", float("nan"))), r"offsets must be finite")
    fails_cleanly(_write(folder, "offset.las", _patched(las_bytes, 96, "<I", 10**9)), r"LAS header is corrupt")
    fails_cleanly(_write(folder, "fmt.las", _patched(las_bytes, 104, "<B", 31)), r"unknown point data format 31")
    fails_cleanly(_write(folder, "rec.las", _patched(las_bytes, 105, "<H", 4)), r"record length 4 is shorter")
    fails_cleanly(_write(folder, "zero.las", _patched(las_bytes, 107, "<I", 0)), r"contains no points")
    fails_cleanly(_write(folder, "cut.las", las_bytes[:150]), r"is not a readable LAS/LAZ file \(truncated")
    fails_cleanly(_write(folder, "magic.las", b"LASX" + bytes(las_bytes[4:])), r"does not start with 'LASF'")


def test_las_lying_record_lengths(folder):
    """A LAS 1.4 file with one variable-length and one extended record, each declaring more than the file holds."""
    laspy = pytest.importorskip("laspy")
    from laspy.vlrs.vlrlist import VLRList

    header = laspy.LasHeader(point_format=6, version="1.4")
    header.add_extra_dim(laspy.ExtraBytesParams(name="ring", type=np.uint8))  # one VLR describes it
    las = laspy.LasData(header)
    las.x, las.y, las.z = np.zeros(3), np.zeros(3), np.zeros(3)
    las.evlrs = VLRList([laspy.VLR(user_id="test", record_id=1, description="d", record_data=b"x" * 10)])
    buf = io.BytesIO()
    las.write(buf)
    data = buf.getvalue()
    header_size, point_offset = struct.unpack_from("<HI", data, 94)
    evlr_start = struct.unpack_from("<Q", data, 235)[0]
    assert len(read_bounded(_write(folder, "ok14.las", data))) == 3
    fails_cleanly(_write(folder, "vlr.las", _patched(data, header_size + 20, "<H", 60000)),
                  rf"variable-length record 1 of 1 declares 60000 bytes, past byte {point_offset}")
    fails_cleanly(_write(folder, "evlr.las", _patched(data, evlr_start + 20, "<Q", 10**15)),
                  rf"extended variable-length record 1 of 1 declares 1000000000000000 bytes, past byte {len(data)}")
    fails_cleanly(_write(folder, "evlrs.las", _patched(data, 243, "<I", 4_000_000_000)),
                  r"declares 4000000000 extended records")


def test_laz_bomb_is_refused_before_decompression(folder, las_bytes):
    """A LAZ header (compressed point format) declaring 4e9 points: over max_bytes, whatever the LAZ backend."""
    data = _patched(_patched(las_bytes, 104, "<B", 3 | 0x80), 107, "<I", 4_000_000_000)
    fails_cleanly(_write(folder, "bomb.laz", data), r"the LAZ header's 4000000000 points would decompress to 126\.7 GB")


def _write(folder, name, data):
    path = folder / name
    path.write_bytes(bytes(data))
    return str(path)


# -- labels from a separate file ----------------------------------------------------------------

def test_separate_labels_files(folder):
    np.save(folder / "pts.npy", np.zeros((5, 3), np.float32))
    np.save(folder / "ok.npy", np.arange(5))
    np.testing.assert_array_equal(read_bounded(str(folder / "pts.npy"), labels=str(folder / "ok.npy")).labels, range(5))
    np.save(folder / "short.npy", np.arange(4))
    msg = str(read_bounded(str(folder / "pts.npy"), labels=str(folder / "short.npy")))
    assert msg.startswith(str(folder / "short.npy")) and "holds 4 labels but" in msg
    np.save(folder / "frac.npy", np.full(5, 0.5))
    assert "non-integer" in str(read_bounded(str(folder / "pts.npy"), labels=str(folder / "frac.npy")))
    (folder / "huge.npy").write_bytes(_npy_header((10**12,), "<i8") + b"\0" * 40)
    assert "its header lies" in str(read_bounded(str(folder / "pts.npy"), labels=str(folder / "huge.npy")))
    (folder / "l.label").write_bytes(np.arange(5, dtype="<u4").tobytes())
    np.testing.assert_array_equal(read_bounded(str(folder / "pts.npy"), labels=str(folder / "l.label")).labels, range(5))


def test_read_scan_argument_checks(tmp_path):
    np.save(tmp_path / "p.npy", np.zeros((4, 3), np.float32))
    path = tmp_path / "p.npy"
    for bad in (0, -1, 1.5, True, "1G"):
        with pytest.raises(sio.InputError, match=rf"max_bytes must be a positive whole number of bytes or None, got {bad!r}"):
            sio.read_scan(path, max_bytes=bad)
    assert len(sio.read_scan(path, max_bytes=np.int64(100))) == 4
    with pytest.raises(sio.InputError, match=r"format must be a format name such as 'nuscenes', got 3"):
        sio.read_scan(path, format=3)
    with pytest.raises(sio.UnsupportedFormatError, match=r"p\.npy: unknown format 'kitty'"):
        sio.read_scan(path, format="kitty")
    with pytest.raises(sio.InputError, match=r"columns 'x,y,z,x' name x more than once"):
        sio.read_scan(path, columns="x,y,z,x")
