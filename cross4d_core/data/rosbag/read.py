"""Reading rosbag2 recordings: the one bag reader, and decoded, paired frames and windows.

:class:`BagReader` opens a bag directory or a bare ``.mcap`` / ``.db3`` file with
``rosbags`` (typestore :data:`TYPESTORE` for bags that carry no message definitions);
every failure is a :class:`BagFormatError` naming the bag. The bag player of the tests
and the demo (``cross4d_testing.replay``, not part of the product) reads bags through it too.

Frames are decoded with :mod:`cross4d_core.msgconv` (what the nodes see), paired by
:class:`~cross4d_core.windowing.FramePairer` and windowed by
:class:`~cross4d_core.windowing.WindowBuffer`, the nodes' own classes. Pairing offline is
exact rather than wall-clock bounded: a cloud waits until its image stream has passed the
cloud's stamp (or the bag ends), so the nearest image is found even when it was recorded
after the cloud.

The camera extrinsic (``PinholeCamera.T_cam_from_points``, cloud frame -> camera optical
frame) comes from the ``extrinsic`` argument or is composed from ``/tf_static``
(tf2_msgs/TFMessage) along the transform chain between the two frames.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cross4d_core.data.rosbag.tf import StaticTransforms
from cross4d_core.errors import BagFormatError, FrameRejected, MessageFormatError
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv import camera_info_to_camera, image_to_rgb, pointcloud2_to_xyz, seconds_to_ns, stamp_to_ns
from cross4d_core.windowing import (
    DEFAULT_MAX_FRAME_GAP_S,
    Frame,
    FramePairer,
    Window,
    WindowBuffer,
    normalise_frame_id,
)

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"
#: Auto-detect a topic by its message type (the only topic of that type in the bag).
AUTO = "auto"
#: Message definitions for bags that do not carry their own (sqlite3 bags of older recorders).
TYPESTORE = "ros2_kilted"


def typestore():
    """The ``rosbags`` typestore of :data:`TYPESTORE`."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores(TYPESTORE))


class BagReader:
    """An open rosbag2 (a bag directory, or a bare ``.mcap`` / ``.db3`` file). A context manager.

    Raises:
        FileNotFoundError: no such bag.
        BagFormatError: the storage cannot be opened or its message data is unreadable.
    """

    def __init__(self, bag: Path | str) -> None:
        from rosbags.highlevel import AnyReader

        self.bag = Path(bag)
        if not self.bag.exists():
            raise FileNotFoundError(f"{self.bag}: no such bag")
        try:
            self._reader = AnyReader([self.bag], default_typestore=typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several unrelated types for unreadable storage
            raise BagFormatError(self.bag, f"cannot open as rosbag2 (sqlite3 / mcap): {type(exc).__name__}: "
                                           f"{exc}") from exc
        self.topics = {c.topic: c.msgtype for c in self._reader.connections}

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def pick_topic(self, requested: str | None, msgtype: str, required: bool) -> str | None:
        """``requested`` checked against the bag (name and type); ``AUTO``: the bag's only topic of
        ``msgtype`` (None when there is none and it is not ``required``); None / ``""``: None."""
        if requested is None or requested == "":
            return None
        if requested != AUTO:
            if requested not in self.topics:
                raise BagFormatError(self.bag, f"topic {requested!r} not in the bag (topics: {self.topics})")
            if self.topics[requested] != msgtype:
                raise BagFormatError(self.bag, f"topic {requested!r} has type {self.topics[requested]}, "
                                               f"expected {msgtype}")
            return requested
        candidates = sorted(t for t, ty in self.topics.items() if ty == msgtype)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates and not required:
            return None
        raise BagFormatError(self.bag, f"{len(candidates)} {msgtype} topics {candidates}: name the one to use")

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, str, bytes]]:
        """``(topic, msgtype, serialized CDR)`` of ``topics`` in recording order."""
        wanted = set(topics)
        connections = [c for c in self._reader.connections if c.topic in wanted]
        if not connections:  # rosbags reads every topic when given none
            return
        try:
            for connection, _, raw in self._reader.messages(connections=connections):
                yield connection.topic, connection.msgtype, raw
        except Exception as exc:  # a truncated chunk / page surfaces mid-iteration
            raise BagFormatError(self.bag, f"unreadable message data: {type(exc).__name__}: {exc}") from exc

    def deserialize(self, raw: bytes, msgtype: str):
        return self._reader.deserialize(raw, msgtype)


@dataclass
class BagStats:
    """Counters of one pass over a bag."""

    messages: int = 0
    clouds: int = 0
    images: int = 0
    camera_infos: int = 0
    frames: int = 0
    paired_frames: int = 0
    windows: int = 0
    resets: int = 0
    gaps: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def read_static_transforms(reader: BagReader) -> StaticTransforms:
    """Every transform published on ``/tf_static`` in the bag."""
    tree = StaticTransforms()
    topics = [TF_STATIC_TOPIC] if reader.topics.get(TF_STATIC_TOPIC) == TF_MESSAGE else []
    for _, msgtype, raw in reader.messages(topics):
        tree.add_message(reader.deserialize(raw, msgtype))
    return tree


