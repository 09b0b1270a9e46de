"""The synthetic part teacher: a 2D "foundation model" whose semantics we know.

It stands for what a part-aware 2D model provides (features that say which body part a
patch shows) without downloaded weights, and turns the synthetic world into a controlled
test of the paper's claim that the granularity of the distilled target matters. It is
NOT a foundation model, and results distilled from it say nothing about DINOv2.

Input: per-pixel part labels ``[T, H, W]`` int64 (``-1`` = background), drawn through the
same z-buffer as the depth renders (:meth:`RenderOutput.label_images`). Each part (and the
background) has a fixed random code ``[D]`` (seeded Gaussian); a patch's feature is the
mean of the codes of its pixels. The features then go through the same projection and
cache as every teacher's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cross4d_core.geometry.image_transform import ImageTransform
from cross4d_core.teachers.base import Teacher

PART_TEACHER_NAME = "synthetic-part-teacher"


class PartTeacher(Teacher):
    """Patch feature = mean over the patch's pixels of a fixed random code per part label.

    Args:
        num_parts: part labels ``0 .. num_parts - 1``; code ``num_parts`` is the background.
        feature_dim: code width D.
        seed: code seed (the teacher is a pure function of ``(num_parts, feature_dim, seed)``).
        patch_size: pixels per patch side.
    """

    input_kind = "part_labels"

    def __init__(self, num_parts: int, feature_dim: int = 256, seed: int = 0, patch_size: int = 14,
                 device: torch.device | str = "cpu") -> None:
        if num_parts < 1 or feature_dim < 1 or patch_size < 1:
            raise ValueError(f"PartTeacher: num_parts, feature_dim and patch_size must be >= 1, got "
                             f"{num_parts}, {feature_dim}, {patch_size}")
        self.device = torch.device(device)
        self.num_parts, self.seed = int(num_parts), int(seed)
        self.patch_size, self.feature_dim = int(patch_size), int(feature_dim)
        self.name = f"{PART_TEACHER_NAME}(parts={num_parts}, dim={feature_dim}, seed={seed})"
        gen = torch.Generator().manual_seed(seed)
        self.codes = torch.randn(num_parts + 1, feature_dim, generator=gen).to(self.device)

    def image_transform(self, height: int, width: int) -> ImageTransform:
        return ImageTransform.create(height, width, self.patch_size)

    def grid_features(self, labels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ImageTransform]:
        """``labels [T, H, W]`` int (``-1`` background) -> ``feats [T, hp, wp, D]`` float32 and
        the :class:`ImageTransform` (a crop to whole patches; no resize)."""
        labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).to(self.device)
        if labels.dim() != 3 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"PartTeacher: labels must be [T, H, W] integers, got {tuple(labels.shape)} {labels.dtype}")
        if bool(((labels < -1) | (labels >= self.num_parts)).any()):
            raise ValueError(f"PartTeacher: labels outside [-1, {self.num_parts}) (a dataset with more parts "
                             f"than the teacher was built for?)")
        transform = self.image_transform(labels.shape[1], labels.shape[2])
        gh, gw = transform.grid_size
        p = self.patch_size
        crop = labels[:, transform.top:transform.top + gh * p, transform.left:transform.left + gw * p].long()
        crop = torch.where(crop < 0, self.num_parts, crop)
        one_hot = F.one_hot(crop, self.num_parts + 1).permute(0, 3, 1, 2).float()  # [T, P+1, h, w]
        share = F.avg_pool2d(one_hot, p)  # [T, P+1, gh, gw]: fraction of each label per patch
        return torch.einsum("tkhw,kd->thwd", share, self.codes), transform
