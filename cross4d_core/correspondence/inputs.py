"""Validation of the clip arrays both correspondence sources take."""
from __future__ import annotations

import numpy as np
import torch

from cross4d_core.errors import CorrespondenceError


def as_points(points: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """``[T, N, 3]`` float32 tensor; raises :class:`CorrespondenceError` on a bad shape, an empty
    clip or a clip without a single finite point (non-finite points are left to the callers,
    which treat them as invisible)."""
    points = torch.as_tensor(points, device=device)
    if points.dim() != 3 or points.shape[-1] != 3:
        raise CorrespondenceError(f"points: expected [T, N, 3], got {tuple(points.shape)}")
    T, N = points.shape[:2]
    if T == 0 or N == 0:
        raise CorrespondenceError(f"points: empty clip ({T} frames x {N} points)")
    points = points.float()
    # a finite total means every coordinate is finite (the common case, one fast reduction);
    # otherwise a point is finite iff its coordinates' sum is (bar overflow)
    if not bool(torch.isfinite(points.sum())) and not bool(torch.isfinite(points.sum(-1)).any()):
        raise CorrespondenceError(f"points: none of the {T * N} points is finite")
    return points

