"""PointCloud2 decoding / encoding in cross4d_core.msgconv, on rosbags message objects.

The reference decoder below is written independently of the implementation: it walks
every point of every row with ``struct.unpack_from``.
"""
import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rosbags.typesys import Stores, get_typestore

from cross4d_core.errors import MessageFormatError
from cross4d_core.msgconv import (
    pack_rgb,
    pointcloud2_field,
    pointcloud2_to_structured,
    pointcloud2_to_xyz,
    unpack_rgb,
    xyz_to_pointcloud2_fields,
)

TYPES = get_typestore(Stores.ROS2_KILTED).types
PointCloud2 = TYPES["sensor_msgs/msg/PointCloud2"]
PointField = TYPES["sensor_msgs/msg/PointField"]
Header = TYPES["std_msgs/msg/Header"]
Time = TYPES["builtin_interfaces/msg/Time"]

STRUCT_CHAR = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)


def cloud(fields, width, point_step, data, height=1, row_step=None, is_bigendian=False):
    """A rosbags PointCloud2; ``fields`` are (name, offset, datatype, count) tuples."""
    return PointCloud2(
        header=Header(stamp=Time(sec=1, nanosec=2), frame_id="lidar"), height=height, width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=is_bigendian, point_step=point_step,
        row_step=width * point_step if row_step is None else row_step,
        data=np.frombuffer(bytes(data), dtype=np.uint8), is_dense=False,
    )


def reference_decode(msg):
    """Per point, per field: a tuple of values, read with struct (row-major points)."""
    prefix = ">" if msg.is_bigendian else "<"
    data = bytes(msg.data)
    points = []
    for row in range(msg.height):
        for col in range(msg.width):
            base = row * msg.row_step + col * msg.point_step
            points.append({f.name: struct.unpack_from(prefix + STRUCT_CHAR[f.datatype] * f.count, data, base + f.offset)
                           for f in msg.fields})
    return points


def reference_xyz(msg, remove_nans, dtype=np.float32):
    rows = []
    for point in reference_decode(msg):
        xyz = [dtype(point[axis][0]) for axis in "xyz"]
        if remove_nans and not all(math.isfinite(v) for v in xyz):
            continue
        rows.append(xyz)
    return np.array(rows, dtype=dtype).reshape(-1, 3)


FLOAT32_MAX = 3.4028234663852886e38
#: PointField datatypes whose every value float32 holds exactly.
EXACT_IN_FLOAT32 = {INT8, UINT8, INT16, UINT16, FLOAT32}


SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}


@st.composite
def random_clouds(draw):
    """Any field types and counts, shuffled offsets with gaps (unaligned), point and row
    padding, organized or not, either byte order, trailing bytes, some NaN/Inf coordinates."""
    specs = [(axis, draw(st.integers(1, 8)), 1) for axis in "xyz"]
    specs += [(f"f{i}", draw(st.integers(1, 8)), draw(st.integers(1, 3))) for i in range(draw(st.integers(0, 3)))]
    order = draw(st.permutations(range(len(specs))))
    fields, offset = [], 0
    for i in order:
        offset += draw(st.integers(0, 3))
        name, datatype, count = specs[i]
        fields.append((name, offset, datatype, count))
        offset += SIZE[datatype] * count
    point_step = offset + draw(st.integers(0, 5))
    height, width = draw(st.integers(0, 3)), draw(st.integers(0, 5))
    row_step = width * point_step + draw(st.integers(0, 7))
    is_bigendian = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = bytearray(rng.integers(0, 256, row_step * height + draw(st.integers(0, 9)), dtype=np.uint8).tobytes())
    prefix = ">" if is_bigendian else "<"
    x_name, x_offset, x_type, _ = next(f for f in fields if f[0] == "x")
    if x_type in (FLOAT32, FLOAT64):
        for row in range(height):
            for col in range(width):
                special = draw(st.sampled_from([None, None, math.nan, math.inf, -math.inf]))
                if special is not None:
                    struct.pack_into(prefix + STRUCT_CHAR[x_type], data, row * row_step + col * point_step + x_offset,
                                     special)
    return cloud(fields, width, point_step, data, height=height, row_step=row_step, is_bigendian=is_bigendian)


