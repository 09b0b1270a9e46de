"""Per-frame model input, the same in training and serving.

:func:`sample_point_indices` is the one point sampler: ``ClipDataset`` (training), the
nodes' :class:`FramePreprocessor` (serving), the synthetic writer's per-frame subset and
the tests all draw the N points of a frame with it, from the generator
:func:`frame_rng` keys on the frame's stamp. A frame therefore gets the same points, in
the same order, wherever it is read (``ClipDataset`` with ``seed=0, epoch=0`` and a node
see identical model input for identical frames), and the order is a random permutation,
not the sensor's: farthest-point sampling starts at the first point, so sensor order
(raster, ring by ring) would give other tokens than the shuffled order of training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Beyond this |coordinate| (m) float32 spacing exceeds 1 mm (2**13 m: spacing 2**-10 m). Model
#: input never goes past it (:class:`FramePreprocessor` refuses such a frame); the bag converter
#: stores windows reaching it relative to a float64 origin.
FLOAT32_MM_LIMIT = 8192.0


def frame_rng(stamp_ns: int, seed: int = 0, epoch: int = 0) -> np.random.Generator:
    """The point-sampling generator of the frame stamped ``stamp_ns`` (``seed`` and ``epoch``:
    the training run's seed and epoch; a node samples with both 0)."""
    return np.random.default_rng([int(seed), int(epoch), int(stamp_ns) % 2**64])


def sample_point_indices(n: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """``[num_points]`` int64 indices into a frame of ``n > 0`` points, in random order: a subset
    without replacement when ``n >= num_points``, else a random permutation of all ``n``
    repeated cyclically (every point ``num_points // n`` or one more times). The first
    ``min(n, num_points)`` indices are distinct."""
    if n < 1:
        raise ValueError(f"sample_point_indices: a frame needs at least one point, got {n}")
    if n >= num_points:
        return rng.choice(n, num_points, replace=False).astype(np.int64)
    return np.resize(rng.permutation(n), num_points).astype(np.int64)


@dataclass(frozen=True)
class ModelInput:
    """The model's view of one frame.

    Attributes:
        points: ``[N, 3]`` float32 model points (metres, model frame).
        index: ``[N]`` int64 index of each model point into the raw cloud (its first
            ``min(n, N)`` entries are distinct).
    """

    points: np.ndarray
    index: np.ndarray


@dataclass(frozen=True)
class FramePreprocessor:
    """Turns a raw ``[n, 3]`` cloud into exactly ``num_points`` model input points.

    Attributes:
        num_points: N, points per frame fed to the model.
        transform: ``[4, 4]`` rigid transform applied before cropping (model frame <- cloud frame).
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

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> ModelInput:
        """Transform, crop and sample (:func:`sample_point_indices` over the points that pass).

        ``points`` is ``[n, 3]`` float32 or float64 (:func:`~cross4d_core.msgconv.pointcloud2_to_xyz`
        keeps FLOAT64 clouds in float64): the transform and the crop run in the input's
        precision and only the model points are cast to float32, so a cloud in UTM-scale
        coordinates that ``transform`` brings into a local frame keeps its millimetres.

        Raises:
            ValueError: no finite point within the range crop, or a kept point beyond
                :data:`FLOAT32_MM_LIMIT` (absurd coordinates, or a missing ``transform``
                into a local frame): such a frame would give the model overflowing distances.
        """
        dtype = np.float64 if points.dtype == np.float64 else np.float32
        rotation, translation = self.transform[:3, :3].astype(dtype), self.transform[:3, 3].astype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # absurd inputs are refused below
            moved = points @ rotation.T + translation
            keep = np.isfinite(moved).all(axis=1)
            if self.range_min > 0 or self.range_max > 0:
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
        farthest = float(np.abs(moved[kept]).max())
        if farthest > FLOAT32_MM_LIMIT:
            raise ValueError(f"frame reaches |coordinate| = {farthest:.4g} m in the model frame, beyond "
                             f"{FLOAT32_MM_LIMIT:g} m (absurd coordinates, or points_transform does not bring "
                             "the cloud into a local frame); set range_max to crop far points")
        index = kept[sample_point_indices(kept.size, self.num_points, rng)]
        return ModelInput(np.ascontiguousarray(moved[index], dtype=np.float32), index)
