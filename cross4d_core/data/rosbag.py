"""rosbag2 <-> cross4d: read PointCloud2 (+ Image + CameraInfo) recordings into windows,
convert them into the dataset format, and write the synthetic world as a bag.

Reading uses ``rosbags`` (pure Python; sqlite3 and MCAP storage, a bag directory or a
bare ``.mcap`` / ``.db3`` file) and the ROS-free message decoding of
:mod:`cross4d_core.msgconv`, so a bag yields exactly what the nodes see. Frames are
keyed on the cloud's header stamp; each cloud is paired with the image and camera info
nearest in header time within ``sync_tolerance`` (:class:`NearestStampQueue`) and fed
to the same :class:`WindowBuffer` the nodes use (window length, stride, backwards-time
reset).

Pairing offline is exact rather than wall-clock bounded: a cloud waits until its image
stream has passed the cloud's stamp (or the bag ends), so the nearest image is found even
when it was recorded after the cloud. Each stream is split into *passes* where its header
stamps jump backwards (a bag recorded from a looping player); clouds of pass k pair only
with images / camera infos of pass k.

The camera extrinsic (``PinholeCamera.T_cam_from_points``, cloud frame -> camera optical
frame) comes from the ``extrinsic`` argument or is composed from ``/tf_static``
(tf2_msgs/TFMessage) along the transform chain between the two frames.
"""
from __future__ import annotations

import dataclasses
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from cross4d_core.data.readers.common import SourceFormatError
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.windowing import Frame, NearestStampQueue, Window, WindowBuffer

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"
#: Auto-detect a topic by its message type (the only topic of that type in the bag).
AUTO = "auto"


class BagFormatError(SourceFormatError):
    """A bag is unreadable (corrupt, truncated, unknown storage) or lacks what was asked for."""


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
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))


#: Beyond this |coordinate| (m) float32 spacing exceeds 1 mm (2**13 m: spacing 2**-10 m), so a
#: window reaching it is stored relative to a float64 origin (:func:`window_origin`).
FLOAT32_MM_LIMIT = 8192.0


def window_origin(frames: list[np.ndarray]) -> np.ndarray | None:
    """The ``[3]`` float64 origin (whole metres: the rounded centroid of the first frame)
    subtracted from a window's points before they are stored as float32, or None when every
    coordinate is within :data:`FLOAT32_MM_LIMIT` (then points are stored as they are).

    Clouds in UTM-scale coordinates (x ~ 5e5, y ~ 5.4e6 m) would lose up to 0.25 m in a
    float32 cast; relative to the origin they keep their millimetres. ``frames`` are
    ``[n_t, 3]`` (non-empty; float64 for FLOAT64 clouds)."""
    if max(float(np.abs(f).max()) for f in frames) <= FLOAT32_MM_LIMIT:
        return None
    return np.round(frames[0].astype(np.float64).mean(axis=0))


# --- transforms -------------------------------------------------------------------------------


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """``[3, 3]`` rotation of a (normalised) quaternion."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) has no rotation")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` of a ``[3, 3]`` rotation (w >= 0)."""
    m = np.asarray(R, dtype=np.float64)
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    return float(x), float(y), float(z), float(w)


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


class StaticTransforms:
    """The static transform tree of a recording (``/tf_static``).

    ``add(parent, child, T_parent_from_child)`` stores an edge (a TransformStamped says
    where ``child`` sits in ``parent``); :meth:`lookup` composes the chain between any
    two connected frames.
    """

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, np.ndarray]] = defaultdict(dict)

    def add(self, parent: str, child: str, T_parent_from_child: np.ndarray) -> None:
        self._edges[parent][child] = np.asarray(T_parent_from_child, dtype=np.float64)
        self._edges[child][parent] = rigid_inverse(self._edges[parent][child])

    def add_message(self, msg) -> None:
        """Add every ``geometry_msgs/TransformStamped`` of a ``tf2_msgs/TFMessage``."""
        for ts in msg.transforms:
            t, r = ts.transform.translation, ts.transform.rotation
            T = np.eye(4)
            T[:3, :3] = quaternion_to_matrix(r.x, r.y, r.z, r.w)
            T[:3, 3] = (t.x, t.y, t.z)
            self.add(_strip_slash(ts.header.frame_id), _strip_slash(ts.child_frame_id), T)

    @property
    def frames(self) -> list[str]:
        return sorted(self._edges)

    def lookup(self, target: str, source: str) -> np.ndarray:
        """``[4, 4]`` T_target_from_source (maps points in ``source`` into ``target``)."""
        target, source = _strip_slash(target), _strip_slash(source)
        if target == source:
            return np.eye(4)
        # Breadth-first search from source; each step composes T_next_from_source.
        reached = {source: np.eye(4)}
        frontier = deque([source])
        while frontier:
            frame = frontier.popleft()
            for neighbour, T_frame_from_neighbour in self._edges[frame].items():
                if neighbour not in reached:
                    reached[neighbour] = rigid_inverse(T_frame_from_neighbour) @ reached[frame]
                    if neighbour == target:
                        return reached[neighbour]
                    frontier.append(neighbour)
        raise KeyError(f"no static transform chain from {source!r} to {target!r} (known frames: {self.frames})")