@given(random_clouds())
def test_structured_matches_reference_decoder(msg):
    decoded = pointcloud2_to_structured(msg)
    reference = reference_decode(msg)
    assert decoded.shape == (msg.height * msg.width,)
    assert decoded.dtype.itemsize == msg.point_step
    for f in msg.fields:
        expected = np.array([p[f.name] for p in reference], dtype=decoded.dtype[f.name].base)
        expected = expected.reshape(decoded[f.name].shape)
        np.testing.assert_array_equal(decoded[f.name], expected)
    organized = pointcloud2_to_structured(msg, organized=True)
    assert organized.shape == (msg.height, msg.width)
    for f in msg.fields:
        np.testing.assert_array_equal(organized[f.name].reshape(decoded[f.name].shape), decoded[f.name])


@given(random_clouds(), st.booleans())
def test_xyz_matches_reference_decoder(msg, remove_nans):
    before = bytes(msg.data)
    exact = all(f.datatype in EXACT_IN_FLOAT32 for f in msg.fields if f.name in ("x", "y", "z"))
    overflow = [v for point in reference_decode(msg) for v in (point[a][0] for a in "xyz")
                if math.isfinite(v) and abs(v) > FLOAT32_MAX]
    if overflow:  # only FLOAT64 fields can hold such values: a rejection, not a dropped Inf
        match = r"PointCloud2\.fields\['[xyz]'\]: finite value .* overflows float32"
        with pytest.raises(MessageFormatError, match=match):
            pointcloud2_to_xyz(msg, remove_nans=remove_nans)
        return
    xyz = pointcloud2_to_xyz(msg, remove_nans=remove_nans)
    assert xyz.dtype == (np.float32 if exact else np.float64)
    np.testing.assert_array_equal(xyz, reference_xyz(msg, remove_nans, np.float32 if exact else np.float64))
    if remove_nans:
        assert np.isfinite(xyz).all()
    assert bytes(msg.data) == before  # never mutates the message (big-endian included)


def test_known_organized_cloud_with_padding_and_mixed_types():
    # x FLOAT64, y INT16, z UINT8, intensity FLOAT32 x2, 3 pad bytes; 2 rows of 2 + 5 row pad bytes.
    fields = [("x", 0, FLOAT64, 1), ("y", 8, INT16, 1), ("z", 10, UINT8, 1), ("intensity", 11, FLOAT32, 2)]
    point_step, row_step = 22, 49
    values = [[(1.5, -2, 3, (0.25, 7.0)), (math.nan, 4, 5, (1.0, 2.0))],
              [(-6.0, 300, 255, (3.0, 4.0)), (8.0, -32768, 0, (5.0, 6.0))]]
    data = bytearray(row_step * 2)
    for r, row in enumerate(values):
        for c, (x, y, z, intensity) in enumerate(row):
            struct.pack_into("<dhBff", data, r * row_step + c * point_step, x, y, z, *intensity)
    msg = cloud(fields, 2, point_step, data, height=2, row_step=row_step)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg, remove_nans=False),
                                  [[1.5, -2, 3], [np.nan, 4, 5], [-6, 300, 255], [8, -32768, 0]])
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), [[1.5, -2, 3], [-6, 300, 255], [8, -32768, 0]])
    organized = pointcloud2_to_structured(msg, organized=True)
    np.testing.assert_array_equal(organized["intensity"][1, 0], [3.0, 4.0])
    np.testing.assert_array_equal(pointcloud2_field(msg, "intensity")[:, 1], [7.0, 2.0, 4.0, 6.0])


UTM_POINTS = np.array([[512345.1234, 5412345.6789, 412.0005], [512346.0001, 5412344.9999, 411.9991],
                       [499999.9995, 5400000.0005, -0.0005]])


