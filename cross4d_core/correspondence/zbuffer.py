"""Z-buffered square splatting: scatter-min of packed (depth, point id) keys (no loop over
points or pixels).

Point ``n`` of frame ``t`` with depth ``z > 0`` gets the int64 key
``bits(float32 z) << 32 | t N + n``; for non-negative floats the bit pattern orders like the
value, so the smallest key at a pixel of frame ``t`` is the nearest point, ties going to the
lowest index. An empty pixel holds ``bits(inf) << 32 | T N``, larger than every finite key. So
the low 32 bits of every pixel are a clip-wide point id that indexes per-point tables
``[T * N + 1]`` (last entry: background), decoded once per z-buffer, and the high 32 bits are
the pixel's depth. A point draws the pixels within ``radius`` of its centre pixel: one
scatter-min per footprint offset. A point is a winner when its key is the minimum at one of
its footprint pixels (read back per point, not per pixel).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from cross4d_core.geometry.projection import pixel_of

_INF_BITS = 0x7F800000  # float32 +inf
_LOW_BITS = 0xFFFFFFFF


@dataclass
class ZBuffer:
    """Per-pixel result of :func:`splat_zbuffer`, decoded on demand.

    Attributes:
        keys: ``[T, H, W]`` int64 packed (depth, point id) of the nearest point per pixel (a
            view into the padded splat buffer).
        centre: ``[T, N, 2]`` int64 (column, row) pixel of each point's projection.
        won: ``[T, N]`` bool: the point is the nearest at one or more pixels.
    """

    keys: torch.Tensor
    centre: torch.Tensor
    won: torch.Tensor

    @cached_property
    def point_id(self) -> torch.Tensor:
        """``[T, H, W]`` int64 clip-wide id ``t * N + n`` of the nearest point, ``T * N`` where
        empty (an index into per-point ``[T * N + 1]`` tables); the keys' low 32 bits, decoded
        once."""
        return self.keys & _LOW_BITS

    @property
    def index(self) -> torch.Tensor:
        """``[T, H, W]`` int64 index (into the frame's N points) of the nearest point, -1 where
        empty; ties in depth go to the lowest point index."""
        T, N = self.centre.shape[:2]
        point_id = self.point_id
        frame_start = torch.arange(0, T * N, N, device=self.keys.device)[:, None, None]
        return (point_id - frame_start).masked_fill_(point_id == T * N, -1)

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
    return (keys >> 32).int().view(torch.float32)  # empty pixels hold the bits of inf


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
    if T * N >= 2**31:
        raise ValueError(f"splat_zbuffer: {T} frames x {N} points do not fit the 31-bit point id of the depth key")
    device = depth.device
    centre = pixel_of(torch.where(valid[..., None], uv, 0.0))
    col, row = centre.unbind(-1)
    draws = valid & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    empty = _INF_BITS << 32 | T * N
    keys = depth.float().clamp_min(0).view(torch.int32).long().bitwise_left_shift_(32)
    keys |= torch.arange(T * N, device=device).view(T, N)
    keys = keys.masked_fill_(~draws, empty).view(-1)
    # The buffer is padded by the footprint, so every footprint pixel has an address in its own
    # frame. A point that draws nothing scatters the empty key (a no-op) around the frame's corner.
    padded_h, padded_w = height + 2 * radius, width + 2 * radius
    # ``base``: the address of a point's footprint corner (dy = dx = -radius); footprint offset
    # ``o`` >= 0 from there scatters into the buffer's view starting at ``o`` (no per-offset add)
    base = row.mul(padded_w).add_(col).masked_fill_(~draws, 0)
    base += torch.arange(0, T * padded_h * padded_w, padded_h * padded_w, device=device)[:, None]
    base = base.view(-1)
    zbuf = torch.full((T, padded_h, padded_w), empty, dtype=torch.int64, device=device)
    buffer = zbuf.view(-1)
    # one scatter per footprint offset keeps every temporary at [T * N], small enough to stay in
    # cache (a fused scatter would copy the keys and addresses (2r + 1)^2 times, and runs slower)
    for offset in (dy * padded_w + dx for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)):
        buffer[offset:].scatter_reduce_(0, base, keys, reduce="amin")
    if radius > 0:  # footprint pixels off the image are not drawn: no point wins them
        for border in (zbuf[:, :radius], zbuf[:, -radius:], zbuf[:, :, :radius], zbuf[:, :, -radius:]):
            border.fill_(empty)
    inner = zbuf[:, radius : radius + height, radius : radius + width]
    # a point wins where its id is the nearest one at an image pixel: one pass over the pixels'
    # ids (decoded once here, then cached), not a read-back of every footprint pixel per point
    point_id = inner & _LOW_BITS
    won = torch.zeros(T * N + 1, dtype=torch.bool, device=device).scatter_(0, point_id.view(-1), True)
    result = ZBuffer(inner, centre, won[: T * N].view(T, N) & draws)
    result.__dict__["point_id"] = point_id  # the cached_property's value
    return result


def nearest_depth_in_footprint(uv: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, height: int, width: int,
                               radius: int = 0) -> torch.Tensor:
    """Depth of the z-buffer at each point's own centre pixel, for splats of half-size ``radius``.

    Equals ``splat_zbuffer(...).depth_at_centres()`` without drawing the full image: the
    splatted z-buffer at pixel q is the minimum of the centre-only z-buffer over q's
    neighbourhood, a separable min: each point is scattered along its row into a float32
    buffer (``2r + 1`` scatter-mins), then reads ``2r + 1`` pixels down its column. Cheap for
    large images with sparse points (camera mode).

    Returns:
        ``[T, N]`` float32 metres (``inf`` for points whose centre is off the image).
    """
    T, N = depth.shape
    device = depth.device
    col, row = pixel_of(torch.where(valid[..., None], uv, 0.0)).unbind(-1)
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
    # one scatter / gather per offset keeps every temporary at [T * N]
    for dx in range(-radius, radius + 1):
        zbuf.scatter_reduce_(0, base + dx, point_depth, reduce="amin")
    nearest_sorted = zbuf.index_select(0, base - radius * box_w)
    for dy in range(-radius + 1, radius + 1):
        torch.minimum(nearest_sorted, zbuf.index_select(0, base + dy * box_w), out=nearest_sorted)
    nearest = torch.empty(T * N, device=device)
    nearest[order] = nearest_sorted
    return nearest.reshape(T, N)