def iter_bag_frames(
    bag: Path | str,
    *,
    cloud_topic: str = AUTO,
    image_topic: str | None = AUTO,
    camera_info_topic: str | None = AUTO,
    sync_tolerance: float = 0.05,
    extrinsic: np.ndarray | None = None,
    queue_depth: int = 64,
    stats: BagStats | None = None,
) -> Iterator[Frame]:
    """Decoded, paired frames of a bag in cloud order (header stamps).

    Args:
        bag: a rosbag2 directory or a bare ``.mcap`` / ``.db3`` file.
        cloud_topic: PointCloud2 topic, or ``"auto"`` (the bag's only PointCloud2 topic).
        image_topic: Image topic, ``"auto"`` (the only Image topic, if any) or None (no images).
        camera_info_topic: CameraInfo topic, ``"auto"`` or None.
        sync_tolerance: max ``|image stamp - cloud stamp|`` for pairing (s).
        extrinsic: ``[4, 4]`` T_cam_from_points (cloud frame -> camera optical frame);
            when None it is composed from ``/tf_static`` (identity when both frames agree).
        queue_depth: bound of each stream's time-indexed queue and of the clouds waiting.
        stats: counters to fill (messages, frames, rejected per kind ...).

    Raises:
        BagFormatError: unreadable bag, a missing or ambiguous topic, no transform chain
            between the cloud and camera frames.
    """
    stats = BagStats() if stats is None else stats
    if extrinsic is not None:
        extrinsic = np.asarray(extrinsic, dtype=np.float64).reshape(4, 4)
    with BagReader(bag) as reader:
        picked = reader.pick_topic(cloud_topic, POINTCLOUD2, required=True)
        if picked is None:
            raise ValueError("iter_bag_frames: cloud_topic is required")
        cloud_topic = picked
        image_topic = reader.pick_topic(image_topic, IMAGE, required=False)
        info_topic = reader.pick_topic(camera_info_topic, CAMERA_INFO, required=False)
        tree = read_static_transforms(reader) if extrinsic is None and info_topic else None
        kinds = {topic: kind for topic, kind in ((cloud_topic, "cloud"), (image_topic, "image"),
                                                 (info_topic, "camera_info")) if topic}
        extrinsics: dict[tuple[str, str], np.ndarray] = {}

        def with_extrinsic(info: tuple[PinholeCamera, str], cloud_frame: str) -> PinholeCamera:
            camera, camera_frame = info
            key = (normalise_frame_id(cloud_frame), normalise_frame_id(camera_frame))
            if key not in extrinsics:
                if extrinsic is not None:
                    extrinsics[key] = extrinsic
                else:
                    assert tree is not None  # read when there is a camera_info topic and no extrinsic
                    try:
                        extrinsics[key] = tree.lookup(key[1], key[0])
                    except KeyError as exc:
                        raise BagFormatError(reader.bag, f"{exc.args[0]}; pass extrinsic= explicitly") from None
            return dataclasses.replace(camera, T_cam_from_points=extrinsics[key])

        pairer = FramePairer(seconds_to_ns(sync_tolerance), queue_depth, images=bool(image_topic),
                             camera_infos=bool(info_topic), resolve_camera=with_extrinsic)

        def emit(frames: list[Frame]) -> Iterator[Frame]:
            for frame in frames:
                stats.frames += 1
                stats.paired_frames += frame.image is not None
                yield frame

        for topic, msgtype, raw in reader.messages(kinds):
            stats.messages += 1
            kind = kinds[topic]
            try:
                msg = reader.deserialize(raw, msgtype)
            except Exception:  # undecodable CDR: counted like a malformed message
                stats.rejected[kind] += 1
                continue
            try:
                stamp = stamp_to_ns(msg.header.stamp)
                if kind == "cloud":
                    stats.clouds += 1
                    points = pointcloud2_to_xyz(msg)
                    if len(points) == 0:
                        raise MessageFormatError("PointCloud2: no finite point")
                    pairer.add_cloud(stamp, msg.header.frame_id, points)
                elif kind == "image":
                    stats.images += 1
                    pairer.add_image(stamp, image_to_rgb(msg))
                else:
                    stats.camera_infos += 1
                    # the extrinsic is attached once paired with a cloud (its frame_id)
                    pairer.add_camera_info(stamp, (camera_info_to_camera(msg), msg.header.frame_id))
            except MessageFormatError:
                stats.rejected[kind] += 1
                continue
            yield from emit(pairer.pop_ready())
        yield from emit(pairer.pop_ready(flush=True))


def iter_bag_windows(
    bag: Path | str,
    *,
    window_length: int = 24,
    stride: int = 1,
    max_frame_gap: float = DEFAULT_MAX_FRAME_GAP_S,
    stats: BagStats | None = None,
    **frame_options,
) -> Iterator[Window]:
    """Windows of a bag, cut by :class:`WindowBuffer` exactly as the nodes cut them.

    Args:
        window_length: T, frames per window.
        stride: a window every ``stride`` new frames.
        max_frame_gap: a step between frames longer than this (s) restarts the window (0 = never).
        stats: counters to fill (also ``windows``, ``resets`` and ``gaps``; duplicate cloud stamps and
            clouds in another frame than the first one's are counted as rejected clouds).
        **frame_options: passed to :func:`iter_bag_frames` (topics, sync_tolerance, extrinsic).
    """
    stats = BagStats() if stats is None else stats
    buffer = WindowBuffer(window_length, stride, seconds_to_ns(max_frame_gap))
    for frame in iter_bag_frames(bag, stats=stats, **frame_options):
        try:
            window = buffer.push(frame)
        except FrameRejected:
            stats.rejected["cloud"] += 1
            continue
        stats.resets, stats.gaps = buffer.resets, buffer.gaps
        if window is not None:
            stats.windows += 1
            yield window