def float64_cloud(points: np.ndarray):
    """An unorganized little-endian cloud with FLOAT64 x, y, z and a FLOAT32 intensity (struct-packed)."""
    data = b"".join(struct.pack("<dddf4x", *p, 1.0) for p in points)
    return cloud([("x", 0, FLOAT64, 1), ("y", 8, FLOAT64, 1), ("z", 16, FLOAT64, 1), ("intensity", 24, FLOAT32, 1)],
                 len(points), 32, data)


def test_float64_utm_coordinates_keep_their_millimetres():
    xyz = pointcloud2_to_xyz(float64_cloud(UTM_POINTS))
    assert xyz.dtype == np.float64
    np.testing.assert_array_equal(xyz, UTM_POINTS)
    # what a float32 cast would have done: y = 5412345.6789 -> 5412345.5 (0.18 m off)
    assert abs(float(np.float32(UTM_POINTS[0, 1])) - UTM_POINTS[0, 1]) > 0.1


def test_finite_float64_beyond_float32_is_rejected_naming_the_field():
    points = UTM_POINTS.copy()
    points[2, 1] = 1e39
    with pytest.raises(MessageFormatError, match=r"PointCloud2\.fields\['y'\]: finite value 1e\+39 at point 2 "
                                                 r"overflows float32"):
        pointcloud2_to_xyz(float64_cloud(points))
    points[2, 1] = math.inf  # a real Inf is a dropped point, as ever
    np.testing.assert_array_equal(pointcloud2_to_xyz(float64_cloud(points)), UTM_POINTS[:2])


def test_float64_points_encode_as_float64_fields():
    fields, point_step, data = xyz_to_pointcloud2_fields(UTM_POINTS)
    expected = [("x", 0, FLOAT64), ("y", 8, FLOAT64), ("z", 16, FLOAT64)]
    assert [(f.name, f.offset, f.datatype) for f in fields] == expected
    assert point_step == 24 and data == UTM_POINTS.astype("<f8").tobytes()


def test_structured_view_is_zero_copy_and_read_only():
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("ring", 16, UINT16, 1)]
    msg = cloud(fields, 4, 20, np.arange(80, dtype=np.uint8))
    view = pointcloud2_to_structured(msg)
    assert np.shares_memory(view, msg.data)
    with pytest.raises(ValueError):
        view["x"][0] = 1.0


def test_big_endian_is_a_copy_and_message_untouched():
    data = struct.pack(">fffH2x", 1.0, 2.0, 3.0, 513) + struct.pack(">fffH2x", -1.0, math.inf, 0.5, 7)
    msg = cloud([("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("ring", 12, UINT16, 1)],
                2, 16, data, is_bigendian=True)
    decoded = pointcloud2_to_structured(msg)
    assert not np.shares_memory(decoded, msg.data)
    assert decoded.dtype["ring"].isnative
    np.testing.assert_array_equal(decoded["ring"], [513, 7])
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), [[1, 2, 3]])
    assert bytes(msg.data) == data


def test_empty_cloud():
    msg = cloud([("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)], 0, 12, b"", height=0)
    assert pointcloud2_to_xyz(msg).shape == (0, 3)
    assert pointcloud2_to_structured(msg).shape == (0,)


@given(points=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=20).map(
           lambda s: (s[0], 3))),
       dim=st.integers(0, 5), with_rgb=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_encode_decode_round_trip(points, dim, with_rgb, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (len(points), 3), dtype=np.uint8) if with_rgb else None
    embedding = rng.standard_normal((len(points), dim)).astype(np.float32) if dim else None
    fields, point_step, data = xyz_to_pointcloud2_fields(points, rgb=rgb, embedding=embedding)
    assert isinstance(data, bytes) and len(data) == len(points) * point_step
    assert point_step == 12 + 4 * with_rgb + 4 * dim
    msg = cloud([tuple(f) for f in fields], len(points), point_step, data)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg, remove_nans=False), points)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), points[np.isfinite(points).all(axis=1)])
    decoded = pointcloud2_to_structured(msg)
    if with_rgb:
        np.testing.assert_array_equal(unpack_rgb(decoded["rgb"]), rgb)
    if dim:
        np.testing.assert_array_equal(decoded["embedding"].reshape(len(points), dim), embedding)
    # The reference decoder agrees on the encoded bytes too.
    for point, row in zip(reference_decode(msg), points):
        np.testing.assert_array_equal(np.array([point[a][0] for a in "xyz"], dtype=np.float32), row)


