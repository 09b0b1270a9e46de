"""cross4d_ros.messages builders, and rclpy vs rosbags messages decoding the same.

The rosbags side goes through real CDR: an rclpy message is serialized by rclpy and
deserialized by rosbags (the bag-reader path), and the other way round.
"""
import array
import struct

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed: run `make setup`")
pytest.importorskip("cross4d.msg", reason="cross4d messages not built: run `make setup` (colcon build)")

from cross4d.msg import ActionRecognition, PointEmbeddings  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

from cross4d_core.geometry.camera import PinholeCamera  # noqa: E402
from cross4d_core.msgconv import (  # noqa: E402
    camera_info_to_camera,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    pointcloud2_to_structured,
    pointcloud2_to_xyz,
    stamp_to_ns,
    unpack_rgb,
)
from cross4d_core.msgconv.build import MessageBuilder, numpy_sequence  # noqa: E402
from cross4d_ros.messages import (  # noqa: E402
    make_action_recognition,
    make_camera_info,
    make_header,
    make_image,
    make_point_embeddings,
    make_pointcloud2,
    stamp_msg,
)

pytestmark = pytest.mark.ros
STORE = get_typestore(Stores.ROS2_KILTED)


def via_rosbags(msg, typename):
    """rclpy message -> CDR bytes (rclpy) -> rosbags message object."""
    return STORE.deserialize_cdr(serialize_message(msg), typename)


def test_make_pointcloud2_fields_and_buffers():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    embedding = rng.standard_normal((50, 6)).astype(np.float32)
    msg = make_pointcloud2(make_header(12_250_000_000, "lidar"), points, rgb=rgb, embedding=embedding)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("embedding", 16, 7, 6)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_bigendian, msg.is_dense) == (
        1, 50, 40, 2000, False, True)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 250_000_000, "lidar")
    # Independent check of the first point's bytes.
    x, y, z, packed = struct.unpack_from("<fffI", bytes(msg.data), 0)
    assert (x, y, z) == tuple(points[0].tolist())
    assert packed == (int(rgb[0, 0]) << 16) | (int(rgb[0, 1]) << 8) | int(rgb[0, 2])
    np.testing.assert_array_equal(pointcloud2_to_xyz(msg), points)
    decoded = pointcloud2_to_structured(msg)
    np.testing.assert_array_equal(decoded["embedding"], embedding)
    np.testing.assert_array_equal(unpack_rgb(decoded["rgb"]), rgb)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))


def test_pointcloud2_rclpy_and_rosbags_decode_the_same():
    rng = np.random.default_rng(1)
    points = rng.standard_normal((40, 3)).astype(np.float32)
    points[[3, 17]] = np.nan
    msg = make_pointcloud2(make_header(10**9, "lidar"), points, rgb=rng.integers(0, 256, (40, 3), dtype=np.uint8),
                           embedding=rng.standard_normal((40, 4)).astype(np.float32))
    assert not msg.is_dense
    bag_msg = via_rosbags(msg, "sensor_msgs/msg/PointCloud2")
    assert isinstance(bag_msg.data, np.ndarray)
    np.testing.assert_array_equal(pointcloud2_to_xyz(bag_msg), pointcloud2_to_xyz(msg))
    assert pointcloud2_to_xyz(msg).shape == (38, 3)
    for name in ("x", "rgb", "embedding"):
        np.testing.assert_array_equal(pointcloud2_to_structured(bag_msg)[name], pointcloud2_to_structured(msg)[name])


