"""Point-cloud operators in pure PyTorch (no custom CUDA), batched over any leading dims.

Every op takes point sets shaped ``[..., N, 3]`` (e.g. ``[B, T, N, 3]``: batch x frames)
and runs on whatever device the tensors live on. Index outputs are int64 and always
refer to real points: neighbourhoods are repeat-padded, never filled with index 0.
"""
from cross4d_core.ops.points import (
    ball_query,
    farthest_point_sample,
    gather_points,
    interpolate_features,
    items_per_chunk,
    knn,
    pairwise_distances,
)

__all__ = [
    "ball_query",
    "farthest_point_sample",
    "gather_points",
    "interpolate_features",
    "items_per_chunk",
    "knn",
    "pairwise_distances",
]