def _strip_slash(frame_id: str) -> str:
    return str(frame_id).lstrip("/")


# --- reading ----------------------------------------------------------------------------------


def _open_reader(bag: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"{bag}: no such bag")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for unreadable storage
        raise BagFormatError(bag, f"cannot open as rosbag2 (sqlite3 / mcap): {type(exc).__name__}: {exc}") from exc
    return reader


def _pick_topic(bag: Path, reader, requested: str | None, msgtype: str, required: bool) -> str | None:
    topics = {c.topic: c.msgtype for c in reader.connections}
    if requested is None or requested == "":
        return None
    if requested != AUTO:
        if requested not in topics:
            raise BagFormatError(bag, f"topic {requested!r} not in the bag (topics: {topics})")
        if topics[requested] != msgtype:
            raise BagFormatError(bag, f"topic {requested!r} has type {topics[requested]}, expected {msgtype}")
        return requested
    candidates = sorted(t for t, ty in topics.items() if ty == msgtype)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and not required:
        return None
    raise BagFormatError(bag, f"{len(candidates)} {msgtype} topics {candidates}: name the one to use")


def read_static_transforms(bag: Path, reader=None) -> StaticTransforms:
    """Every transform published on ``/tf_static`` in the bag."""
    tree = StaticTransforms()
    own = reader is None
    reader = _open_reader(bag) if own else reader
    try:
        conns = [c for c in reader.connections if c.topic == TF_STATIC_TOPIC and c.msgtype == TF_MESSAGE]
        for conn, _, raw in _messages(bag, reader, conns):
            tree.add_message(reader.deserialize(raw, conn.msgtype))
    finally:
        if own:
            reader.close()
    return tree


def _messages(bag: Path, reader, connections):
    if not connections:  # rosbags reads every topic when given none
        return
    try:
        yield from reader.messages(connections=connections)
    except Exception as exc:  # a truncated chunk / page surfaces mid-iteration
        raise BagFormatError(bag, f"unreadable message data: {type(exc).__name__}: {exc}") from exc


