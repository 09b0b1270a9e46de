"""Recording sequences as a rosbag2, as a RealSense-like driver would publish them."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cross4d_core.data.rosbag.read import CAMERA_INFO, IMAGE, POINTCLOUD2, TF_MESSAGE, TF_STATIC_TOPIC, typestore
from cross4d_core.data.rosbag.tf import matrix_to_quaternion
from cross4d_core.msgconv import seconds_to_ns
from cross4d_core.msgconv.build import MessageBuilder, numpy_sequence
from cross4d_core.types import FrameSequence

#: Frame names of the synthetic recording (RealSense-like): clouds in ``camera_link``
#: (x forward, y left, z up), the colour camera's optical frame 15 mm to its right.
SYNTH_CLOUD_FRAME = "camera_link"
SYNTH_COLOR_FRAME = "camera_color_frame"
SYNTH_OPTICAL_FRAME = "camera_color_optical_frame"
#: ``camera_color_frame`` in ``camera_link``: 15 mm along -y.
T_LINK_FROM_COLOR = np.array([[1, 0, 0, 0], [0, 1, 0, -0.015], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
#: The REP 103 optical frame (x right, y down, z forward) in its body frame (x forward, y left, z up).
T_COLOR_FROM_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _sequences_of(source) -> Iterator[tuple[str | None, FrameSequence]]:
    """``(id, sequence)`` of a dataset root, a ``Dataset4D``, or an iterable of sequences /
    dataset video records."""
    from cross4d_core.data.format import Dataset4D, VideoRecord

    if isinstance(source, (str, Path)):
        source = Dataset4D.open(source)
    if isinstance(source, Dataset4D):
        source = map(source.video, range(len(source)))
    for item in source:
        if isinstance(item, VideoRecord):
            yield item.id, item.sequence()
        else:
            yield None, item


def _tf_message(make: MessageBuilder, stamp_ns: int, edges: list[tuple[str, str, np.ndarray]]):
    T = make.types
    transforms = []
    for parent, child, M in edges:
        x, y, z, w = matrix_to_quaternion(M[:3, :3])
        transforms.append(T["geometry_msgs/msg/TransformStamped"](
            header=make.header(stamp_ns, parent), child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=float(M[0, 3]), y=float(M[1, 3]), z=float(M[2, 3])),
                rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)),
        ))
    return T[TF_MESSAGE](transforms=transforms)


def write_synthetic_bag(
    sequences: str | Path | Iterable,
    out_dir: Path | str,
    *,
    storage: str = "mcap",
    cloud_topic: str = "/camera/depth/points",
    image_topic: str = "/camera/color/image_raw",
    camera_info_topic: str = "/camera/color/camera_info",
    start_time: float = 1_700_000_000.0,
    gap: float = 1.0,
    max_videos: int | None = None,
) -> dict:
    """Record sequences as a rosbag2 (default MCAP), as a RealSense-like driver would publish them.

    Each frame becomes a ``sensor_msgs/PointCloud2`` (x, y, z FLOAT32, frame
    ``camera_link``) and, when the sequence has images, a ``sensor_msgs/Image`` (rgb8) and a
    ``sensor_msgs/CameraInfo`` in ``camera_color_optical_frame``; ``/tf_static`` carries
    the chain ``camera_link -> camera_color_frame -> camera_color_optical_frame``. Header
    stamps (integer nanoseconds) are ``start_time`` + the sequence's own stamps, videos one
    after another, ``gap`` seconds apart; record times equal header stamps.

    Args:
        sequences: a dataset root, a ``Dataset4D``, or an iterable of
            :class:`~cross4d_core.types.FrameSequence` (a ``Clip``, a synthetic video) or
            dataset ``VideoRecord``.
        out_dir: the bag directory to create (must not exist; written atomically).
        storage: ``mcap`` or ``sqlite3``.
        start_time, gap: seconds.
        max_videos: record at most this many videos.

    Returns:
        ``{"bag", "storage", "videos", "frames", "messages", "topics", "recorded"}``;
        ``recorded`` lists ``{"id", "label", "start_ns", "end_ns"}`` (header stamps) per video,
        the ground truth of a replay.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"write_synthetic_bag: storage must be one of {sorted(plugins)}, got {storage!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: exists already; rosbag2 bags are never overwritten")
    # The bag is built under a scratch folder with its final name (rosbag2 names the storage
    # file after the bag folder), then moved into place.
    scratch = out_dir.with_name(f".{out_dir.name}.partial")
    if scratch.exists():  # left by an interrupted run of ours
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    tmp = scratch / out_dir.name
    store = typestore()
    make = MessageBuilder(store.types, numpy_sequence)
    T_link_from_optical = T_LINK_FROM_COLOR @ T_COLOR_FROM_OPTICAL
    videos = frames = messages = 0
    recorded: list[dict] = []
    writer = Writer(tmp, version=9, storage_plugin=plugins[storage])
    writer.open()
    try:
        conns = {
            "tf": writer.add_connection(TF_STATIC_TOPIC, TF_MESSAGE, typestore=store),
            "cloud": writer.add_connection(cloud_topic, POINTCLOUD2, typestore=store),
            "image": writer.add_connection(image_topic, IMAGE, typestore=store),
            "info": writer.add_connection(camera_info_topic, CAMERA_INFO, typestore=store),
        }

        def write(kind: str, stamp_ns: int, msg) -> None:
            nonlocal messages
            writer.write(conns[kind], stamp_ns, store.serialize_cdr(msg, msg.__msgtype__))
            messages += 1

        offset, gap_ns = seconds_to_ns(start_time), seconds_to_ns(gap)
        write("tf", offset, _tf_message(make, offset, [
            (SYNTH_CLOUD_FRAME, SYNTH_COLOR_FRAME, T_LINK_FROM_COLOR),
            (SYNTH_COLOR_FRAME, SYNTH_OPTICAL_FRAME, T_COLOR_FROM_OPTICAL),
        ]))
        for video_id, seq in _sequences_of(sequences):
            if max_videos is not None and videos >= max_videos:
                break
            if seq.images is not None and seq.cameras is None:
                raise ValueError("write_synthetic_bag: a sequence has images but no cameras")
            stamps = offset + np.asarray(seq.stamps_ns, dtype=np.int64) - int(seq.stamps_ns[0])
            for t, stamp in enumerate(stamps.tolist()):
                points = np.asarray(seq.points[t], dtype=np.float64)
                # cloud frame <- optical frame <- the points' own frame
                T = T_link_from_optical @ seq.cameras[t].T_cam_from_points if seq.cameras is not None else np.eye(4)
                points_link = (points @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
                write("cloud", stamp, make.pointcloud2(make.header(stamp, SYNTH_CLOUD_FRAME), points_link))
                if seq.images is not None and seq.cameras is not None:  # cameras: checked above
                    header = make.header(stamp, SYNTH_OPTICAL_FRAME)
                    write("image", stamp, make.image(header, seq.images[t], "rgb8"))
                    write("info", stamp, make.camera_info(header, seq.cameras[t]))
                frames += 1
            videos += 1
            recorded.append({"id": video_id, "label": seq.label, "start_ns": int(stamps[0]),
                             "end_ns": int(stamps[-1])})
            offset = int(stamps[-1]) + gap_ns
        writer.close()
    except BaseException:
        if writer.storage is not None:
            writer.abort()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    os.replace(tmp, out_dir)
    scratch.rmdir()
    return {"bag": str(out_dir), "storage": storage, "videos": videos, "frames": frames, "messages": messages,
            "topics": {"cloud": cloud_topic, "image": image_topic, "camera_info": camera_info_topic,
                       "tf_static": TF_STATIC_TOPIC}, "recorded": recorded}
