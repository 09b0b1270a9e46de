"""Thin rclpy message builders on top of :mod:`cross4d_core.msgconv`.

Bulk fields are filled from buffers: ``uint8[]`` from an ``array.array('B')`` and
``float32[]`` from an ``array.array('f')`` (rclpy checks every element of a list or
``bytes`` in Python, an ``array.array`` of the right type code is taken as is).
Decoding needs no helper here: the :mod:`cross4d_core.msgconv` functions accept
rclpy messages directly.
"""
from __future__ import annotations

import array as pyarray
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from cross4d.msg import ActionRecognition, PointEmbeddings
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv import numpy_to_image_fields, seconds_to_stamp_parts, stamp_to_seconds, \
    xyz_to_pointcloud2_fields

__all__ = [
    "byte_array", "float32_array", "make_action_recognition", "make_camera_info", "make_header", "make_image",
    "make_point_embeddings", "make_pointcloud2", "sec_to_stamp", "stamp_to_sec",
]

#: Time -> float seconds (see :func:`cross4d_core.msgconv.stamp_to_seconds`).
stamp_to_sec = stamp_to_seconds


def sec_to_stamp(seconds: float) -> Time:
    """Float seconds -> ``builtin_interfaces/Time`` (nearest nanosecond)."""
    sec, nanosec = seconds_to_stamp_parts(seconds)
    return Time(sec=sec, nanosec=nanosec)


def make_header(stamp: float | Time, frame_id: str) -> Header:
    """A ``std_msgs/Header`` from float seconds or a Time."""
    return Header(stamp=stamp if isinstance(stamp, Time) else sec_to_stamp(stamp), frame_id=frame_id)


def byte_array(data) -> pyarray.array:
    """Any buffer (bytes, numpy array, memoryview) -> ``array.array('B')`` for a ``uint8[]`` field."""
    out = pyarray.array("B")
    out.frombytes(memoryview(data).cast("B"))
    return out


def float32_array(values) -> pyarray.array:
    """Numbers -> ``array.array('f')`` for a ``float32[]`` field."""
    out = pyarray.array("f")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float32).reshape(-1).tobytes())
    return out


def make_pointcloud2(header: Header, points: np.ndarray, rgb: np.ndarray | None = None,
                     embedding: np.ndarray | None = None) -> PointCloud2:
    """An unorganized little-endian PointCloud2 with FLOAT32 ``x, y, z`` (metres; FLOAT64 when
    ``points`` is float64), optional packed ``rgb`` (``[N, 3]`` uint8) and optional
    ``embedding`` (``[N, D]``, FLOAT32 count=D).

    ``is_dense`` is True when every coordinate is finite.
    """
    fields, point_step, data = xyz_to_pointcloud2_fields(points, rgb=rgb, embedding=embedding)
    n = len(points)
    msg = PointCloud2(
        header=header, height=1, width=n, is_bigendian=False, point_step=point_step, row_step=n * point_step,
        fields=[PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in fields],
        is_dense=bool(np.isfinite(np.asarray(points)).all()),
    )
    msg.data = byte_array(data)
    return msg


def make_image(header: Header, array: np.ndarray, encoding: str, is_bigendian: bool = False) -> Image:
    """An Image from ``[H, W, C]`` / ``[H, W]`` pixels in ``encoding`` (see
    :data:`cross4d_core.msgconv.IMAGE_ENCODINGS`), no row padding."""
    fields = numpy_to_image_fields(array, encoding, is_bigendian=is_bigendian)
    msg = Image(header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
                is_bigendian=fields.is_bigendian, step=fields.step)
    msg.data = byte_array(fields.data)
    return msg


def make_camera_info(header: Header, camera: PinholeCamera) -> CameraInfo:
    """A CameraInfo carrying ``camera``'s K, D, model, size and P (P = [K | 0] when the
    camera has none). The extrinsic ``T_cam_from_points`` belongs to TF, not to CameraInfo."""
    P = camera.P if camera.P is not None else np.hstack([camera.K, np.zeros((3, 1))])
    msg = CameraInfo(header=header, width=camera.width, height=camera.height,
                     distortion_model="" if camera.distortion_model == "none" else camera.distortion_model,
                     k=camera.K.reshape(-1).astype(np.float64), p=P.reshape(-1).astype(np.float64),
                     r=np.eye(3).reshape(-1))
    msg.d = pyarray.array("d", camera.D.tolist())
    return msg


def make_action_recognition(header: Header, window_start: float | Time, window_end: float | Time, num_frames: int,
                            labels: Sequence[str], scores: np.ndarray, model_id: str) -> ActionRecognition:
    """An ActionRecognition from top-k ``labels`` / ``scores`` (best first); ``label`` /
    ``score`` are the first entry."""
    if len(labels) == 0 or len(labels) != len(scores):
        raise ValueError(f"labels / scores: need the same non-zero length, got {len(labels)} and {len(scores)}")
    msg = ActionRecognition(
        header=header, num_frames=int(num_frames), label=str(labels[0]), score=float(scores[0]),
        labels=[str(label) for label in labels], model_id=model_id,
        window_start=window_start if isinstance(window_start, Time) else sec_to_stamp(window_start),
        window_end=window_end if isinstance(window_end, Time) else sec_to_stamp(window_end),
    )
    msg.scores = float32_array(scores)
    return msg


def make_point_embeddings(header: Header, window_start: float | Time, num_frames: int, points: np.ndarray,
                          embedding: np.ndarray, model_id: str, rgb: np.ndarray | None = None) -> PointEmbeddings:
    """A PointEmbeddings: the newest frame's ``points [N, 3]`` with ``embedding [N, D]`` (and
    optional ``rgb [N, 3]`` uint8 for viewers) in ``cloud``, which carries ``header``."""
    return PointEmbeddings(
        header=header, num_frames=int(num_frames), dim=int(np.shape(embedding)[1]), model_id=model_id,
        window_start=window_start if isinstance(window_start, Time) else sec_to_stamp(window_start),
        cloud=make_pointcloud2(header, points, rgb=rgb, embedding=embedding),
    )
