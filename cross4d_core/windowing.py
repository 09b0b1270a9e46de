"""The frame contract of a point-cloud stream, shared by the ROS nodes and the rosbag reader.

A stream of clouds is paired with the camera images / camera infos nearest in header
time (:class:`FramePairer`) and cut into overlapping windows of the last ``length``
frames, emitted every ``stride`` frames (:class:`WindowBuffer`). Stamps are integer
nanoseconds (:mod:`cross4d_core.msgconv.stamp`). A window is one stretch of the stream:
time running backwards (a bag played in a loop, a simulator reset) or jumping forward by
more than ``max_gap_ns`` restarts it, so no window ever mixes two passes or spans a gap;
every frame of a stream is in the stream's coordinate frame (the first frame's
``frame_id``), a frame in another one is refused.
"""
from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cross4d_core.errors import FrameRejected
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.preprocess import ModelInput

#: Default largest step between consecutive frames of one window (s): the nodes' ``max_frame_gap``
#: and the bag reader's. A longer silence (a sensor dropout, a paused recording) restarts the window.
DEFAULT_MAX_FRAME_GAP_S = 1.0


@dataclass
class Frame:
    """One point-cloud frame.

    Attributes:
        stamp_ns: header stamp of the cloud (integer nanoseconds).
        points: ``[n, 3]`` points in metres, in the cloud's frame ``frame_id``: float32, or float64
            for clouds with FLOAT64 coordinates (see :func:`cross4d_core.msgconv.pointcloud2_to_xyz`).
        frame_id: coordinate frame of ``points``.
        image: optional ``[H, W, 3]`` uint8 RGB image paired with the cloud.
        camera: optional :class:`PinholeCamera` of ``image``.
        model_input: the frame's model points once preprocessed (the nodes do it once per frame,
            see :class:`cross4d_core.preprocess.FramePreprocessor`).
    """

    stamp_ns: int
    points: np.ndarray
    frame_id: str = ""
    image: np.ndarray | None = None
    camera: PinholeCamera | None = None
    model_input: ModelInput | None = None


@dataclass
class Window:
    """The last ``len(frames)`` frames of a stream.

    Attributes:
        frames: frames, oldest first.
        index: running number of the window (0, 1, ...) over the buffer's lifetime.
        sequence: number of restarts (time backwards, frame gaps) before this window: windows
            of one uninterrupted, monotonic stretch of the stream share it.
    """

    frames: list[Frame]
    index: int
    sequence: int

    @property
    def start_ns(self) -> int:
        """Stamp of the oldest frame."""
        return self.frames[0].stamp_ns

    @property
    def end_ns(self) -> int:
        """Stamp of the newest frame."""
        return self.frames[-1].stamp_ns

    @property
    def stamps_ns(self) -> np.ndarray:
        """``[T]`` int64 frame stamps, oldest first."""
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)


def normalise_frame_id(frame_id: str) -> str:
    """tf2 frame names carry no leading slash (``/lidar`` and ``lidar`` are the same frame)."""
    return str(frame_id).lstrip("/")


class WindowBuffer:
    """Keeps the last ``length`` frames and emits a :class:`Window` every ``stride`` frames.

    The first window is emitted when the buffer first holds ``length`` frames, then one
    after every further ``stride`` frames. A frame older than the newest buffered one
    (counted in :attr:`resets`) or more than ``max_gap_ns`` after it (counted in
    :attr:`gaps`; 0 = no limit) restarts the buffer with itself as the first frame of a
    new sequence. :meth:`push` raises :class:`FrameRejected` for a frame with the same
    stamp as the newest one and for a frame whose ``frame_id`` is not the stream's (that
    of the first frame pushed).
    """

    def __init__(self, length: int, stride: int = 1, max_gap_ns: int = 0) -> None:
        if int(length) < 1:
            raise ValueError(f"WindowBuffer.length must be >= 1 frame, got {length}")
        if int(stride) < 1:
            raise ValueError(f"WindowBuffer.stride must be >= 1 frame, got {stride}")
        if int(max_gap_ns) < 0:
            raise ValueError(f"WindowBuffer.max_gap_ns must be >= 0 (0 = no limit), got {max_gap_ns}")
        self.length = int(length)
        self.stride = int(stride)
        self.max_gap_ns = int(max_gap_ns)
        self.frame_id: str | None = None
        self._frames: deque[Frame] = deque(maxlen=self.length)
        self._count = 0  # frames pushed since the last restart
        self._emitted = 0
        self.resets = 0
        self.gaps = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def sequence(self) -> int:
        """Restarts so far (the ``sequence`` of the next window)."""
        return self.resets + self.gaps

    def push(self, frame: Frame) -> Window | None:
        """Add ``frame``; returns the window it completes, if any."""
        frame_id = normalise_frame_id(frame.frame_id)
        if self.frame_id is None:
            self.frame_id = frame_id
        elif frame_id != self.frame_id:
            raise FrameRejected(f"frame_id {frame.frame_id!r} is not the stream's {self.frame_id!r}")
        if self._frames:
            newest = self._frames[-1].stamp_ns
            if frame.stamp_ns == newest:
                raise FrameRejected(f"stamp {frame.stamp_ns} ns repeats the previous frame's")
            if frame.stamp_ns < newest:
                self.resets += 1
                self._restart()
            elif self.max_gap_ns and frame.stamp_ns - newest > self.max_gap_ns:
                self.gaps += 1
                self._restart()
        self._frames.append(frame)
        self._count += 1
        if self._count < self.length or (self._count - self.length) % self.stride:
            return None
        window = Window(list(self._frames), self._emitted, self.sequence)
        self._emitted += 1
        return window

    def _restart(self) -> None:
        self._frames.clear()
        self._count = 0


