"""Z-buffered square splatting: one scatter-min of packed (depth, index) keys, then a
separable min-filter for the splat footprint (no loop over points or pixels).

A point with depth ``z > 0`` and index ``n`` gets the int64 key ``bits(float32 z) << 32 | n``;
for non-negative floats the bit pattern orders like the value, so the smallest key at a
pixel is the nearest point, ties going to the lowest index. A point draws the pixels within
``radius`` of its centre pixel, so the smallest key at a pixel is the min over that
neighbourhood of the per-centre-pixel minima: a square min-filter, done row then column.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cross4d_core.geometry.projection import pixel_of

_EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


@dataclass
class ZBuffer:
    """Per-pixel result of :func:`splat_zbuffer`, decoded on demand.

    Attributes:
        keys: ``[T, H, W]`` int64 packed (depth, point index) of the nearest point per pixel.
        centre: ``[T, N, 2]`` int64 (column, row) pixel of each point's projection.
    """

    keys: torch.Tensor
    centre: torch.Tensor

    @property
    def index(self) -> torch.Tensor:
        """``[T, H, W]`` int64 index (into the frame's N points) of the nearest point, -1 where
        empty; ties in depth go to the lowest point index."""
        return torch.where(self.keys == _EMPTY, torch.full_like(self.keys, -1), self.keys & _LOW32)

    @property
    def point_id(self) -> torch.Tensor:
        """``[T, H, W]`` int64 clip-wide id ``t * N + n`` of the nearest point, ``T * N`` where
        empty (one index for lookups into per-point ``[T * N + 1]`` tables)."""
        T, N = self.centre.shape[:2]
        frame_start = torch.arange(0, T * N, N, device=self.keys.device)[:, None, None]
        return torch.where(self.keys == _EMPTY, T * N, (self.keys & _LOW32) + frame_start)

    @property
    def depth(self) -> torch.Tensor:
        """``[T, H, W]`` float32 nearest depth per pixel (metres, ``inf`` where empty)."""
        return _key_depth(self.keys)

    def depth_at_centres(self) -> torch.Tensor:
        """``[T, N]`` nearest depth at each point's own centre pixel (clamped into the image)."""
        T, H, W = self.keys.shape
        col, row = self.centre.unbind(-1)
        frame = torch.arange(T, device=self.keys.device)[:, None]
        return _key_depth(self.keys[frame, row.clamp(0, H - 1), col.clamp(0, W - 1)])


def _key_depth(keys: torch.Tensor) -> torch.Tensor:
    depth = (keys >> 32).int().view(torch.float32)
    return torch.where(keys == _EMPTY, torch.full_like(depth, float("inf")), depth)


def _min_filter(padded: torch.Tensor, radius: int) -> torch.Tensor:
    """Square ``(2r + 1)^2`` min-filter of ``padded [T, H + 2r, W + 2r]`` -> ``[T, H, W]``."""
    H, W = padded.shape[1] - 2 * radius, padded.shape[2] - 2 * radius
    rows = padded[:, :, radius : radius + W]
    for offset in range(2 * radius + 1):
        if offset != radius:
            rows = torch.minimum(rows, padded[:, :, offset : offset + W])
    out = rows[:, radius : radius + H]
    for offset in range(2 * radius + 1):
        if offset != radius:
            out = torch.minimum(out, rows[:, offset : offset + H])
    return out


def splat_zbuffer(uv: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, height: int, width: int,
                  radius: int = 0) -> ZBuffer:
    """Draw every valid point as a ``(2 radius + 1)^2`` pixel square at constant depth.

    Args:
        uv: ``[T, N, 2]`` pixel coordinates; depth: ``[T, N]`` metres, > 0 where valid;
            valid: ``[T, N]`` bool (invalid points draw nothing; a point whose centre pixel is
            off the image draws nothing either).
        height, width: image size in pixels; radius: splat half-size in pixels.
    """
    T, N = depth.shape
    if N >= 2**32:
        raise ValueError(f"splat_zbuffer: {N} points per frame do not fit the 32-bit index of the depth key")
    device = depth.device
    centre = pixel_of(torch.where(valid[..., None], uv, torch.zeros_like(uv)))
    col, row = centre.unbind(-1)
    draws = valid & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    bits = depth.float().clamp_min(0).view(torch.int32).long()
    keys = torch.where(draws, (bits << 32) | torch.arange(N, device=device), _EMPTY)
    # centre keys go straight into a buffer padded by the footprint, which the min-filter reads
    padded_h, padded_w = height + 2 * radius, width + 2 * radius
    frame = torch.arange(T, device=device)[:, None]
    dump = T * padded_h * padded_w  # one extra bin collects the points that draw nothing
    flat = torch.where(draws, (frame * padded_h + row + radius) * padded_w + col + radius, dump)
    zbuf = torch.full((dump + 1,), _EMPTY, dtype=torch.long, device=device)
    zbuf.scatter_reduce_(0, flat.reshape(-1), keys.reshape(-1), reduce="amin")
    return ZBuffer(_min_filter(zbuf[:dump].reshape(T, padded_h, padded_w), radius), centre)


def nearest_depth_in_footprint(uv: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, height: int, width: int,
                               radius: int = 0) -> torch.Tensor:
    """Depth of the z-buffer at each point's own centre pixel, for splats of half-size ``radius``.

    Equals ``splat_zbuffer(...).depth_at_centres()`` without drawing the full image: the
    splatted z-buffer at pixel q is the minimum of the centre-only z-buffer over q's
    neighbourhood, so each point gathers its ``(2r + 1)^2`` neighbours from a float32
    centre-only buffer. Cheap for large images with sparse points (camera mode).

    Returns:
        ``[T, N]`` float32 metres (``inf`` for points whose centre is off the image).
    """
    T, N = depth.shape
    device = depth.device
    col, row = pixel_of(torch.where(valid[..., None], uv, torch.zeros_like(uv))).unbind(-1)
    draws = valid & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    # The buffer spans the bounding box of the drawn pixels grown by the footprint, so every
    # neighbour read stays inside it (pixels off the image are never drawn and read as inf),
    # and a sparse cloud in a large image needs a fraction of a T x H x W buffer. Points that
    # draw nothing read the all-inf extra frame T.
    top = int(torch.where(draws, row, height).min()) - radius
    left = int(torch.where(draws, col, width).min()) - radius
    box_h = max(int(torch.where(draws, row, -1).max()) + radius + 1 - top, 2 * radius + 1)
    box_w = max(int(torch.where(draws, col, -1).max()) + radius + 1 - left, 2 * radius + 1)
    frame = torch.where(draws, torch.arange(T, device=device)[:, None], T)
    base = ((frame * box_h + torch.where(draws, row - top, radius)) * box_w
            + torch.where(draws, col - left, radius)).reshape(-1)
    # visiting points in pixel order turns the neighbour reads below into a few forward streams
    base, order = base.sort()
    zbuf = torch.full(((T + 1) * box_h * box_w,), float("inf"), device=device)
    point_depth = torch.where(draws, depth.float(), float("inf")).reshape(-1)[order]
    zbuf.scatter_reduce_(0, base, point_depth, reduce="amin")
    offsets = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    neighbours = base[:, None] + (dy * box_w + dx).reshape(-1)  # [T * N, (2r + 1)^2]
    nearest = torch.empty(T * N, device=device)
    nearest[order] = zbuf[neighbours].amin(-1)
    return nearest.reshape(T, N)


def winners_visible(point_id: torch.Tensor, num_points: int) -> torch.Tensor:
    """``[T, N]`` bool: the point wins at least one pixel of ``point_id [T, H, W]``
    (:attr:`ZBuffer.point_id`)."""
    T = point_id.shape[0]
    visible = torch.zeros(T * num_points + 1, dtype=torch.bool, device=point_id.device)
    visible.index_fill_(0, point_id.reshape(-1), True)
    return visible[:-1].reshape(T, num_points)
