"""numpy -> ROS messages, for any type source: the one message builder of cross4d.

:class:`MessageBuilder` fills ``std_msgs/Header``, ``sensor_msgs/PointCloud2``,
``sensor_msgs/Image`` and ``sensor_msgs/CameraInfo`` from numpy arrays and a
:class:`~cross4d_core.geometry.camera.PinholeCamera`; it takes the message classes by ROS
type name and a packer for unbounded sequences, so the same code builds rclpy messages
(the nodes: ``cross4d_ros.messages``; sequences are ``array.array``, which rclpy takes as
is) and ``rosbags`` messages (the bag writer; sequences are numpy arrays). Every field is
given explicitly (``rosbags`` messages have no defaults).

CameraInfo of an ideal pinhole (``distortion_model == "none"``) is published as
``"plumb_bob"`` with five zero coefficients, as camera drivers do: image_geometry reads
that as "no distortion", while an empty model name means "unknown distortion"
(rectification refused).
"""
from __future__ import annotations

import array
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv.image import numpy_to_image_fields
from cross4d_core.msgconv.pointcloud2 import xyz_to_pointcloud2_fields
from cross4d_core.msgconv.protocols import HeaderLike
from cross4d_core.msgconv.stamp import ns_to_stamp_parts

#: ``array`` type codes of the unbounded sequences the builder fills and their numpy dtypes.
SEQUENCE_DTYPES = {"B": np.uint8, "d": np.float64, "f": np.float32}


def array_sequence(values: np.ndarray, typecode: str) -> array.array:
    """A sequence field for rclpy: ``array.array`` of ``typecode`` (one copy, no per-element check)."""
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values, dtype=SEQUENCE_DTYPES[typecode]).reshape(-1).tobytes())
    return out


def numpy_sequence(values: np.ndarray, typecode: str) -> np.ndarray:
    """A sequence field for rosbags: a 1-D numpy array of the sequence's dtype."""
    return np.ascontiguousarray(values, dtype=SEQUENCE_DTYPES[typecode]).reshape(-1)


class MessageBuilder:
    """Builds sensor messages from numpy.

    Args:
        types: ROS type name (``"sensor_msgs/msg/PointCloud2"``) -> message class.
        sequence: ``(array, typecode) -> field value`` for unbounded sequences (``uint8[]``
            data: ``"B"``, ``float64[]`` D: ``"d"``): :func:`array_sequence` for rclpy,
            :func:`numpy_sequence` for rosbags.

    The methods return instances of the classes in ``types`` (typed ``Any``: the type source is
    chosen at run time); a ``header`` argument is anything :class:`HeaderLike`.
    """

    def __init__(self, types: Mapping[str, Any], sequence: Callable[[np.ndarray, str], Any]) -> None:
        self.types = types
        self.sequence = sequence

    def time(self, stamp_ns: int) -> Any:
        """``builtin_interfaces/Time`` of integer nanoseconds."""
        sec, nanosec = ns_to_stamp_parts(stamp_ns)
        return self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        return self.types["std_msgs/msg/Header"](stamp=self.time(stamp_ns), frame_id=frame_id)

    def pointcloud2(self, header: HeaderLike, points: np.ndarray, rgb: np.ndarray | None = None,
                    embedding: np.ndarray | None = None, embedding_name: str = "embedding") -> Any:
        """An unorganized little-endian PointCloud2 with FLOAT32 ``x, y, z`` (metres; FLOAT64 when
        ``points`` is float64), optional packed ``rgb`` (``[N, 3]`` uint8) and optional
        ``[N, D]`` features as one FLOAT32 field of count D named ``embedding_name``.
        ``is_dense`` is True when every coordinate is finite."""
        specs, point_step, data = xyz_to_pointcloud2_fields(points, rgb=rgb, embedding=embedding)
        point_field = self.types["sensor_msgs/msg/PointField"]
        fields = [point_field(name=embedding_name if f.name == "embedding" else f.name, offset=f.offset,
                              datatype=f.datatype, count=f.count) for f in specs]
        n = len(points)
        return self.types["sensor_msgs/msg/PointCloud2"](
            header=header, height=1, width=n, fields=fields, is_bigendian=False, point_step=point_step,
            row_step=n * point_step, data=self.sequence(np.frombuffer(data, dtype=np.uint8), "B"),
            is_dense=bool(np.isfinite(np.asarray(points)).all()),
        )

    def image(self, header: HeaderLike, pixels: np.ndarray, encoding: str, is_bigendian: bool = False) -> Any:
        """An Image from ``[H, W, C]`` / ``[H, W]`` pixels in ``encoding`` (see
        :data:`cross4d_core.msgconv.IMAGE_ENCODINGS`), no row padding."""
        f = numpy_to_image_fields(pixels, encoding, is_bigendian=is_bigendian)
        return self.types["sensor_msgs/msg/Image"](
            header=header, height=f.height, width=f.width, encoding=f.encoding, is_bigendian=int(f.is_bigendian),
            step=f.step, data=self.sequence(np.frombuffer(f.data, dtype=np.uint8), "B"))

    def camera_info(self, header: HeaderLike, camera: PinholeCamera) -> Any:
        """A CameraInfo carrying ``camera``'s size, distortion, K and P (``[K | 0]`` when the camera
        has none), R = I, no binning or ROI. The extrinsic ``T_cam_from_points`` belongs to TF."""
        model, D = camera.distortion_model, camera.D
        if model == "none":
            model, D = "plumb_bob", np.zeros(5)
        P = camera.P if camera.P is not None else np.hstack([camera.K, np.zeros((3, 1))])
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                             do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=header, height=camera.height, width=camera.width, distortion_model=model,
            d=self.sequence(D, "d"), k=camera.K.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=P.reshape(-1).astype(np.float64), binning_x=0, binning_y=0, roi=roi,
        )
