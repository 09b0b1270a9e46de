"""Core data model (DESIGN.md §2). Units: metres, seconds; points float32."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cross4d_core.geometry.camera import PinholeCamera


@dataclass
class Clip:
    """A clip of T point-cloud frames with N points each.

    Attributes:
        points: ``[T, N, 3]`` float32, metres.
        stamps: ``[T]`` float64, seconds.
        images: optional ``[T, H, W, 3]`` uint8 RGB, aligned with ``cameras`` (camera mode).
        cameras: optional list of T :class:`PinholeCamera` (one per frame).
        label: optional action class index.
        part: optional ``[T, N]`` int64 per-point part labels (synthetic data, segmentation).
        track: optional ``[T, N]`` int64 ground-truth track ids (same id = same physical
            surface point across frames; -1 = no track).
    """

    points: np.ndarray
    stamps: np.ndarray
    images: np.ndarray | None = None
    cameras: list[PinholeCamera] | None = None
    label: int | None = None
    part: np.ndarray | None = None
    track: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])


@dataclass
class Correspondence:
    """Point -> teacher-patch correspondence for one clip (both sources, DESIGN.md §3).

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