class _Stream:
    """Decoded items of one input stream, split into passes at backwards stamps."""

    def __init__(self, maxlen: int, tolerance: float) -> None:
        self.maxlen, self.tolerance = maxlen, tolerance
        self.queues: dict[int, NearestStampQueue] = {}
        self.pass_index = 0
        self.newest: float | None = None

    def push(self, stamp: float, item) -> None:
        if self.newest is not None and stamp < self.newest:
            self.pass_index += 1
        self.newest = stamp
        self.queues.setdefault(self.pass_index, NearestStampQueue(self.maxlen, self.tolerance)).push(stamp, item)

    def settled(self, pass_index: int, stamp: float) -> bool:
        """No later message of this stream can be nearer to ``stamp`` in pass ``pass_index``."""
        if self.pass_index != pass_index:
            return self.pass_index > pass_index
        return self.newest is not None and self.newest >= stamp

    def pop_nearest(self, pass_index: int, stamp: float):
        for old in [k for k in self.queues if k < pass_index]:
            del self.queues[old]
        queue = self.queues.get(pass_index)
        return None if queue is None else queue.pop_nearest(stamp)


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
        queue_depth: bound of each stream's time-indexed queue.
        stats: counters to fill (messages, frames, rejected per kind ...).

    Raises:
        BagFormatError: unreadable bag, a missing or ambiguous topic, no transform chain
            between the cloud and camera frames.
    """
    from cross4d_core.errors import MessageFormatError
    from cross4d_core.msgconv import camera_info_to_camera, image_to_rgb, pointcloud2_to_xyz, stamp_to_seconds

    bag = Path(bag)
    stats = BagStats() if stats is None else stats
    if extrinsic is not None:
        extrinsic = np.asarray(extrinsic, dtype=np.float64).reshape(4, 4)
    reader = _open_reader(bag)
    try:
        cloud_topic = _pick_topic(bag, reader, cloud_topic, POINTCLOUD2, required=True)
        if cloud_topic is None:
            raise ValueError("iter_bag_frames: cloud_topic is required")
        image_topic = _pick_topic(bag, reader, image_topic, IMAGE, required=False)
        info_topic = _pick_topic(bag, reader, camera_info_topic, CAMERA_INFO, required=False)
        tree = read_static_transforms(bag, reader) if extrinsic is None and info_topic else None
        kinds = {cloud_topic: "cloud", image_topic: "image", info_topic: "camera_info"}
        kinds.pop(None, None)
        conns = [c for c in reader.connections if c.topic in kinds]
        images, infos = _Stream(queue_depth, sync_tolerance), _Stream(queue_depth, sync_tolerance)
        pending: deque = deque()  # (pass, stamp, frame_id, points)
        cloud_pass, newest_cloud = 0, None
        last_camera: PinholeCamera | None = None
        extrinsics: dict[tuple[str, str], np.ndarray] = {}

        def with_extrinsic(camera: PinholeCamera, cam_frame: str, cloud_frame: str) -> PinholeCamera:
            key = (_strip_slash(cloud_frame), _strip_slash(cam_frame))
            if key not in extrinsics:
                if extrinsic is not None:
                    extrinsics[key] = extrinsic
                else:
                    try:
                        extrinsics[key] = tree.lookup(key[1], key[0])
                    except KeyError as exc:
                        raise BagFormatError(bag, f"{exc.args[0]}; pass extrinsic= explicitly") from None
            return dataclasses.replace(camera, T_cam_from_points=extrinsics[key])

        def ready(item) -> bool:
            p, stamp = item[0], item[1]
            return (not image_topic or images.settled(p, stamp)) and (not info_topic or infos.settled(p, stamp))

        def emit(item) -> Frame:
            nonlocal last_camera
            p, stamp, frame_id, points = item
            image = images.pop_nearest(p, stamp) if image_topic else None
            info = infos.pop_nearest(p, stamp) if info_topic else None
            if info is not None:
                last_camera = with_extrinsic(*info, frame_id)
            stats.frames += 1
            stats.paired_frames += image is not None
            return Frame(stamp=stamp, points=points, frame_id=frame_id, image=image,
                         camera=last_camera if info_topic else None)

        for conn, _, raw in _messages(bag, reader, conns):
            stats.messages += 1
            kind = kinds[conn.topic]
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception:  # undecodable CDR: counted like a malformed message
                stats.rejected[kind] += 1
                continue
            stamp = stamp_to_seconds(msg.header.stamp)
            try:
                if kind == "cloud":
                    stats.clouds += 1
                    points = pointcloud2_to_xyz(msg)
                    if len(points) == 0:
                        stats.rejected["cloud"] += 1
                        continue
                    if newest_cloud is not None and stamp < newest_cloud:
                        cloud_pass += 1
                    newest_cloud = stamp
                    pending.append((cloud_pass, stamp, msg.header.frame_id, points))
                elif kind == "image":
                    stats.images += 1
                    images.push(stamp, image_to_rgb(msg))
                else:
                    stats.camera_infos += 1
                    # the extrinsic is attached once paired with a cloud (its frame_id)
                    infos.push(stamp, (camera_info_to_camera(msg), msg.header.frame_id))
            except MessageFormatError:
                stats.rejected[kind] += 1
                continue
            # A cloud whose image never comes (a dead camera) waits at most queue_depth clouds.
            while pending and (ready(pending[0]) or len(pending) > queue_depth):
                yield emit(pending.popleft())
        while pending:
            yield emit(pending.popleft())
    finally:
        reader.close()


def iter_bag_windows(
    bag: Path | str,
    *,
    window_length: int = 24,
    stride: int = 1,
    stats: BagStats | None = None,
    **frame_options,
) -> Iterator[Window]:
    """Windows of a bag, cut by :class:`WindowBuffer` exactly as the nodes cut them.

    Args:
        window_length: T, frames per window.
        stride: a window every ``stride`` new frames.
        stats: counters to fill (also ``windows`` and ``resets``; duplicate cloud stamps
            are counted as rejected clouds).
        **frame_options: passed to :func:`iter_bag_frames` (topics, sync_tolerance, extrinsic).
    """
    stats = BagStats() if stats is None else stats
    buffer = WindowBuffer(window_length, stride)
    for frame in iter_bag_frames(bag, stats=stats, **frame_options):
        rejected = buffer.rejected
        window = buffer.push(frame)
        if buffer.rejected != rejected:
            stats.rejected["cloud"] += 1
        stats.resets = buffer.resets
        if window is not None:
            stats.windows += 1
            yield window


def convert_bag(
    bag: Path | str,
    out: Path | str,
    *,
    label: int = -1,
    label_names: list[str] | None = None,
    split: str = "train",
    window_length: int = 24,
    stride: int | None = None,
    progress: bool = True,
    **frame_options,
) -> dict:
    """Convert a bag into the dataset format: one video per window.

    Points are stored in the cloud frame, float32; a window with a coordinate beyond
    :data:`FLOAT32_MM_LIMIT` is stored relative to the float64 origin of :func:`window_origin`
    (meta ``origin``; its camera extrinsics include the shift), so no precision is lost.

    Args:
        label: action label of every window (-1: unlabelled).
        label_names: class names for the manifest.
        split: split of every window.
        window_length: frames per window (video).
        stride: frames between window starts; default ``window_length`` (no overlap).
        **frame_options: topics, ``sync_tolerance``, ``extrinsic`` (see :func:`iter_bag_frames`).

    Returns:
        summary dict: counts of windows written / already present, frames, and the bag stats.
    """
    from tqdm import tqdm

    from cross4d_core.data.format import DatasetWriter

    bag = Path(bag)
    if not bag.exists():  # before the writer creates an empty dataset at ``out``
        raise FileNotFoundError(f"{bag}: no such bag")
    stride = window_length if stride is None else stride
    stats = BagStats()
    written = skipped = 0
    normalisation = {
        "source_units": "m (PointCloud2)",
        "scale_to_m": 1.0,
        "windows": {"length": window_length, "stride": stride,
                    "sync_tolerance": frame_options.get("sync_tolerance", 0.05)},
        "extrinsic": "parameter" if frame_options.get("extrinsic") is not None else "/tf_static",
        "origin": f"a window with a coordinate beyond {FLOAT32_MM_LIMIT:g} m is stored relative to a float64 "
                  "origin (whole metres, the first frame's centroid) recorded in the video meta 'origin' "
                  "(cloud frame = stored + origin; camera extrinsics include it); otherwise none",
    }
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", bag.name.removesuffix(".mcap").removesuffix(".db3"))
    with DatasetWriter(out, source=f"rosbag2:{bag.name}", label_names=list(label_names or []), units="m",
                       normalisation=normalisation) as writer:
        windows = iter_bag_windows(bag, window_length=window_length, stride=stride, stats=stats, **frame_options)
        for window in tqdm(windows, desc=f"bag {bag.name}", disable=not progress, unit="window"):
            video_id = f"{name}_w{window.index:06d}"
            if writer.has_video(video_id):
                skipped += 1
                continue
            with_images = all(f.image is not None and f.camera is not None for f in window.frames)
            frames = [f.points for f in window.frames]
            cameras = [f.camera for f in window.frames] if with_images else None
            origin = window_origin(frames)
            if origin is not None:  # subtract in float64, before add_video's float32 cast
                frames = [f - origin for f in frames]
                shift = np.eye(4)
                shift[:3, 3] = origin  # cloud frame <- stored points
                if cameras is not None:
                    cameras = [dataclasses.replace(c, T_cam_from_points=c.T_cam_from_points @ shift) for c in cameras]
            writer.add_video(
                video_id, frames, label=label, split=split,
                stamps=window.stamps,
                images=np.stack([f.image for f in window.frames]) if with_images else None,
                cameras=cameras,
                meta={"bag": bag.name, "window": window.index, "sequence": window.sequence,
                      "frame_id": window.frames[-1].frame_id,
                      "origin": None if origin is None else origin.tolist()},
            )
            written += 1
    return {
        "source": str(bag), "out": str(out), "written": written, "skipped_existing": skipped,
        "frames": stats.frames, "windows": stats.windows, "resets": stats.resets,
        "paired_frames": stats.paired_frames, "rejected": dict(stats.rejected), "messages": stats.messages,
    }


# --- writing ----------------------------------------------------------------------------------

#: Frame names of the synthetic recording (RealSense-like): clouds in ``camera_link``
#: (x forward, y left, z up), the colour camera's optical frame 15 mm to its right.
SYNTH_CLOUD_FRAME = "camera_link"
SYNTH_COLOR_FRAME = "camera_color_frame"
SYNTH_OPTICAL_FRAME = "camera_color_optical_frame"
#: ``camera_color_frame`` in ``camera_link``: 15 mm along -y.
T_LINK_FROM_COLOR = np.array([[1, 0, 0, 0], [0, 1, 0, -0.015], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
#: The REP 103 optical frame (x right, y down, z forward) in its body frame (x forward, y left, z up).
T_COLOR_FROM_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


@dataclass
class _Recording:
    """One video to record: per-frame points in the camera's points frame, images, cameras."""

    points: list[np.ndarray]
    stamps: np.ndarray
    images: np.ndarray | None
    cameras: list[PinholeCamera] | None


