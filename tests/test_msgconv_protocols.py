"""cross4d_core.msgconv.protocols: rosbags and rclpy messages satisfy the message protocols.

Two checks: at run time, ``isinstance`` against the ``runtime_checkable`` protocols (the fields
exist) on real message instances of both sources; statically, mypy on a snippet that passes
the typed rosbags message classes (``rosbags.typesys.stores.ros2_humble``, dataclasses with
annotated fields) where the protocols are expected, and on one that must be rejected (so the
static check is not vacuous). rclpy's generated message classes carry no annotations (no
``py.typed``), so mypy sees them as ``Any``: for rclpy, the run-time check is the one that bites.
"""
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv import camera_info_to_camera, image_to_rgb, pointcloud2_to_xyz, stamp_to_ns
from cross4d_core.msgconv.build import MessageBuilder, numpy_sequence
from cross4d_core.msgconv.protocols import (
    CameraInfoLike,
    HeaderLike,
    ImageLike,
    PointCloud2Like,
    PointFieldLike,
    Ros1CameraInfoLike,
    Ros1TimeLike,
    TimeLike,
)

REPO = Path(__file__).resolve().parents[1]
CAMERA = PinholeCamera(K=[[50, 0, 32], [0, 52, 24], [0, 0, 1]], width=64, height=48)
POINTS = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], dtype=np.float32)


def check_messages(cloud, image, info, header):
    """Every message satisfies its protocol (and not another's), and decodes."""
    assert isinstance(cloud, PointCloud2Like) and not isinstance(cloud, ImageLike)
    assert all(isinstance(f, PointFieldLike) for f in cloud.fields) and len(cloud.fields) == 3
    assert isinstance(image, ImageLike) and not isinstance(image, PointCloud2Like)
    assert isinstance(info, CameraInfoLike) and not isinstance(info, Ros1CameraInfoLike)
    assert isinstance(header, HeaderLike) and isinstance(header.stamp, TimeLike)
    assert not isinstance(header.stamp, Ros1TimeLike)
    np.testing.assert_array_equal(pointcloud2_to_xyz(cloud), POINTS)
    assert image_to_rgb(image).shape == (48, 64, 3)
    np.testing.assert_array_equal(camera_info_to_camera(info).K, CAMERA.K)
    assert stamp_to_ns(header.stamp) == 1_500_000_000


@pytest.mark.parametrize("store", [Stores.ROS2_HUMBLE, Stores.ROS2_KILTED])
def test_rosbags_messages_satisfy_the_protocols(store):
    make = MessageBuilder(get_typestore(store).types, numpy_sequence)
    header = make.header(1_500_000_000, "lidar")
    check_messages(make.pointcloud2(header, POINTS), make.image(header, np.zeros((48, 64, 3), np.uint8), "rgb8"),
                   make.camera_info(header, CAMERA), header)


def test_rclpy_messages_satisfy_the_protocols():
    pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels not installed: run `make setup`")
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
    from std_msgs.msg import Header

    from cross4d_core.msgconv.build import array_sequence

    # The classes themselves, with their defaults ...
    assert isinstance(PointCloud2(), PointCloud2Like) and isinstance(PointField(), PointFieldLike)
    assert isinstance(Image(), ImageLike) and isinstance(CameraInfo(), CameraInfoLike)
    assert isinstance(Header(), HeaderLike) and isinstance(Time(), TimeLike)
    # ... and filled by the builder the nodes use.
    types = {"builtin_interfaces/msg/Time": Time, "std_msgs/msg/Header": Header, "sensor_msgs/msg/Image": Image,
             "sensor_msgs/msg/PointCloud2": PointCloud2, "sensor_msgs/msg/PointField": PointField,
             "sensor_msgs/msg/CameraInfo": CameraInfo, "sensor_msgs/msg/RegionOfInterest": RegionOfInterest}
    make = MessageBuilder(types, array_sequence)
    header = make.header(1_500_000_000, "lidar")
    check_messages(make.pointcloud2(header, POINTS), make.image(header, np.zeros((48, 64, 3), np.uint8), "rgb8"),
                   make.camera_info(header, CAMERA), header)


