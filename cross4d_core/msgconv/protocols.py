"""What the message converters read from a message: structural types (``typing.Protocol``).

The converters of :mod:`cross4d_core.msgconv` take rclpy messages (``sensor_msgs.msg.PointCloud2``
...), ``rosbags`` messages (dataclasses of a typestore) and hand-built objects alike: anything
with the fields read. These protocols name those fields, with the types of the ROS 2 message
definitions (sensor_msgs, std_msgs, builtin_interfaces) as the two implementations hold them:

============================  ===========================  ===================================
ROS type                      rclpy                        rosbags
============================  ===========================  ===================================
``uint8[] data``              ``array.array('B')``         ``np.ndarray`` (uint8)
``float64[] d``               ``array.array('d')``         ``np.ndarray`` (float64)
``float64[9] k``, ``[12] p``  ``np.ndarray`` (float64)     ``np.ndarray`` (float64)
``PointField[] fields``       ``list``                     ``list``
============================  ===========================  ===================================

Members are read-only properties: a protocol attribute would demand a settable one, and rclpy
fields are properties (with setters that check the value), rosbags fields dataclass attributes;
both satisfy a read-only member. Only the fields the converters read are listed (no
``header``, ``is_dense``, ``r``, ``roi`` ...); a caller that reads ``msg.header`` types it with
:class:`HeaderLike`.

ROS 1 spellings are accepted where the converters accept them: ``secs``/``nsecs`` stamps
(``rospy.Time``: :class:`Ros1TimeLike`) and ``K``/``D``/``P`` camera matrices (ROS 1
CameraInfo, e.g. the ``ros1_noetic`` typestore of rosbags: :class:`Ros1CameraInfoLike`).

All protocols are :func:`typing.runtime_checkable`, so ``isinstance(msg, PointCloud2Like)``
checks that the fields exist (not their types).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12 on

#: ``uint8[]``: anything exposing the buffer protocol (``array.array``, ``np.ndarray``, ``bytes``)
#: or a sequence of ints in [0, 255] (see :func:`cross4d_core.msgconv._buffer.data_bytes`).
#: ``np.ndarray`` is named: numpy's stubs give it ``__buffer__`` from Python 3.12 on only.
ByteData: TypeAlias = "Buffer | Sequence[int] | npt.NDArray[np.uint8]"
#: ``float64[]`` / ``float64[N]``: ``array.array('d')``, a float64 ``np.ndarray`` or a sequence of floats.
FloatData: TypeAlias = Sequence[float] | npt.NDArray[np.float64]


@runtime_checkable
class TimeLike(Protocol):
    """``builtin_interfaces/msg/Time``."""

    @property
    def sec(self) -> int: ...
    @property
    def nanosec(self) -> int: ...


@runtime_checkable
class Ros1TimeLike(Protocol):
    """A ROS 1 time (``rospy.Time``: ``secs``/``nsecs``)."""

    @property
    def secs(self) -> int: ...
    @property
    def nsecs(self) -> int: ...


@runtime_checkable
class HeaderLike(Protocol):
    """``std_msgs/msg/Header`` (ROS 2: no ``seq``)."""

    @property
    def stamp(self) -> TimeLike: ...
    @property
    def frame_id(self) -> str: ...


@runtime_checkable
class PointFieldLike(Protocol):
    """``sensor_msgs/msg/PointField``."""

    @property
    def name(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def datatype(self) -> int: ...
    @property
    def count(self) -> int: ...


@runtime_checkable
class PointCloud2Like(Protocol):
    """``sensor_msgs/msg/PointCloud2``: the fields the decoders read."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def fields(self) -> Sequence[PointFieldLike]: ...
    @property
    def is_bigendian(self) -> bool: ...
    @property
    def point_step(self) -> int: ...
    @property
    def row_step(self) -> int: ...
    @property
    def data(self) -> ByteData: ...


@runtime_checkable
class ImageLike(Protocol):
    """``sensor_msgs/msg/Image``: the fields the decoders read (``is_bigendian`` is ``uint8``)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def is_bigendian(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def data(self) -> ByteData: ...


class _CameraInfoGeometry(Protocol):
    """What both spellings of CameraInfo share."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def distortion_model(self) -> str: ...


@runtime_checkable
class CameraInfoLike(_CameraInfoGeometry, Protocol):
    """``sensor_msgs/msg/CameraInfo`` (ROS 2 spelling): the fields the decoder reads."""

    @property
    def d(self) -> FloatData: ...
    @property
    def k(self) -> FloatData: ...
    @property
    def p(self) -> FloatData: ...


@runtime_checkable
class Ros1CameraInfoLike(_CameraInfoGeometry, Protocol):
    """``sensor_msgs/CameraInfo`` of ROS 1 (``D``, ``K``, ``P``): the fields the decoder reads."""

    @property
    def D(self) -> FloatData: ...
    @property
    def K(self) -> FloatData: ...
    @property
    def P(self) -> FloatData: ...