def _as_recording(video) -> _Recording:
    """Duck-type a dataset :class:`~cross4d_core.data.format.VideoRecord`, a
    :class:`~cross4d_core.types.Clip` or a synthetic video."""
    if hasattr(video, "frame") and hasattr(video, "num_frames"):  # a dataset video record
        T = video.num_frames
        return _Recording([video.frame(t) for t in range(T)], np.asarray(video.stamps, dtype=np.float64),
                          video.images, video.cameras())
    points = video.points if isinstance(video.points, list) else list(np.asarray(video.points))
    images = getattr(video, "images", None)
    images = getattr(video, "rgb", None) if images is None else images
    cameras = getattr(video, "cameras", None)
    cameras = getattr(video, "camera", None) if cameras is None else cameras
    if isinstance(cameras, PinholeCamera):
        cameras = [cameras] * len(points)
    if images is not None and cameras is None:
        raise ValueError("write_synthetic_bag: a video has images but no cameras")
    stamps = getattr(video, "stamps", None)
    if stamps is None:
        raise ValueError("write_synthetic_bag: a video has no stamps")
    return _Recording(points, np.asarray(stamps, dtype=np.float64), None if images is None else np.asarray(images),
                      cameras)


def _videos_of(dataset_or_clips) -> Iterable:
    if isinstance(dataset_or_clips, (str, Path)):
        from cross4d_core.data.format import Dataset4D

        dataset_or_clips = Dataset4D.open(dataset_or_clips)
    if hasattr(dataset_or_clips, "video") and hasattr(dataset_or_clips, "__len__"):
        return (dataset_or_clips.video(i) for i in range(len(dataset_or_clips)))
    return dataset_or_clips