class NearestStampQueue:
    """A bounded, time-indexed store of items (images, camera infos) for pairing with clouds.

    Items are kept sorted by stamp (integer ns); when full, the oldest stamp is dropped
    (counted in :attr:`dropped`). :meth:`pop_nearest` returns the item whose stamp is
    nearest to the query within ``tolerance_ns`` and removes it together with every older
    item (a consumer keyed on monotonic cloud stamps can never want those again).
    """

    def __init__(self, maxlen: int, tolerance_ns: int) -> None:
        if int(maxlen) < 1:
            raise ValueError(f"NearestStampQueue.maxlen must be >= 1, got {maxlen}")
        if int(tolerance_ns) < 0:
            raise ValueError(f"NearestStampQueue.tolerance_ns must be >= 0, got {tolerance_ns}")
        self.maxlen = int(maxlen)
        self.tolerance_ns = int(tolerance_ns)
        self._stamps: list[int] = []
        self._items: list[Any] = []
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> int | None:
        """Stamp of the newest queued item (None when empty)."""
        return self._stamps[-1] if self._stamps else None

    def push(self, stamp_ns: int, item: Any) -> None:
        """Insert ``item`` at ``stamp_ns``; an existing equal stamp is replaced."""
        stamp_ns = int(stamp_ns)
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            self._items[i] = item
            return
        self._stamps.insert(i, stamp_ns)
        self._items.insert(i, item)
        if len(self._stamps) > self.maxlen:
            del self._stamps[0], self._items[0]
            self.dropped += 1

    def pop_nearest(self, stamp_ns: int) -> Any | None:
        """Remove and return the item nearest to ``stamp_ns`` within tolerance (or None)."""
        i = bisect.bisect_left(self._stamps, stamp_ns)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self._stamps)]
        if not candidates:
            return None
        j = min(candidates, key=lambda k: abs(self._stamps[k] - stamp_ns))
        if abs(self._stamps[j] - stamp_ns) > self.tolerance_ns:
            return None
        item = self._items[j]
        del self._stamps[: j + 1], self._items[: j + 1]
        return item


class _PassQueue:
    """Items of one paired stream, split into passes where its stamps go backwards."""

    def __init__(self, maxlen: int, tolerance_ns: int) -> None:
        self.maxlen, self.tolerance_ns = maxlen, tolerance_ns
        self.queues: dict[int, NearestStampQueue] = {}
        self.pass_index = 0
        self.newest: int | None = None

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def push(self, stamp_ns: int, item) -> None:
        if self.newest is not None and stamp_ns < self.newest:
            self.pass_index += 1
        self.newest = stamp_ns
        queue = self.queues.get(self.pass_index)
        if queue is None:
            queue = self.queues[self.pass_index] = NearestStampQueue(self.maxlen, self.tolerance_ns)
        queue.push(stamp_ns, item)

    def settled(self, pass_index: int, stamp_ns: int) -> bool:
        """No later item of this stream can be nearer to ``stamp_ns`` in pass ``pass_index`` than
        one already queued: the pass is over, or it holds an unconsumed item at or after ``stamp_ns``
        (later items come after it)."""
        if self.pass_index != pass_index:
            return self.pass_index > pass_index
        queue = self.queues.get(pass_index)
        return queue is not None and queue.newest_ns is not None and queue.newest_ns >= stamp_ns

    def pop_nearest(self, pass_index: int, stamp_ns: int):
        for old in [k for k in self.queues if k < pass_index]:
            del self.queues[old]
        queue = self.queues.get(pass_index)
        if queue is None:
            return None
        queue.tolerance_ns = self.tolerance_ns
        return queue.pop_nearest(stamp_ns)


@dataclass
class _PendingCloud:
    pass_index: int
    stamp_ns: int
    frame_id: str
    points: np.ndarray
    deadline: float | None


