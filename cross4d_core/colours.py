"""Colour maps: patch-grid colours (figures) and PCA colours of embeddings (figures, and the
``rgb`` field the ROS nodes publish for RViz / Foxglove)."""
from __future__ import annotations

import numpy as np


def patch_colours(patch: np.ndarray, grid_size: tuple[int, int]) -> np.ndarray:
    """``[N]`` flat patch indices ``r * grid_w + c`` -> ``[N, 3]`` uint8 RGB.

    Red grows with the column, green with the row, blue alternates in a checkerboard, so
    every two patches sharing an edge differ in colour.
    """
    patch = np.asarray(patch, dtype=np.int64)
    grid_h, grid_w = (int(g) for g in grid_size)
    if grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"patch_colours: grid_size must be positive, got {grid_size}")
    if patch.size and (patch.min() < 0 or patch.max() >= grid_h * grid_w):
        raise ValueError(f"patch_colours: indices must be in [0, {grid_h * grid_w}), got "
                         f"[{patch.min()}, {patch.max()}]")
    row, col = np.divmod(patch, grid_w)
    red = np.rint(40 + 215 * col / max(grid_w - 1, 1))
    green = np.rint(40 + 215 * row / max(grid_h - 1, 1))
    blue = np.where((row + col) % 2 == 0, 30, 225)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def pca_colours(features) -> np.ndarray:
    """``[N, D]`` features (numpy or torch) -> ``[N, 3]`` uint8 colours: the first three principal
    components, each scaled to 0..255 by its own range (components beyond ``min(N, D)`` and
    components without variance stay 0).

    The components are the top eigenvectors of the ``D x D`` scatter matrix (cheaper than an
    SVD of the ``N x D`` matrix for N >> D). numpy, not torch: torch's OpenMP eigh can take
    seconds when its thread pool competes with the ROS executor's threads.
    """
    features = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features)
    if features.ndim != 2:
        raise ValueError(f"pca_colours: features must be [N, D], got shape {features.shape}")
    if features.shape[0] == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    x = features.astype(np.float64) - features.mean(axis=0, keepdims=True)
    k = min(3, x.shape[0], x.shape[1])
    proj = np.zeros((x.shape[0], 3))
    if k:
        _, vectors = np.linalg.eigh(x.T @ x)
        proj[:, :k] = x @ vectors[:, ::-1][:, :k]
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    spread = hi - lo
    scale = np.divide(255.0, spread, out=np.zeros_like(spread), where=spread > 1e-9 * (1 + np.abs(hi)))
    return np.clip(np.rint((proj - lo) * scale), 0, 255).astype(np.uint8)
