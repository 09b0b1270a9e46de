"""rclpy message builders: :class:`cross4d_core.msgconv.build.MessageBuilder` over the rclpy
message classes, plus cross4d's own ActionRecognition / PointEmbeddings.

Bulk fields are filled from buffers: ``uint8[]`` from an ``array.array('B')`` and
``float32[]`` from an ``array.array('f')`` (rclpy checks every element of a list or
``bytes`` in Python, an ``array.array`` of the right type code is taken as is).
Decoding needs no helper here: the :mod:`cross4d_core.msgconv` functions accept
rclpy messages directly. Stamps are integer nanoseconds (:mod:`cross4d_core.msgconv.stamp`).
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from cross4d.msg import ActionRecognition, PointEmbeddings
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv.build import MessageBuilder, array_sequence

__all__ = [
    "RCLPY", "float32_array", "make_action_recognition", "make_camera_info", "make_header", "make_image",
    "make_point_embeddings", "make_pointcloud2", "stamp_msg",
]


class _RclpyTypes(dict):
    """ROS type name -> rclpy message class, imported on first use (``sensor_msgs/msg/Image``)."""

    def __missing__(self, name: str):
        package, _, type_name = name.split("/")
        cls = self[name] = getattr(importlib.import_module(f"{package}.msg"), type_name)
        return cls


#: The message builder of the nodes.
RCLPY = MessageBuilder(_RclpyTypes(), array_sequence)


def stamp_msg(stamp_ns: int) -> Time:
    """``builtin_interfaces/Time`` of integer nanoseconds."""
    return RCLPY.time(stamp_ns)


def make_header(stamp: int | Time, frame_id: str) -> Header:
    """A ``std_msgs/Header`` from integer nanoseconds or a Time."""
    return Header(stamp=stamp, frame_id=frame_id) if isinstance(stamp, Time) else RCLPY.header(stamp, frame_id)


def float32_array(values):
    """Numbers -> ``array.array('f')`` for a ``float32[]`` field."""
    return array_sequence(np.asarray(values), "f")


def make_pointcloud2(header: Header, points: np.ndarray, rgb: np.ndarray | None = None,
                     embedding: np.ndarray | None = None, embedding_name: str = "embedding") -> PointCloud2:
    """See :meth:`MessageBuilder.pointcloud2`."""
    return RCLPY.pointcloud2(header, points, rgb=rgb, embedding=embedding, embedding_name=embedding_name)


def make_image(header: Header, pixels: np.ndarray, encoding: str, is_bigendian: bool = False) -> Image:
    """See :meth:`MessageBuilder.image`."""
    return RCLPY.image(header, pixels, encoding, is_bigendian=is_bigendian)


def make_camera_info(header: Header, camera: PinholeCamera) -> CameraInfo:
    """See :meth:`MessageBuilder.camera_info`."""
    return RCLPY.camera_info(header, camera)


def _time(value: int | Time) -> Time:
    return value if isinstance(value, Time) else stamp_msg(value)


def make_action_recognition(header: Header, window_start: int | Time, window_end: int | Time, num_frames: int,
                            labels: Sequence[str], scores: np.ndarray, model_id: str) -> ActionRecognition:
    """An ActionRecognition from top-k ``labels`` / ``scores`` (best first); ``label`` /
    ``score`` are the first entry. Window bounds are integer nanoseconds or Times."""
    if len(labels) == 0 or len(labels) != len(scores):
        raise ValueError(f"labels / scores: need the same non-zero length, got {len(labels)} and {len(scores)}")
    msg = ActionRecognition(
        header=header, num_frames=int(num_frames), label=str(labels[0]), score=float(scores[0]),
        labels=[str(label) for label in labels], model_id=model_id,
        window_start=_time(window_start), window_end=_time(window_end),
    )
    msg.scores = float32_array(scores)
    return msg


def make_point_embeddings(header: Header, window_start: int | Time, num_frames: int, points: np.ndarray,
                          embedding: np.ndarray, model_id: str, rgb: np.ndarray | None = None) -> PointEmbeddings:
    """A PointEmbeddings: the newest frame's ``points [N, 3]`` with ``embedding [N, D]`` (and
    optional ``rgb [N, 3]`` uint8 for viewers) in ``cloud``, which carries ``header``."""
    return PointEmbeddings(
        header=header, num_frames=int(num_frames), dim=int(np.shape(embedding)[1]), model_id=model_id,
        window_start=_time(window_start), cloud=make_pointcloud2(header, points, rgb=rgb, embedding=embedding),
    )