class _MessageFactory:
    """Builds ``rosbags`` message objects from numpy (shares layout code with :mod:`cross4d_core.msgconv`)."""

    def __init__(self, typestore) -> None:
        self.ts = typestore
        self.T = typestore.types

    def header(self, stamp: float, frame_id: str):
        from cross4d_core.msgconv import seconds_to_stamp_parts

        sec, nanosec = seconds_to_stamp_parts(stamp)
        return self.T["std_msgs/msg/Header"](stamp=self.T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                             frame_id=frame_id)

    def pointcloud2(self, header, points: np.ndarray):
        from cross4d_core.msgconv import xyz_to_pointcloud2_fields

        specs, point_step, data = xyz_to_pointcloud2_fields(points)
        fields = [self.T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype,
                                                        count=f.count) for f in specs]
        return self.T[POINTCLOUD2](
            header=header, height=1, width=len(points), fields=fields, is_bigendian=False,
            point_step=point_step, row_step=point_step * len(points), data=np.frombuffer(data, dtype=np.uint8),
            is_dense=bool(np.isfinite(points).all()),
        )

    def image(self, header, rgb: np.ndarray):
        from cross4d_core.msgconv import numpy_to_image_fields

        f = numpy_to_image_fields(rgb, "rgb8")
        return self.T[IMAGE](header=header, height=f.height, width=f.width, encoding=f.encoding,
                             is_bigendian=int(f.is_bigendian), step=f.step, data=np.frombuffer(f.data, dtype=np.uint8))

    def camera_info(self, header, camera: PinholeCamera):
        model, D = camera.distortion_model, camera.D
        if model == "none":  # what camera drivers publish for an undistorted camera
            model, D = "plumb_bob", np.zeros(5)
        P = camera.P if camera.P is not None else np.hstack([camera.K, np.zeros((3, 1))])
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.T[CAMERA_INFO](
            header=header, height=camera.height, width=camera.width, distortion_model=model,
            d=np.asarray(D, dtype=np.float64), k=camera.K.reshape(-1).copy(), r=np.eye(3).reshape(-1),
            p=P.reshape(-1).copy(), binning_x=0, binning_y=0, roi=roi,
        )

    def tf_message(self, stamp: float, edges: list[tuple[str, str, np.ndarray]]):
        T = self.T
        transforms = []
        for parent, child, M in edges:
            x, y, z, w = matrix_to_quaternion(M[:3, :3])
            transforms.append(T["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp, parent), child_frame_id=child,
                transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=float(M[0, 3]), y=float(M[1, 3]), z=float(M[2, 3])),
                    rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)),
            ))
        return T[TF_MESSAGE](transforms=transforms)


