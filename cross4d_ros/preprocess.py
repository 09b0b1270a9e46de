"""Per-frame preprocessing of the nodes (ROS-free): extrinsic, range crop, N points per frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class FramePreprocessor:
    """Turns a raw ``[n, 3]`` cloud into exactly ``num_points`` model input points.

    Attributes:
        num_points: N, points per frame fed to the model.
        transform: ``[4, 4]`` rigid transform applied before cropping (e.g. base <- lidar).
        range_min: points closer than this to the transformed origin are dropped (m).
        range_max: points farther than this are dropped (m); ``<= 0`` disables the crop.
    """

    num_points: int
    transform: np.ndarray
    range_min: float = 0.0
    range_max: float = 0.0

    def __post_init__(self) -> None:
        if int(self.num_points) < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")
        if self.range_max > 0 and self.range_min >= self.range_max:
            raise ValueError(f"range_min = {self.range_min} m is not below range_max = {self.range_max} m "
                             "(range_max 0 = no crop): no point could pass the crop")

    def __call__(self, points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(model_points [N, 3] float32, index [N] int64 into points)`` or raises ValueError
        when no point survives. More than N points: a random subset (seeded, kept in input
        order); fewer: all points, then repeated cyclically (repeat-pad).

        ``points`` is ``[n, 3]`` float32 or float64 (:func:`~cross4d_core.msgconv.pointcloud2_to_xyz`
        keeps FLOAT64 clouds in float64): the transform and the crop run in the input's
        precision and only the model points are cast to float32, so a cloud in UTM-scale
        coordinates that ``transform`` brings into a local frame keeps its millimetres.
        """
        dtype = np.float64 if points.dtype == np.float64 else np.float32
        rotation, translation = self.transform[:3, :3].astype(dtype), self.transform[:3, 3].astype(dtype)
        moved = points @ rotation.T + translation
        keep = np.isfinite(moved).all(axis=1)
        dist = np.linalg.norm(moved, axis=1)
        keep &= dist >= self.range_min
        if self.range_max > 0:
            keep &= dist <= self.range_max
        kept = np.flatnonzero(keep)
        if kept.size == 0:
            raise ValueError(
                f"frame has no points within range [{self.range_min}, {self.range_max or 'inf'}] m "
                f"({points.shape[0]} points before cropping)"
            )
        if kept.size > self.num_points:
            rng = np.random.default_rng(seed)
            kept = np.sort(rng.choice(kept, self.num_points, replace=False))
        elif kept.size < self.num_points:
            kept = np.resize(kept, self.num_points)
        picked = moved[kept]
        if dtype is np.float64 and np.abs(picked).max() > _FLOAT32_MAX:
            raise ValueError(f"transformed points exceed the float32 range (max |v| = {np.abs(picked).max():.4g} m)")
        return np.ascontiguousarray(picked, dtype=np.float32), kept.astype(np.int64)


def stamp_seed(stamp: float) -> int:
    """A per-frame sampling seed from its stamp (the same frame is sampled the same way again)."""
    return int(round(stamp * 1e6)) & 0x7FFFFFFF
