"""Core data model. Units: metres; stamps integer nanoseconds; points float32."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cross4d_core.geometry.camera import PinholeCamera


@dataclass
class FrameSequence:
    """T frames of one recording, each with its own number of points: what the synthetic world
    renders, a dataset video holds (``VideoRecord.sequence()``) and the bag writer records. The
    one spelling of a sequence: ``points``, ``stamps_ns``, ``images``, ``cameras``.

    Attributes:
        points: T ``[n_t, 3]`` arrays (metres; a ``[T, N, 3]`` array when every frame has N).
        stamps_ns: ``[T]`` int64 frame stamps (integer nanoseconds).
        images: optional ``[T, H, W, 3]`` uint8 RGB, aligned with ``cameras``.
        cameras: optional list of T :class:`PinholeCamera` (one per frame).
        label: optional action class index.
    """

    points: Sequence[np.ndarray] | np.ndarray
    stamps_ns: np.ndarray
    images: np.ndarray | None = None
    cameras: list[PinholeCamera] | None = None
    label: int | None = None

    @property
    def num_frames(self) -> int:
        return len(self.points)


@dataclass
class Clip(FrameSequence):
    """A clip of T point-cloud frames with N points each (model input).

    Attributes (beyond :class:`FrameSequence`):
        points: ``[T, N, 3]`` float32, metres.
        part: optional ``[T, N]`` int64 per-point part labels (synthetic data, segmentation).
        track: optional ``[T, N]`` int64 ground-truth track ids (same id = same physical
            surface point across frames; -1 = no track).
    """

    points: np.ndarray  # [T, N, 3] (redeclared: narrower than FrameSequence's; keeps its place)
    part: np.ndarray | None = None
    track: np.ndarray | None = None

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])


@dataclass
class Correspondence:
    """Point -> teacher-patch correspondence for one clip (from either source: rendering the
    points, or a calibrated camera).

    Attributes:
        slot: ``[T, N]`` int64 teacher time slot of each point (frame t; ``t // 2`` for a
            tubelet-2 video teacher).
        patch: ``[T, N]`` int64 flat patch index ``row * grid_w + col`` into the teacher's
            ``[grid_h, grid_w]`` patch grid; -1 where not visible.
        visible: ``[T, N]`` bool; invisible points carry no target.
        grid_size: ``(grid_h, grid_w)`` of the teacher patch grid.
    """

    slot: torch.Tensor
    patch: torch.Tensor
    visible: torch.Tensor
    grid_size: tuple[int, int]

    @property
    def coverage(self) -> float:
        """Fraction of points that are visible (carry a target)."""
        return float(self.visible.float().mean()) if self.visible.numel() else 0.0