def write_synthetic_bag(
    dataset_or_clips,
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
    """Record videos as a rosbag2 (default MCAP), as a RealSense-like driver would publish them.

    Each frame becomes a ``sensor_msgs/PointCloud2`` (x, y, z FLOAT32, frame
    ``camera_link``) and, when the video has images, a ``sensor_msgs/Image`` (rgb8) and a
    ``sensor_msgs/CameraInfo`` in ``camera_color_optical_frame``; ``/tf_static`` carries
    the chain ``camera_link -> camera_color_frame -> camera_color_optical_frame``. Header
    stamps are ``start_time + offset + stamps`` (videos one after another, ``gap``
    seconds apart); record times equal header stamps.

    Args:
        dataset_or_clips: a dataset root, a ``Dataset4D``, or an iterable of
            :class:`~cross4d_core.types.Clip` / synthetic videos.
        out_dir: the bag directory to create (must not exist; written atomically).
        storage: ``mcap`` or ``sqlite3``.
        max_videos: record at most this many videos.

    Returns:
        ``{"bag", "storage", "videos", "frames", "messages", "topics", "recorded"}``;
        ``recorded`` lists ``{"id", "label", "start", "end"}`` (header stamps, s) per video, the
        ground truth of a replay.
    """
    import os
    import shutil

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

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
    typestore = get_typestore(Stores.ROS2_KILTED)
    make = _MessageFactory(typestore)
    T_link_from_optical = T_LINK_FROM_COLOR @ T_COLOR_FROM_OPTICAL
    videos = frames = messages = 0
    recorded: list[dict] = []
    writer = Writer(tmp, version=9, storage_plugin=plugins[storage])
    writer.open()
    try:
        conns = {
            "tf": writer.add_connection(TF_STATIC_TOPIC, TF_MESSAGE, typestore=typestore),
            "cloud": writer.add_connection(cloud_topic, POINTCLOUD2, typestore=typestore),
            "image": writer.add_connection(image_topic, IMAGE, typestore=typestore),
            "info": writer.add_connection(camera_info_topic, CAMERA_INFO, typestore=typestore),
        }

        def write(kind: str, stamp: float, msg) -> None:
            nonlocal messages
            writer.write(conns[kind], int(round(stamp * 1e9)), typestore.serialize_cdr(msg, msg.__msgtype__))
            messages += 1

        write("tf", start_time, make.tf_message(start_time, [
            (SYNTH_CLOUD_FRAME, SYNTH_COLOR_FRAME, T_LINK_FROM_COLOR),
            (SYNTH_COLOR_FRAME, SYNTH_OPTICAL_FRAME, T_COLOR_FROM_OPTICAL),
        ]))
        offset = start_time
        for video in _videos_of(dataset_or_clips):
            if max_videos is not None and videos >= max_videos:
                break
            rec = _as_recording(video)
            stamps = offset + rec.stamps - rec.stamps[0]
            for t, stamp in enumerate(stamps):
                points = np.asarray(rec.points[t], dtype=np.float64)
                if rec.cameras is not None:
                    # cloud frame <- optical frame <- the points' own frame
                    T = T_link_from_optical @ rec.cameras[t].T_cam_from_points
                else:
                    T = np.eye(4)
                points_link = (points @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
                write("cloud", stamp, make.pointcloud2(make.header(stamp, SYNTH_CLOUD_FRAME), points_link))
                if rec.images is not None:
                    header = make.header(stamp, SYNTH_OPTICAL_FRAME)
                    write("image", stamp, make.image(header, rec.images[t]))
                    write("info", stamp, make.camera_info(header, rec.cameras[t]))
                frames += 1
            videos += 1
            label = getattr(video, "label", None)
            recorded.append({"id": getattr(video, "id", None), "label": None if label is None else int(label),
                             "start": float(stamps[0]), "end": float(stamps[-1])})
            offset = stamps[-1] + gap
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
