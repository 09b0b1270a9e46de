"""Temporal windowing of point-cloud frames, shared by the ROS nodes and the rosbag reader.

A stream of frames (one point cloud each, optionally paired with the camera image
nearest in time) is cut into overlapping windows of the last ``length`` frames,
emitted every ``stride`` frames. Time running backwards (a bag played in a loop, a
simulator reset) clears the buffer, so no window ever mixes two passes.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from cross4d_core.geometry.camera import PinholeCamera


@dataclass
class Frame:
    """One point-cloud frame.

    Attributes:
        stamp: time of the cloud in seconds (header stamp).
        points: ``[n, 3]`` points in metres, in the cloud's frame ``frame_id``: float32, or float64
            for clouds with FLOAT64 coordinates (see :func:`cross4d_core.msgconv.pointcloud2_to_xyz`).
        frame_id: coordinate frame of ``points``.
        image: optional ``[H, W, 3]`` uint8 RGB image paired with the cloud.
        camera: optional :class:`PinholeCamera` of ``image``.
    """

    stamp: float
    points: np.ndarray
    frame_id: str = ""
    image: np.ndarray | None = None
    camera: PinholeCamera | None = None


@dataclass
class Window:
    """The last ``len(frames)`` frames of a stream.

    Attributes:
        frames: frames, oldest first.
        start: stamp of the oldest frame (s).
        end: stamp of the newest frame (s).
        index: running number of the window (0, 1, ...) over the buffer's lifetime.
        sequence: number of resets before this window (windows of one uninterrupted,
            monotonic stretch of time share it).
    """

    frames: list[Frame]
    start: float
    end: float
    index: int
    sequence: int

    @property
    def stamps(self) -> np.ndarray:
        """``[T]`` float64 frame stamps, oldest first."""
        return np.array([f.stamp for f in self.frames], dtype=np.float64)


class NearestStampQueue:
    """A bounded, time-indexed store of items (images, camera infos) for pairing with clouds.

    Items are kept sorted by stamp; when full, the oldest stamp is dropped (counted in
    :attr:`dropped`). :meth:`pop_nearest` returns the item whose stamp is nearest to the
    query within ``tolerance`` seconds and removes it together with every older item
    (a consumer keyed on monotonic cloud stamps can never want those again).
    """

    def __init__(self, maxlen: int, tolerance: float) -> None:
        if int(maxlen) < 1:
            raise ValueError(f"NearestStampQueue.maxlen must be >= 1, got {maxlen}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"NearestStampQueue.tolerance must be a finite number >= 0 s, got {tolerance}")
        self.maxlen = int(maxlen)
        self.tolerance = float(tolerance)
        self._stamps: list[float] = []
        self._items: list[Any] = []
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._stamps)

    def push(self, stamp: float, item: Any) -> None:
        """Insert ``item`` at ``stamp`` (s); an existing equal stamp is replaced."""
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"NearestStampQueue.push: stamp must be finite, got {stamp}")
        i = bisect.bisect_left(self._stamps, stamp)
        if i < len(self._stamps) and self._stamps[i] == stamp:
            self._items[i] = item
            return
        self._stamps.insert(i, stamp)
        self._items.insert(i, item)
        if len(self._stamps) > self.maxlen:
            del self._stamps[0], self._items[0]
            self.dropped += 1

    def _nearest_index(self, stamp: float) -> int | None:
        i = bisect.bisect_left(self._stamps, stamp)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self._stamps)]
        if not candidates:
            return None
        best = min(candidates, key=lambda j: abs(self._stamps[j] - stamp))
        return best if abs(self._stamps[best] - stamp) <= self.tolerance else None

    def peek_nearest(self, stamp: float) -> Any | None:
        """The item nearest to ``stamp`` within tolerance, left in the queue (or None)."""
        j = self._nearest_index(float(stamp))
        return None if j is None else self._items[j]

    def pop_nearest(self, stamp: float) -> Any | None:
        """Remove and return the item nearest to ``stamp`` within tolerance (or None)."""
        j = self._nearest_index(float(stamp))
        if j is None:
            return None
        item = self._items[j]
        del self._stamps[: j + 1], self._items[: j + 1]
        return item

    def clear(self) -> None:
        self._stamps.clear()
        self._items.clear()


class WindowBuffer:
    """Keeps the last ``length`` frames and emits a :class:`Window` every ``stride`` frames.

    The first window is emitted when the buffer first holds ``length`` frames, then one
    after every further ``stride`` frames. A frame whose stamp is older than the newest
    buffered one clears the buffer (counted in :attr:`resets`) and starts a new sequence;
    a frame with the same stamp as the newest one, or a non-finite stamp, is rejected
    (counted in :attr:`rejected`).
    """

    def __init__(self, length: int, stride: int = 1) -> None:
        if int(length) < 1:
            raise ValueError(f"WindowBuffer.length must be >= 1 frame, got {length}")
        if int(stride) < 1:
            raise ValueError(f"WindowBuffer.stride must be >= 1 frame, got {stride}")
        self.length = int(length)
        self.stride = int(stride)
        self._frames: deque[Frame] = deque(maxlen=self.length)
        self._count = 0  # frames pushed since the last clear
        self._emitted = 0
        self.resets = 0
        self.rejected = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def newest_stamp(self) -> float | None:
        return self._frames[-1].stamp if self._frames else None

    def clear(self) -> None:
        """Forget the buffered frames (the next window needs ``length`` new frames)."""
        self._frames.clear()
        self._count = 0

    def push(self, frame: Frame) -> Window | None:
        """Add ``frame``; returns the window it completes, if any."""
        if not math.isfinite(frame.stamp):
            self.rejected += 1
            return None
        newest = self.newest_stamp
        if newest is not None:
            if frame.stamp == newest:
                self.rejected += 1
                return None
            if frame.stamp < newest:
                self.clear()
                self.resets += 1
        self._frames.append(frame)
        self._count += 1
        if self._count < self.length or (self._count - self.length) % self.stride:
            return None
        frames = list(self._frames)
        window = Window(frames, frames[0].stamp, frames[-1].stamp, self._emitted, self.resets)
        self._emitted += 1
        return window
