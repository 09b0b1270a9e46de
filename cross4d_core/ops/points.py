"""Farthest point sampling, ball query, kNN, gathering and inverse-distance interpolation.

Shapes: point sets are ``[..., N, 3]`` with any number of leading (batch, frame) dims,
which are flattened internally so one vectorised op serves all of them. Distances are
Euclidean, in the units of the points, computed from coordinate differences (not the
``|a|^2 + |b|^2 - 2ab`` expansion) so radius tests stay exact for near and far points.
The selection ops run without autograd and in float32 even under autocast.
"""
from __future__ import annotations

import math

import torch


def _check_points(name: str, points: torch.Tensor) -> None:
    if points.dim() < 2 or points.shape[-1] != 3:
        raise ValueError(f"{name} must be shaped [..., N, 3], got {tuple(points.shape)}")
    if points.shape[-2] == 0:
        raise ValueError(f"{name} has no points (shape {tuple(points.shape)})")


def _check_same_lead(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError(
            f"{a_name} {tuple(a.shape)} and {b_name} {tuple(b.shape)} must share leading (batch) dims"
        )


def items_per_chunk(device: torch.device, elements_per_item: int, cpu_elements: int = 2**18) -> int:
    """How many items (point sets, centres, ...) one vectorised chunk of work takes: all of
    them on accelerators; on CPU as many as keep a chunk's temporaries near ``cpu_elements``
    float32 values (1 MiB by default), small enough to stay in a core's L2 cache across the
    several passes over them (a 24 x 128 x 2048 distance matrix in one piece runs ~2x slower)."""
    if device.type != "cpu":
        return 2**62
    return max(1, cpu_elements // max(1, elements_per_item))


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[..., n, m]`` between ``a [..., n, 3]`` and ``b [..., m, 3]``."""
    _check_points("a", a)
    _check_points("b", b)
    _check_same_lead("a", a, "b", b)
    lead = a.shape[:-2]
    a3 = a.reshape(-1, a.shape[-2], 3).float()
    b3 = b.reshape(-1, b.shape[-2], 3).float()
    with torch.autocast(device_type=a.device.type, enabled=False):
        d = torch.cdist(a3, b3, compute_mode="donot_use_mm_for_euclid_dist")
    return d.reshape(*lead, a.shape[-2], b.shape[-2])


@torch.no_grad()
def farthest_point_sample(points: torch.Tensor, num_samples: int, start_index: int = 0) -> torch.Tensor:
    """Indices ``[..., num_samples]`` of farthest-point samples of ``points [..., N, 3]``.

    Deterministic: every set starts at ``start_index`` and ties go to the lowest index.
    When a set has fewer distinct points than ``num_samples`` (duplicates), the remaining
    samples repeat already chosen points. Vectorised over all sets; the Python loop runs
    over the samples only.
    """
    _check_points("points", points)
    n = points.shape[-2]
    if not 1 <= num_samples <= n:
        raise ValueError(f"num_samples must be in [1, N={n}], got {num_samples}")
    if not 0 <= start_index < n:
        raise ValueError(f"start_index must be in [0, N={n}), got {start_index}")
    lead = points.shape[:-2]
    # Channel-first [3, P, N]: each coordinate plane is contiguous for the per-step update.
    xyz = points.reshape(-1, n, 3).float().permute(2, 0, 1).contiguous()
    num_sets = xyz.shape[1]
    x, y, z = xyz.unbind(0)
    nearest = torch.full((num_sets, n), math.inf, device=points.device)
    step = torch.empty_like(nearest)
    diff = torch.empty_like(nearest)
    current = torch.full((num_sets, 1), start_index, dtype=torch.long, device=points.device)
    chosen = [current]
    for _ in range(num_samples - 1):
        cx, cy, cz = xyz.gather(2, current.expand(3, num_sets, 1)).unbind(0)  # [P, 1] each
        torch.sub(x, cx, out=step)
        step.mul_(step)  # square_ (pow) runs ~3x slower than mul_ on CPU; same values
        torch.sub(y, cy, out=diff)
        step.addcmul_(diff, diff)
        torch.sub(z, cz, out=diff)
        step.addcmul_(diff, diff)
        torch.minimum(nearest, step, out=nearest)
        # max(dim) returns the first maximum like argmax, at a fraction of argmax's CPU cost
        current = nearest.max(dim=-1, keepdim=True).indices
        chosen.append(current)
    return torch.cat(chosen, dim=1).reshape(*lead, num_samples)


def _repeat_pad(index: torch.Tensor, valid: torch.Tensor, fallback: torch.Tensor, k: int) -> torch.Tensor:
    """Replace invalid slots of ``index [..., kk]`` by its first valid entry (or ``fallback``)."""
    first = torch.where(valid[..., 0], index[..., 0], fallback)
    index = torch.where(valid, index, first[..., None])
    if index.shape[-1] < k:
        index = torch.cat([index, first[..., None].expand(*first.shape, k - index.shape[-1])], dim=-1)
    return index


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances ``[S, n, m]`` of ``a [S, n, 3]`` to ``b [S, m, 3]`` from coordinate
    differences, in float32: one broadcast pass per coordinate (cheaper than ``cdist``)."""
    a3 = a.float().permute(2, 0, 1)[..., None]  # [3, S, n, 1]
    b3 = b.float().permute(2, 0, 1)[:, :, None]  # [3, S, 1, m]
    d2 = (a3[0] - b3[0])
    d2.mul_(d2)  # = square_(), which runs ~3x slower on CPU
    diff = torch.empty_like(d2)
    for c in (1, 2):
        torch.sub(a3[c], b3[c], out=diff)
        d2.addcmul_(diff, diff)
    return d2


@torch.no_grad()
def ball_query(points: torch.Tensor, centres: torch.Tensor, radius: float, k: int,
               mode: str = "first") -> torch.Tensor:
    """Neighbour indices ``[..., M, k]`` into ``points [..., N, 3]`` for ``centres [..., M, 3]``.

    A point is a neighbour when its distance is strictly below ``radius`` (tested as squared
    distance below ``radius**2`` in float32).

    * ``mode="first"``: the first ``k`` neighbours in index order (the semantics of the
      common PointNet++ CUDA kernel);
    * ``mode="nearest"``: the ``k`` nearest neighbours inside the ball, nearest first.

    Missing slots repeat the first found neighbour. A centre with no point inside the
    ball gets its nearest point (the CUDA kernels would return index 0, a wrong point).
    """
    _check_points("points", points)
    _check_points("centres", centres)
    _check_same_lead("centres", centres, "points", points)
    if not radius > 0 or not math.isfinite(radius):
        raise ValueError(f"radius must be a positive finite number, got {radius}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if mode not in ("first", "nearest"):
        raise ValueError(f"mode must be 'first' or 'nearest', got {mode!r}")
    n = points.shape[-2]
    lead, m = centres.shape[:-2], centres.shape[-2]
    flat_points = points.reshape(-1, n, 3)
    flat_centres = centres.reshape(-1, m, 3)
    if points.device.type == "cpu" and flat_points.shape[0] and n > _WINDOW_MIN_POINTS:
        index = _ball_query_windowed(flat_points, flat_centres, radius * radius, k, mode)
    else:
        sets = items_per_chunk(points.device, m * n)
        parts = [_ball_query_sets(flat_points[s : s + sets], flat_centres[s : s + sets], radius * radius, k, mode)
                 for s in range(0, flat_points.shape[0], sets)]
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
    return index.reshape(*lead, m, k)


#: Point sets up to this size take the plain path on CPU (measured: at 256 points the windows'
#: sorting and gathering cost more than they save; at 2048, 128 centres, r = 0.1 m, ~2x faster).
_WINDOW_MIN_POINTS = 512


def _select(d2: torch.Tensor, r2: float, k: int, mode: str,
            candidate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` slots of ``d2 [S, M, W]`` (squared distances of W candidates, ``inf`` for none)
    that :func:`ball_query` takes, as ``(position in W, valid)``; ``candidate [S, M, W]`` (the
    candidates' point indices, ``None``: position = point index) orders ``mode="first"``."""
    w = d2.shape[-1]
    if mode == "first":
        order = (torch.arange(w, device=d2.device, dtype=torch.float32).expand_as(d2) if candidate is None
                 else candidate.float())  # exact below 2^24 points
        key = torch.where(d2 < r2, order, math.inf)
        values, index = key.topk(min(k, w), dim=-1, largest=False, sorted=True)
        valid = torch.isfinite(values)
    else:  # one fused pass: -d2 inside the ball, -inf outside; the k largest are the k nearest
        key = torch.threshold_(d2.neg_(), -r2, -math.inf)  # F.threshold_ is this function; its stubs omit it
        values, index = key.topk(min(k, w), dim=-1, largest=True, sorted=True)
        valid = values > -math.inf
    return index, valid


def _finish(index: torch.Tensor, valid: torch.Tensor, points: torch.Tensor, centres: torch.Tensor,
            k: int) -> torch.Tensor:
    """Point indices ``index [S, M, kk]`` (``valid`` a prefix per ball) -> :func:`ball_query`'s
    ``[S, M, k]``: padded by repeating the first neighbour, the nearest point for an empty ball."""
    # only centres whose ball is empty need their nearest point (the whole row's argmin)
    fallback = index[..., 0].clone()
    empty = (~valid[..., 0]).nonzero(as_tuple=True)
    if empty[0].numel():
        fallback[empty] = _squared_distances(centres[empty][:, None], points[empty[0]])[:, 0].argmin(-1)
    return _repeat_pad(index, valid, fallback, k)


def _ball_query_sets(points: torch.Tensor, centres: torch.Tensor, r2: float, k: int, mode: str) -> torch.Tensor:
    """:func:`ball_query` on ``points [S, N, 3]``, ``centres [S, M, 3]`` -> ``[S, M, k]``: every
    point is a candidate of every centre."""
    with torch.autocast(device_type=points.device.type, enabled=False):
        d2 = _squared_distances(centres, points)  # [S, M, N]
    index, valid = _select(d2, r2, k, mode)
    return _finish(index, valid, points, centres, k)


def _ball_query_windowed(points: torch.Tensor, centres: torch.Tensor, r2: float, k: int,
                         mode: str) -> torch.Tensor:
    """:func:`ball_query` on ``points [S, N, 3]``, ``centres [S, M, 3]`` (CPU) with candidates
    from windows instead of all N points.

    Each set's points and centres are sorted along the set's widest axis; runs of
    ``_WINDOW_CENTRES`` consecutive centres share one window, the sorted points within the
    radius (along that axis) of any of them. Same result as every point being a candidate: the
    distances are computed the same way, the window has a margin of 1e-5 of the radius over
    the float32 rounding of a squared distance, and ``"first"`` orders by the points' own
    indices. Sets whose windows span most points take the plain path.
    """
    sets, n, _ = points.shape
    m = centres.shape[1]
    g = _WINDOW_CENTRES
    blocks = -(-m // g)
    with torch.autocast(device_type=points.device.type, enabled=False):
        p, c = points.float(), centres.float()
        axis = (p.amax(dim=1) - p.amin(dim=1)).argmax(dim=-1)[:, None, None]  # [S, 1, 1]
        point_key, order = p.gather(2, axis.expand(sets, n, 1))[..., 0].sort(dim=-1)
        centre_key, centre_order = c.gather(2, axis.expand(sets, m, 1))[..., 0].sort(dim=-1)
        if blocks * g > m:  # pad with the last (largest-key) centre; dropped at the end
            centre_order = torch.cat([centre_order, centre_order[:, -1:].expand(sets, blocks * g - m)], dim=1)
            centre_key = torch.cat([centre_key, centre_key[:, -1:].expand(sets, blocks * g - m)], dim=1)
        reach = math.sqrt(r2) * (1 + 1e-5)
        point_key = point_key.double()  # exact bounds: float32 values and their sums in float64
        block_key = centre_key.view(sets, blocks, g).double()
        lo = torch.searchsorted(point_key, block_key[..., 0] - reach, side="left")  # [S, B]
        hi = torch.searchsorted(point_key, block_key[..., -1] + reach, side="right")
        widths = (hi - lo).amax(dim=-1).clamp_(min=1).tolist()  # [S]
        planes = p.gather(1, order[..., None].expand(sets, n, 3)).permute(2, 0, 1)  # sorted, [3, S, N]
        sorted_centres = c.gather(1, centre_order[..., None].expand(sets, blocks * g, 3))
        cplanes = sorted_centres.permute(2, 0, 1).reshape(3, sets, blocks, g, 1)
        parts, s = [], 0
        while s < sets:
            # sets in a chunk share its widest window; ~2^18 candidate distances per chunk
            e, w = s + 1, widths[s]
            while e < sets and blocks * g * max(w, widths[e]) * (e + 1 - s) <= 2**18:
                w, e = max(w, widths[e]), e + 1
            if 2 * w > n:  # the windows would hold most points: no gain
                parts.append(_ball_query_sets(points[s:e], centres[s:e], r2, k, mode))
                s = e
                continue
            pos = lo[s:e, :, None] + torch.arange(w, device=points.device)  # [S', B, W]
            beyond = pos >= n
            flat = pos.clamp_(max=n - 1).view(e - s, blocks * w)
            window = planes[:, s:e].gather(2, flat.expand(3, e - s, blocks * w)).view(3, e - s, blocks, 1, w)
            # same arithmetic as _squared_distances(centres, points): (c - p)^2 summed over x, y, z
            d2 = cplanes[0, s:e] - window[0]  # [S', B, G, W]
            d2.mul_(d2)
            for axis_c in (1, 2):
                diff = cplanes[axis_c, s:e] - window[axis_c]
                d2.addcmul_(diff, diff)
            d2.masked_fill_(beyond[:, :, None], math.inf)
            candidate = order[s:e].gather(1, flat).view(e - s, blocks, 1, w).expand(-1, -1, g, -1)
            slot, valid = _select(d2, r2, k, mode, candidate)
            index = candidate.gather(-1, slot).view(e - s, blocks * g, -1)
            # back to the centres' own order (the padding centres drop out)
            unsort = torch.empty_like(centre_order[s:e, :m])
            unsort.scatter_(1, centre_order[s:e, :m], torch.arange(m, device=points.device).expand(e - s, m))
            index = index.gather(1, unsort[..., None].expand(-1, -1, index.shape[-1]))
            valid = valid.view(e - s, blocks * g, -1).gather(1, unsort[..., None].expand(-1, -1, index.shape[-1]))
            parts.append(_finish(index, valid, points[s:e], centres[s:e], k))
            s = e
    return parts[0] if len(parts) == 1 else torch.cat(parts)


#: Consecutive (sorted) centres that share one candidate window in :func:`_ball_query_windowed`.
_WINDOW_CENTRES = 8


@torch.no_grad()
def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest ``points [..., N, 3]`` of each ``query [..., M, 3]``.

    Returns ``(distances [..., M, k], indices [..., M, k])``, nearest first.
    """
    _check_points("query", query)
    _check_points("points", points)
    n = points.shape[-2]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k}")
    dist = pairwise_distances(query, points)
    return dist.topk(k, dim=-1, largest=False, sorted=True)


def gather_points(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows of ``values [*L, N, C]`` at ``index [*L, *S]`` -> ``[*L, *S, C]`` (differentiable)."""
    lead = values.shape[:-2]
    if index.shape[: len(lead)] != lead:
        raise ValueError(
            f"index {tuple(index.shape)} must start with the leading dims {tuple(lead)} of values {tuple(values.shape)}"
        )
    n, channels = values.shape[-2:]
    sample_shape = index.shape[len(lead):]
    flat_values = values.reshape(-1, n, channels)
    flat_index = index.reshape(flat_values.shape[0], -1)
    out = flat_values.gather(1, flat_index[..., None].expand(-1, -1, channels))
    return out.reshape(*lead, *sample_shape, channels)


def interpolate_features(query: torch.Tensor, points: torch.Tensor, features: torch.Tensor,
                         k: int = 3, eps: float = 1e-8) -> torch.Tensor:
    """Inverse-distance interpolation of ``features [..., M, C]`` at ``points [..., M, 3]`` onto ``query [..., n, 3]``.

    Uses the ``min(k, M)`` nearest points with weights ``1 / (distance + eps)``
    (normalised); ``k=1`` copies the nearest point's feature, ``k=3`` is PointNet++'s
    feature propagation. A query on top of a point takes (almost exactly) its feature.
    Returns ``[..., n, C]``.
    """
    if features.shape[:-1] != points.shape[:-1]:
        raise ValueError(f"features {tuple(features.shape)} must match points {tuple(points.shape)} in [..., M]")
    dist, index = knn(query, points, min(k, points.shape[-2]))
    neighbours = gather_points(features, index)  # [..., n, k, C]
    if index.shape[-1] == 1:
        return neighbours[..., 0, :]
    weights = 1.0 / (dist + eps)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return (neighbours * weights[..., None].to(neighbours.dtype)).sum(dim=-2)
