"""The synthetic part teacher: a 2D "foundation model" whose semantics we know.

It stands for what a part- and pose-aware 2D model provides (features that say which body
part a patch shows, and how that part is held) without downloaded weights, and turns the
synthetic world into a controlled test of the paper's claim that the granularity of the
distilled target matters. It is NOT a foundation model, and results distilled from it say
nothing about DINOv2.

Semantics: every point gets a label ``part * pose_bins + bin``, where ``bin`` is the angle
between its part's main axis in that frame (the principal axis of the part's points) and
the vertical, cut into ``pose_bins`` equal bins over 0-90 degrees. ``pose_bins = 1`` is the
plain part label. The labels are drawn through the same z-buffer as the depth renders
(:meth:`RenderOutput.label_images`); every label (and the background) has a fixed random
code ``[D]`` (seeded Gaussian) and a patch's feature is the mean of its pixels' codes. The
features then go through the same projection and cache as every teacher's.

Why pose: a part label alone is nearly the same for every action (a hand is a hand), so
its clip summary barely tells actions apart; which way the limbs point does. Measured on
the default synthetic world (15 actions): a linear probe on the clip's subject-mean teacher
feature scores 0.45 test video accuracy with ``pose_bins = 1`` and 0.95 with 3.
"""
from __future__ import annotations

import numpy as np
import torch

from cross4d_core.geometry.image_transform import ImageTransform
from cross4d_core.teachers.base import Teacher

PART_TEACHER_NAME = "synthetic-part-teacher"


class PartTeacher(Teacher):
    """Patch feature = mean over the patch's pixels of a fixed random code per (part, pose bin) label.

    Args:
        num_parts: part labels ``0 .. num_parts - 1`` of the dataset.
        pose_bins: orientation bins per part (1: part labels only).
        down: the data's vertical axis, pointing down (``+y`` in camera optical frames).
        feature_dim: code width D.
        seed: code seed (the teacher is a pure function of its arguments).
        patch_size: pixels per patch side.
    """

    input_kind = "part_labels"

    def __init__(self, num_parts: int, pose_bins: int = 3, feature_dim: int = 256, seed: int = 0,
                 patch_size: int = 14, down: tuple[float, float, float] = (0.0, 1.0, 0.0),
                 device: torch.device | str = "cpu") -> None:
        if min(num_parts, pose_bins, feature_dim, patch_size) < 1:
            raise ValueError(f"PartTeacher: num_parts, pose_bins, feature_dim and patch_size must be >= 1, got "
                             f"{num_parts}, {pose_bins}, {feature_dim}, {patch_size}")
        self.device = torch.device(device)
        self.num_parts, self.pose_bins, self.seed = int(num_parts), int(pose_bins), int(seed)
        self.patch_size, self.feature_dim = int(patch_size), int(feature_dim)
        self.down = np.asarray(down, np.float64) / np.linalg.norm(down)
        self.num_labels = self.num_parts * self.pose_bins
        self.name = (f"{PART_TEACHER_NAME}(parts={num_parts}, pose_bins={pose_bins}, dim={feature_dim}, "
                     f"seed={seed})")
        gen = torch.Generator().manual_seed(seed)
        self.codes = torch.randn(self.num_labels + 1, feature_dim, generator=gen).to(self.device)

    def point_labels(self, points: np.ndarray, part: np.ndarray) -> np.ndarray:
        """``[T, N]`` int64 label ``part * pose_bins + bin`` of every point.

        Args:
            points: ``[T, N, 3]`` metres (non-finite points keep bin 0).
            part: ``[T, N]`` int part labels in ``[0, num_parts)``.
        """
        part = np.asarray(part, np.int64)
        points = np.asarray(points, np.float64)
        if part.shape != points.shape[:2] or bool(((part < 0) | (part >= self.num_parts)).any()):
            raise ValueError(f"PartTeacher: part labels {part.shape} must match points {points.shape[:2]} and lie "
                             f"in [0, {self.num_parts})")
        if self.pose_bins == 1:
            return part
        T, N = part.shape
        finite = np.isfinite(points).all(-1)
        group = (np.arange(T)[:, None] * self.num_parts + part)[finite]           # one group per (frame, part)
        xyz = points[finite]
        size = T * self.num_parts
        count = np.bincount(group, minlength=size).astype(np.float64)
        mean = np.stack([np.bincount(group, xyz[:, i], size) for i in range(3)], 1) / np.maximum(count, 1)[:, None]
        rel = xyz - mean[group]
        cov = np.stack([np.bincount(group, rel[:, i] * rel[:, j], size) for i in range(3) for j in range(3)],
                       1).reshape(size, 3, 3)
        axis = np.linalg.eigh(cov)[1][..., -1]                                      # principal axis per group
        angle = np.degrees(np.arccos(np.clip(np.abs(axis @ self.down), 0.0, 1.0)))  # 0 = vertical
        bins = np.minimum((angle * self.pose_bins / 90.0).astype(np.int64), self.pose_bins - 1)
        bins[count < 3] = 0  # too few points for an axis
        labels = part * self.pose_bins
        labels[finite] += bins[group]
        return labels

    def image_transform(self, height: int, width: int) -> ImageTransform:
        return ImageTransform.create(height, width, self.patch_size)

    def grid_features(self, labels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ImageTransform]:
        """``labels [T, H, W]`` int (``-1`` background) -> ``feats [T, hp, wp, D]`` float32 and
        the :class:`ImageTransform` (a crop to whole patches; no resize)."""
        labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).to(self.device)
        if labels.dim() != 3 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"PartTeacher: labels must be [T, H, W] integers, got {tuple(labels.shape)} "
                             f"{labels.dtype}")
        if bool(((labels < -1) | (labels >= self.num_labels)).any()):
            raise ValueError(f"PartTeacher: labels outside [-1, {self.num_labels}) (a dataset with more parts "
                             f"than the teacher was built for?)")
        transform = self.image_transform(labels.shape[1], labels.shape[2])
        gh, gw = transform.grid_size
        p = self.patch_size
        crop = labels[:, transform.top:transform.top + gh * p, transform.left:transform.left + gw * p].long()
        crop = torch.where(crop < 0, self.num_labels, crop)
        # label histogram per patch by one bincount over (frame, patch, label) keys
        T = crop.shape[0]
        cells = (torch.arange(gh, device=crop.device).repeat_interleave(p)[:, None] * gw
                 + torch.arange(gw, device=crop.device).repeat_interleave(p)[None, :])       # [h, w] patch of pixel
        keys = ((torch.arange(T, device=crop.device)[:, None, None] * (gh * gw) + cells) * (self.num_labels + 1)
                + crop)
        counts = torch.bincount(keys.reshape(-1), minlength=T * gh * gw * (self.num_labels + 1))
        share = counts.reshape(T, gh, gw, self.num_labels + 1).float() / (p * p)  # fraction of each label per patch
        return share @ self.codes, transform