def test_ros1_spellings_satisfy_the_ros1_protocols():
    types = get_typestore(Stores.ROS1_NOETIC).types
    info = types["sensor_msgs/msg/CameraInfo"](
        header=types["std_msgs/msg/Header"](seq=0, stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                            frame_id="camera"),
        height=48, width=64, distortion_model="plumb_bob", D=np.zeros(5), K=CAMERA.K.reshape(-1),
        R=np.eye(3).reshape(-1), P=np.zeros(12), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    assert isinstance(info, Ros1CameraInfoLike) and not isinstance(info, CameraInfoLike)
    np.testing.assert_array_equal(camera_info_to_camera(info).K, CAMERA.K)

    class RospyTime:  # rospy.Time's fields
        secs, nsecs = 2, 5

    assert isinstance(RospyTime(), Ros1TimeLike) and not isinstance(RospyTime(), TimeLike)
    assert stamp_to_ns(RospyTime()) == 2_000_000_005


ACCEPTED = """
from rosbags.typesys.stores import ros1_noetic as ros1, ros2_humble as ros2

from cross4d_core.msgconv import camera_info_to_camera, image_to_rgb, pointcloud2_to_xyz, stamp_to_ns
from cross4d_core.msgconv.pointcloud2 import PointFieldSpec, pointcloud2_dtype
from cross4d_core.msgconv.protocols import (
    CameraInfoLike, HeaderLike, ImageLike, PointCloud2Like, PointFieldLike, Ros1CameraInfoLike, TimeLike,
)


def protocols(cloud: ros2.sensor_msgs__msg__PointCloud2, field: ros2.sensor_msgs__msg__PointField,
              image: ros2.sensor_msgs__msg__Image, info: ros2.sensor_msgs__msg__CameraInfo,
              info1: ros1.sensor_msgs__msg__CameraInfo, header: ros2.std_msgs__msg__Header,
              time: ros2.builtin_interfaces__msg__Time, spec: PointFieldSpec) -> None:
    a: PointCloud2Like = cloud
    b: PointFieldLike = field
    c: ImageLike = image
    d: CameraInfoLike = info
    e: Ros1CameraInfoLike = info1
    f: HeaderLike = header
    g: TimeLike = time
    h: PointFieldLike = spec


def converters(cloud: ros2.sensor_msgs__msg__PointCloud2, image: ros2.sensor_msgs__msg__Image,
               info: ros2.sensor_msgs__msg__CameraInfo, info1: ros1.sensor_msgs__msg__CameraInfo) -> None:
    pointcloud2_to_xyz(cloud)
    image_to_rgb(image)
    camera_info_to_camera(info)
    camera_info_to_camera(info1)
    stamp_to_ns(cloud.header.stamp)
    pointcloud2_dtype([PointFieldSpec("x", 0, 7)], 4, False)
"""

REJECTED = """
from rosbags.typesys.stores import ros2_humble as ros2

from cross4d_core.msgconv import pointcloud2_to_xyz, stamp_to_ns
from cross4d_core.msgconv.protocols import CameraInfoLike


def wrong(image: ros2.sensor_msgs__msg__Image, info: ros2.sensor_msgs__msg__CameraInfo) -> None:
    pointcloud2_to_xyz(image)  # line 9: an Image is no PointCloud2
    stamp_to_ns(info.header)  # line 10: a Header is no Time
    as_info: CameraInfoLike = image  # line 11: nor a CameraInfo
"""


def run_mypy(tmp_path: Path, source: str) -> tuple[int, str]:
    api = pytest.importorskip("mypy.api", reason="mypy not installed: run `make setup`")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(source))
    # The project's configuration and cache (cross4d_core is checked from the source tree).
    stdout, stderr, status = api.run(["--config-file", str(REPO / "mypy.ini"), "--cache-dir",
                                      str(REPO / ".mypy_cache"), "--no-error-summary", str(snippet)])
    return status, stdout + stderr


def test_mypy_accepts_rosbags_message_classes_for_the_protocols(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    status, output = run_mypy(tmp_path, ACCEPTED)
    assert status == 0, output


def test_mypy_rejects_a_message_of_the_wrong_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    status, output = run_mypy(tmp_path, REJECTED)
    assert status == 1, output
    lines = {int(line.split(":")[1]) for line in output.splitlines() if ": error:" in line}
    assert lines == {9, 10, 11}, output