def test_rgb_packing_is_the_rviz_layout():
    packed = pack_rgb(np.array([[255, 0, 0], [0, 128, 0], [1, 2, 3]], dtype=np.uint8))
    assert [struct.unpack("<I", struct.pack("<f", v))[0] for v in packed] == [0xFF0000, 0x008000, 0x010203]


def test_rclpy_style_array_data_is_viewed_without_copy():
    import array

    fields, point_step, data = xyz_to_pointcloud2_fields(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    buffer = array.array("B", data)
    msg = cloud([tuple(f) for f in fields], 2, point_step, b"")
    msg.data = buffer
    view = pointcloud2_to_structured(msg)
    assert np.shares_memory(view, np.frombuffer(buffer, dtype=np.uint8))
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), [[1, 2, 3], [4, 5, 6]])


XYZ = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]


@pytest.mark.parametrize("fields, width, height, point_step, row_step, size, match", [
    (XYZ, 4, 1, 12, 48, 40, r"PointCloud2\.data: 40 bytes, need row_step\*height = 48\*1 = 48"),
    (XYZ, 2, 3, 12, 24, 70, r"PointCloud2\.data: 70 bytes, need row_step\*height = 24\*3 = 72"),
    (XYZ, 4, 1, 12, 40, 48, r"PointCloud2\.row_step: 40 < width\*point_step = 4\*12 = 48"),
    (XYZ, 4, 1, 10, 40, 48, r"PointCloud2\.point_step: 10 is smaller than field 'z' \(offset 8 \+ 1 x 4 bytes = 12\)"),
    (XYZ + [("t", 10, FLOAT64, 1)], 1, 1, 16, 16, 16, r"point_step: 16 is smaller than field 't'"),
    (XYZ + [("e", 12, FLOAT32, 3)], 1, 1, 20, 20, 20, r"field 'e' \(offset 12 \+ 3 x 4 bytes = 24\)"),
    (XYZ, 2, 1, 0, 0, 0, r"point_step: 0 is smaller than field 'x'"),
    ([("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1)], 1, 1, 12, 12, 12, r"no field 'z' \(fields: \['x', 'y'\]\)"),
    ([("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)], 1, 1, 12, 12, 12, r"no field 'x'"),
    ([("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 2), ("z", 12, FLOAT32, 1)], 1, 1, 16, 16, 16,
     r"fields\['y'\]\.count: 2, must be 1"),
    (XYZ + [("i", 12, 9, 1)], 1, 1, 16, 16, 16, r"fields\['i'\]\.datatype: 9 is not a PointField datatype"),
    (XYZ + [("i", 12, 0, 1)], 1, 1, 16, 16, 16, r"fields\['i'\]\.datatype: 0"),
    (XYZ + [("i", 12, UINT8, 0)], 1, 1, 16, 16, 16, r"fields\['i'\]\.count: 0, must be >= 1"),
    (XYZ + [("x", 12, FLOAT32, 1)], 1, 1, 16, 16, 16, r"duplicate field name 'x'"),
])
def test_malformed_clouds_raise_naming_field_and_values(fields, width, height, point_step, row_step, size, match):
    msg = cloud(fields, width, point_step, bytes(size), height=height, row_step=row_step)
    with pytest.raises(MessageFormatError, match=match):
        pointcloud2_to_xyz(msg)


def test_malformed_data_container_raises():
    msg = cloud(XYZ, 1, 12, bytes(12))
    msg.data = [0] * 11 + [300]
    match = r"PointCloud2\.data: byte values must lie in \[0, 255\], got \[0, 300\]"
    with pytest.raises(MessageFormatError, match=match):
        pointcloud2_to_xyz(msg)
    msg.data = list(bytes(struct.pack("<fff", 1, 2, 3)))  # a plain list of ints is accepted (copied)
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), [[1, 2, 3]])