class FramePairer:
    """Pairs each cloud with the image and the camera info nearest to it in header time.

    The one pairing of the ROS nodes (live topics) and the rosbag reader. Frames are keyed
    on the cloud; a cloud waits until every paired stream holds an unpaired message at or
    after its stamp (then no later message can be nearer), its ``deadline`` has passed (live streams: the image may
    never come), more than ``queue_depth`` clouds wait behind it, or :meth:`pop_ready` is
    told to ``flush``. It then leaves with the nearest image within ``tolerance_ns`` (or
    none) and the nearest camera info within ``tolerance_ns`` or else the last one seen
    (CameraInfo rarely changes). Each stream is split into passes where its stamps go
    backwards (a bag played in a loop): a cloud of pass k pairs only with images and
    camera infos of pass k.

    Args:
        tolerance_ns: max ``|image stamp - cloud stamp|``.
        queue_depth: bound of each paired stream's queue and of the waiting clouds.
        images / camera_infos: whether the stream has that input.
        resolve_camera: ``(camera info item, cloud frame_id) -> PinholeCamera`` (e.g. attach
            the extrinsic from TF); by default the item is the camera.
    """

    def __init__(self, tolerance_ns: int, queue_depth: int, images: bool = False, camera_infos: bool = False,
                 resolve_camera: Callable[[Any, str], PinholeCamera] | None = None) -> None:
        if int(queue_depth) < 1:
            raise ValueError(f"FramePairer.queue_depth must be >= 1, got {queue_depth}")
        self.queue_depth = int(queue_depth)
        self.images = _PassQueue(self.queue_depth, int(tolerance_ns)) if images else None
        self.camera_infos = _PassQueue(self.queue_depth, int(tolerance_ns)) if camera_infos else None
        self.resolve_camera = resolve_camera or (lambda item, frame_id: item)
        self._pending: deque[_PendingCloud] = deque()
        self._cloud_pass = 0
        self._newest_cloud: int | None = None
        self._last_camera: PinholeCamera | None = None

    def __len__(self) -> int:
        """Clouds waiting for their pairing."""
        return len(self._pending)

    def set_tolerance_ns(self, tolerance_ns: int) -> None:
        """Change the pairing tolerance (a dynamic node parameter)."""
        for stream in self._streams():
            stream.tolerance_ns = int(tolerance_ns)

    def _streams(self) -> list[_PassQueue]:
        return [s for s in (self.images, self.camera_infos) if s is not None]

    def add_image(self, stamp_ns: int, image: np.ndarray) -> None:
        if self.images is not None:
            self.images.push(stamp_ns, image)

    def add_camera_info(self, stamp_ns: int, info) -> None:
        if self.camera_infos is not None:
            self.camera_infos.push(stamp_ns, info)

    def add_cloud(self, stamp_ns: int, frame_id: str, points: np.ndarray, deadline: float | None = None) -> None:
        """Queue a decoded cloud; ``deadline`` (any clock, compared with ``pop_ready(now)``) ends its wait."""
        if self._newest_cloud is not None and stamp_ns < self._newest_cloud:
            self._cloud_pass += 1
        self._newest_cloud = stamp_ns
        self._pending.append(_PendingCloud(self._cloud_pass, int(stamp_ns), frame_id, points, deadline))

    def pop_ready(self, now: float | None = None, flush: bool = False) -> list[Frame]:
        """The paired frames of every cloud whose wait is over, in cloud order."""
        frames = []
        while self._pending and self._ready(self._pending[0], now, flush):
            frames.append(self._pair(self._pending.popleft()))
        return frames

    def _ready(self, cloud: _PendingCloud, now: float | None, flush: bool) -> bool:
        if flush or len(self._pending) > self.queue_depth:
            return True
        if cloud.deadline is not None and now is not None and now >= cloud.deadline:
            return True
        return all(s.settled(cloud.pass_index, cloud.stamp_ns) for s in self._streams())

    def _pair(self, cloud: _PendingCloud) -> Frame:
        image = camera = None
        if self.images is not None:
            image = self.images.pop_nearest(cloud.pass_index, cloud.stamp_ns)
        if self.camera_infos is not None:
            info = self.camera_infos.pop_nearest(cloud.pass_index, cloud.stamp_ns)
            if info is not None:
                self._last_camera = self.resolve_camera(info, cloud.frame_id)
            camera = self._last_camera
        return Frame(stamp_ns=cloud.stamp_ns, points=cloud.points, frame_id=cloud.frame_id, image=image,
                     camera=camera)

    def queue_sizes(self) -> dict[str, int]:
        return {"pending_clouds": len(self._pending),
                "images": len(self.images) if self.images is not None else 0,
                "camera_infos": len(self.camera_infos) if self.camera_infos is not None else 0}