def test_big_endian_rosbags_cloud_decodes_the_same_in_rclpy():
    """A big-endian, padded, organized cloud built with rosbags, serialized by rosbags,
    read back by rclpy: both decode to the same values."""
    types = STORE.types
    fields = [types["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=1)
              for n, o, d in (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("ring", 14, 4))]
    row = struct.pack(">fff2xH", 1.0, 2.0, 3.0, 7) + struct.pack(">fff2xH", 4.0, 5.0, 6.0, 8) + bytes(3)
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=5, nanosec=6), frame_id="os")
    bag_msg = types["sensor_msgs/msg/PointCloud2"](
        header=header, height=2, width=2, fields=fields, is_bigendian=True, point_step=16, row_step=35,
        data=np.frombuffer(row * 2, np.uint8), is_dense=True)
    rclpy_msg = deserialize_message(bytes(STORE.serialize_cdr(bag_msg, "sensor_msgs/msg/PointCloud2")), PointCloud2)
    expected = [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(pointcloud2_to_xyz(rclpy_msg), expected)
    np.testing.assert_array_equal(pointcloud2_to_xyz(bag_msg), expected)
    np.testing.assert_array_equal(pointcloud2_to_structured(rclpy_msg, organized=True)["ring"], [[7, 8], [7, 8]])


@pytest.mark.parametrize("encoding, dtype, channels", [
    ("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("rgba8", np.uint8, 4), ("bgra8", np.uint8, 4),
    ("mono8", np.uint8, 1), ("mono16", np.uint16, 1), ("16UC1", np.uint16, 1), ("32FC1", np.float32, 1)])
@pytest.mark.parametrize("is_bigendian", [False, True])
def test_make_image_round_trip_rclpy_and_rosbags(encoding, dtype, channels, is_bigendian):
    rng = np.random.default_rng(2)
    shape = (5, 7, channels) if channels > 1 else (5, 7)
    array_ = (rng.random(shape).astype(np.float32) if dtype == np.float32
              else rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype))
    msg = make_image(make_header(2 * 10**9, "cam"), array_, encoding, is_bigendian=is_bigendian)
    assert isinstance(msg.data, array.array)
    bag_msg = via_rosbags(msg, "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_to_numpy(msg), array_)
    np.testing.assert_array_equal(image_to_numpy(bag_msg), array_)
    if channels > 1 or encoding == "mono8":
        np.testing.assert_array_equal(image_to_rgb(bag_msg), image_to_rgb(msg))
    if encoding in ("16UC1", "32FC1"):
        np.testing.assert_array_equal(image_to_depth_m(bag_msg), image_to_depth_m(msg))


def test_image_rclpy_padded_step():
    msg = Image(height=2, width=1, encoding="bgr8", step=4, is_bigendian=False)
    msg.data = array.array("B", [1, 2, 3, 0, 4, 5, 6, 0])
    np.testing.assert_array_equal(image_to_rgb(msg), [[[3, 2, 1]], [[6, 5, 4]]])


@pytest.mark.parametrize("model, d", [("none", []), ("plumb_bob", [0.1, -0.05, 0.001, 0.0, 0.02]),
                                      ("rational_polynomial", [0.1] * 8), ("equidistant", [0.1, 0.0, 0.0, 0.01])])
def test_camera_info_round_trip_rclpy_and_rosbags(model, d):
    camera = PinholeCamera(K=[[500, 0, 320], [0, 505, 240], [0, 0, 1]], width=640, height=480,
                           distortion_model=model, D=d)
    msg = make_camera_info(make_header(3 * 10**9, "cam"), camera)
    # An ideal pinhole goes out as drivers publish it: plumb_bob with five zeros (image_geometry:
    # no distortion; an empty model would be "unknown distortion").
    sent_model, sent_d = ("plumb_bob", [0.0] * 5) if model == "none" else (model, d)
    assert msg.distortion_model == sent_model and list(msg.d) == sent_d
    for decoded in (camera_info_to_camera(msg), camera_info_to_camera(via_rosbags(msg, "sensor_msgs/msg/CameraInfo"))):
        np.testing.assert_array_equal(decoded.K, camera.K)
        np.testing.assert_array_equal(decoded.D, sent_d)
        assert (decoded.distortion_model, decoded.width, decoded.height) == (sent_model, 640, 480)
        np.testing.assert_array_equal(decoded.P, np.hstack([camera.K, np.zeros((3, 1))]))


@pytest.mark.parametrize("model, d", [("none", []), ("rational_polynomial", [0.1] * 8)])
def test_one_builder_gives_the_same_bytes_from_rclpy_and_from_rosbags_types(model, d):
    """The node's messages and the bag writer's come from one MessageBuilder: the same messages."""
    rng = np.random.default_rng(4)
    rosbags = MessageBuilder(STORE.types, numpy_sequence)
    camera = PinholeCamera(K=[[50, 0, 32], [0, 52, 24], [0, 0, 1]], width=64, height=48, distortion_model=model, D=d)
    points = rng.standard_normal((30, 3)).astype(np.float32)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    stamp = 1_700_000_000_123_456_789
    pairs = [
        ("sensor_msgs/msg/PointCloud2", make_pointcloud2(make_header(stamp, "lidar"), points),
         rosbags.pointcloud2(rosbags.header(stamp, "lidar"), points)),
        ("sensor_msgs/msg/Image", make_image(make_header(stamp, "cam"), pixels, "rgb8"),
         rosbags.image(rosbags.header(stamp, "cam"), pixels, "rgb8")),
        ("sensor_msgs/msg/CameraInfo", make_camera_info(make_header(stamp, "cam"), camera),
         rosbags.camera_info(rosbags.header(stamp, "cam"), camera)),
    ]
    for typename, rclpy_msg, bag_msg in pairs:  # (CDR padding bytes are not initialised by rclpy: compare messages)
        assert deserialize_message(bytes(STORE.serialize_cdr(bag_msg, typename)), type(rclpy_msg)) == rclpy_msg


def test_action_recognition_and_point_embeddings_builders():
    msg = make_action_recognition(make_header(10_500_000_000, "lidar"), 9 * 10**9, 10_500_000_000, 24,
                                  ["wave", "walk", "sit"],
                                  np.array([0.7, 0.2, 0.1]), "point4d-test")
    assert isinstance(msg, ActionRecognition)
    assert isinstance(msg.scores, array.array) and msg.scores.typecode == "f"
    assert (msg.label, msg.labels, msg.num_frames) == ("wave", ["wave", "walk", "sit"], 24)
    assert msg.model_id == "point4d-test"
    assert msg.score == pytest.approx(0.7) and list(msg.scores) == pytest.approx([0.7, 0.2, 0.1])
    assert stamp_to_ns(msg.window_start) == 9 * 10**9 and stamp_to_ns(msg.window_end) == 10_500_000_000
    with pytest.raises(ValueError, match="same non-zero length"):
        make_action_recognition(make_header(10**9, ""), 0, 10**9, 1, ["a"], np.array([0.5, 0.5]), "m")
    with pytest.raises(TypeError, match="integer nanoseconds, got float 10.5"):
        make_header(10.5, "lidar")  # seconds where nanoseconds belong: a unit error, not a silent 10 ns

    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    embedding = np.arange(8, dtype=np.float32).reshape(4, 2)
    emb = make_point_embeddings(make_header(10_500_000_000, "lidar"), stamp_msg(9 * 10**9), 24, points, embedding,
                                "m")
    assert isinstance(emb, PointEmbeddings) and emb.dim == 2 and emb.cloud.header.frame_id == "lidar"
    np.testing.assert_array_equal(pointcloud2_to_xyz(emb.cloud), points)
    np.testing.assert_array_equal(pointcloud2_to_structured(emb.cloud)["embedding"], embedding)
