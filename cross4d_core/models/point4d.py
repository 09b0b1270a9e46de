"""POINT4D: the geometry-only 4D student (the student of arXiv 2607.00514).

Two PointNet++-style set-abstraction levels run on every frame on its own (no
dependence on the frame's position in the window, so a streaming node can cache them),
then a pre-norm transformer mixes all (frame, centroid) tokens of the window with a
learned 4D positional encoding of (x, y, z, t), t = frame index within the window.

Sizes the paper does not give (centroids, radii, k, positional encoding) are chosen so
that the default config lands at ~3.3M parameters and ~11.5 GFLOPs (torch's
FlopCounterMode, 2 FLOPs per multiply-add, attention included) on 24 x 2048 points:
level 1 = 128 centroids per frame, 32 neighbours within 0.1 m; level 2 = 32 centroids
per frame (768 tokens per clip), 16 neighbours within 0.25 m. Radii are in metres for
human-scale clips; scale them with the data (or use ``grouping="nearest"``, whose
neighbourhoods are radius-bounded but order-invariant).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cross4d_core.ops import ball_query, farthest_point_sample, gather_points, interpolate_features, items_per_chunk

MODEL_TYPE = "point4d"


@dataclass
class Point4DConfig:
    """POINT4D hyper-parameters; the defaults are the paper-size model at 24 x 2048.

    Attributes:
        num_frames, num_points: the clip size the model is built for (informational; any
            T and any N >= ``sa1_centroids`` is accepted).
        sa1_centroids, sa1_radius, sa1_neighbours, sa1_channels: level-1 set abstraction
            (centroids per frame, ball radius in metres, neighbours per ball, MLP widths).
        sa2_centroids, sa2_radius, sa2_neighbours, sa2_channels: level 2, sampled from the
            level-1 centroids; its centroids are the tokens.
        grouping: ``"first"`` (first k points in the ball in index order, PointNet++) or
            ``"nearest"`` (the k nearest inside the ball; independent of point order).
        hidden_size, num_layers, num_heads, mlp_ratio, dropout: the transformer.
        time_scale: metres per frame of the t coordinate of the 4D positional encoding.
        point_feature_neighbours: tokens interpolated per input point in
            :meth:`Point4DEncoder.point_features` (1 = nearest token, 3 = 3-NN).
        layer_norm_eps: epsilon of all LayerNorms.
        sa_implementation: how set abstraction is computed, not what: ``"fused"`` (first MLP
            layer per point, cache-sized chunks) or ``"eager"`` (the per-neighbour definition;
            the reference in tests and what the FLOP count of the paper-size model counts).
    """

    num_frames: int = 24
    num_points: int = 2048
    sa1_centroids: int = 128
    sa1_radius: float = 0.1
    sa1_neighbours: int = 32
    sa1_channels: tuple[int, ...] = (64, 64, 128)
    sa2_centroids: int = 32
    sa2_radius: float = 0.25
    sa2_neighbours: int = 16
    sa2_channels: tuple[int, ...] = (128, 128, 256)
    grouping: str = "nearest"
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    time_scale: float = 0.1
    point_feature_neighbours: int = 1
    layer_norm_eps: float = 1e-6
    sa_implementation: str = "fused"

    def __post_init__(self) -> None:
        self.sa1_channels = tuple(int(c) for c in self.sa1_channels)
        self.sa2_channels = tuple(int(c) for c in self.sa2_channels)
        for name in ("num_frames", "num_points", "sa1_centroids", "sa1_neighbours", "sa2_centroids",
                     "sa2_neighbours", "hidden_size", "num_layers", "num_heads", "point_feature_neighbours"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Point4DConfig.{name} must be a positive int, got {value!r}")
        for name in ("sa1_radius", "sa2_radius", "time_scale", "mlp_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Point4DConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.sa1_channels or not self.sa2_channels or min(self.sa1_channels + self.sa2_channels) < 1:
            raise ValueError(f"Point4DConfig: set-abstraction channels must be non-empty positive, got "
                             f"{self.sa1_channels} / {self.sa2_channels}")
        if self.sa2_centroids > self.sa1_centroids:
            raise ValueError(f"Point4DConfig.sa2_centroids ({self.sa2_centroids}) must be <= "
                             f"sa1_centroids ({self.sa1_centroids})")
        if self.sa1_centroids > self.num_points:
            raise ValueError(f"Point4DConfig.sa1_centroids ({self.sa1_centroids}) must be <= "
                             f"num_points ({self.num_points})")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"Point4DConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if self.grouping not in ("first", "nearest"):
            raise ValueError(f"Point4DConfig.grouping must be 'first' or 'nearest', got {self.grouping!r}")
        if self.sa_implementation not in ("fused", "eager"):
            raise ValueError(f"Point4DConfig.sa_implementation must be 'fused' or 'eager', "
                             f"got {self.sa_implementation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Point4DConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def tiny(cls, **overrides) -> Point4DConfig:
        """A small config for tests (4 frames x 64 points, width 32, 2 layers)."""
        values: dict[str, Any] = dict(num_frames=4, num_points=64, sa1_centroids=16, sa1_radius=0.5, sa1_neighbours=8,
                      sa1_channels=(16, 32), sa2_centroids=8, sa2_radius=1.0, sa2_neighbours=4,
                      sa2_channels=(32, 32), hidden_size=32, num_layers=2, num_heads=4, mlp_ratio=2.0)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["sa1_channels"] = list(self.sa1_channels)
        values["sa2_channels"] = list(self.sa2_channels)
        return {"model_type": MODEL_TYPE, **values}

    @classmethod
    def from_dict(cls, values: dict) -> Point4DConfig:
        values = dict(values)
        model_type = values.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"config model_type is {model_type!r}, expected {MODEL_TYPE!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Point4DConfig: unknown keys {unknown}")
        return cls(**values)


@dataclass
class FrameTokens:
    """Per-frame set-abstraction output (window-independent; cacheable per frame).

    Attributes:
        features: ``[B, T, M, C]`` token features before the transformer.
        centres: ``[B, T, M, 3]`` token centres (metres), a subset of the frame's points.
        point_index: ``[B, T, M]`` int64 index of each centre into its frame's N points.
    """

    features: torch.Tensor
    centres: torch.Tensor
    point_index: torch.Tensor

    def frames(self, index: slice | int | torch.Tensor) -> FrameTokens:
        """The tokens of the selected frames (an int keeps the frame axis, length 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return FrameTokens(self.features[:, index], self.centres[:, index], self.point_index[:, index])

    @classmethod
    def concat(cls, parts: list[FrameTokens]) -> FrameTokens:
        """Join frame tokens along the frame axis (oldest first), e.g. cached frames + a new one."""
        if not parts:
            raise ValueError("FrameTokens.concat needs at least one part")
        return cls(torch.cat([p.features for p in parts], dim=1),
                   torch.cat([p.centres for p in parts], dim=1),
                   torch.cat([p.point_index for p in parts], dim=1))


@dataclass
class Point4DOutput:
    """Encoder output for a window of T frames.

    Attributes:
        token_features: ``[B, T, M, C]`` transformer output per (frame, centroid) token.
        token_centres: ``[B, T, M, 3]`` token centres (metres); token ``[b, t, m]`` is in frame t.
        token_point_index: ``[B, T, M]`` int64 index of each centre into its frame's N input points.
        clip_feature: ``[B, C]`` mean of ``token_features`` over frames and tokens.
    """

    token_features: torch.Tensor
    token_centres: torch.Tensor
    token_point_index: torch.Tensor
    clip_feature: torch.Tensor


class SetAbstraction(nn.Module):
    """One PointNet++ set-abstraction level: group around centres, shared MLP, max-pool.

    The MLP's first layer acts on ``[(p - c) / r, f(p)]`` for each neighbour ``p`` of centre
    ``c``. ``implementation="fused"`` computes the same function as the per-neighbour
    definition (``"eager"``) with less work: a linear map of ``(p - c) / r`` is the per-point
    map minus the centre's, so the first layer runs once per point and once per centre
    instead of once per (centre, neighbour); the per-neighbour rest of the MLP runs in chunks
    that stay in cache on CPU, with in-place activations when no gradient is recorded.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], radius: float, neighbours: int,
                 grouping: str, eps: float, implementation: str = "fused") -> None:
        super().__init__()
        self.radius = radius
        self.neighbours = neighbours
        self.grouping = grouping
        self.implementation = implementation
        layers: list[nn.Module] = []
        width = in_channels + 3
        for out in channels:
            layers += [nn.Linear(width, out), nn.LayerNorm(out, eps=eps), nn.GELU()]
            width = out
        self.mlp = nn.Sequential(*layers)

    def forward(self, points: torch.Tensor, features: torch.Tensor | None, centres: torch.Tensor) -> torch.Tensor:
        """``points [P, N, 3]``, ``features [P, N, C] | None``, ``centres [P, M, 3]`` -> ``[P, M, C_out]``."""
        index = ball_query(points, centres, self.radius, self.neighbours, mode=self.grouping)
        if self.implementation == "eager":
            return self._forward_eager(points, features, centres, index)
        return self._forward_fused(points, features, centres, index)

    def _forward_eager(self, points, features, centres, index) -> torch.Tensor:
        """The definition: the whole MLP on every grouped neighbour ``[P, M, k, 3 + C]``."""
        offsets = (gather_points(points, index) - centres[:, :, None]) / self.radius
        grouped = offsets if features is None else torch.cat(
            [offsets.to(features.dtype), gather_points(features, index)], dim=-1)
        return self.mlp(grouped).amax(dim=-2)

    def _forward_fused(self, points, features, centres, index) -> torch.Tensor:
        sets, n, _ = points.shape
        m, k = index.shape[1:]
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)  # every MLP here starts with its Linear layer
        # Points and centres are taken relative to each set's first centre, and their maps are
        # computed in float32 even under autocast: the maps then have the magnitude of the set's
        # extent (over the radius), not of its distance from the origin, and their difference
        # (of the order of the radius) keeps its precision.
        origin = centres[:, :1]
        with torch.autocast(points.device.type, enabled=False):
            w_xyz = first.weight[:, :3].float() / self.radius
            per_point = F.linear((points - origin).float(), w_xyz, first.bias.float())
            per_centre = F.linear((centres - origin).float(), w_xyz).reshape(sets * m, -1)
        if features is not None:
            per_point = per_point + F.linear(features, first.weight[:, 3:])
        per_point = per_point.reshape(sets * n, -1)
        rows = (index + torch.arange(0, sets * n, n, device=index.device)[:, None, None]).reshape(sets * m, k)
        # Max-pooling ignores repeated neighbours, and ball_query pads a ball with fewer than k
        # points by repeating its first one: each centre needs only its slots up to the last one
        # that differs from slot 0 (``used``, any index is handled this way). Centres sorted by
        # ``used`` (descending) go in chunks cut to their first centre's ``used``.
        used = (rows != rows[:, :1]).mul(torch.arange(k, device=rows.device)).amax(dim=-1).add_(1)
        widest = max(layer.out_features for layer in self.mlp if isinstance(layer, nn.Linear))
        grad = torch.is_grad_enabled()
        if int(used.min()) == k:  # every ball full: nothing to skip, no reordering
            order = None
            chunks = self._chunks(used, k, widest, grad)
        else:
            used, order = used.sort(descending=True, stable=True)
            rows, per_centre = rows.index_select(0, order), per_centre.index_select(0, order)
            chunks = self._chunks(used, k, widest, grad)
        if grad:
            # One gather for all chunks: each chunk's own index_select would, in its backward,
            # scatter into a zero gradient the size of all points.
            flat = torch.cat([rows[s:e, :kk].reshape(-1) for s, e, kk in chunks]) if order is not None else rows
            pieces = per_point.index_select(0, flat.reshape(-1)).split([(e - s) * kk for s, e, kk in chunks])
            parts = [self._rest_of_mlp(piece.view(e - s, kk, -1) - per_centre[s:e, None])
                     for piece, (s, e, kk) in zip(pieces, chunks)]
        else:
            parts = []
            for s, e, kk in chunks:
                x = per_point.index_select(0, rows[s:e, :kk].reshape(-1)).view(e - s, kk, -1)
                parts.append(self._rest_of_mlp(x.sub_(per_centre[s:e, None])))
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        if order is not None:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            out = out.index_select(0, inverse)
        return out.reshape(sets, m, -1)

    @staticmethod
    def _chunks(used: torch.Tensor, k: int, widest: int, grad: bool) -> list[tuple[int, int, int]]:
        """``(start, stop, slots)`` chunks of centres sorted by ``used`` (descending; or all ``k``).

        CPU without autograd: chunks whose widest activation ``[centres * slots, widest]`` holds
        ~2^19 values (2 MiB, a core's L2 cache). Otherwise (autograd keeps every activation, and
        accelerators want few large ops): up to 8 chunks of equally many centres, neighbours of
        equal ``slots`` merged."""
        total = used.numel()
        if grad or used.device.type != "cpu":
            bounds = sorted({round(i * total / 8) for i in range(9)})
            firsts = used[torch.tensor(bounds[:-1], device=used.device)].tolist()
            chunks: list[tuple[int, int, int]] = []
            for s, e, kk in zip(bounds[:-1], bounds[1:], firsts):
                if chunks and chunks[-1][2] == kk:
                    chunks[-1] = (chunks[-1][0], e, kk)
                else:
                    chunks.append((s, e, kk))
            return chunks
        counts, chunks, s = used.tolist(), [], 0
        while s < total:
            e = min(total, s + items_per_chunk(used.device, counts[s] * widest, cpu_elements=2**19))
            chunks.append((s, e, counts[s]))
            s = e
        return chunks

    def _rest_of_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``self.mlp`` after its first linear layer, then the max over neighbours:
        ``x [centres, slots, C]`` -> ``[centres, C_out]``.

        Without autograd the activations run in place, and the last GELU after the max, on the
        largest and smallest of its inputs per (centre, channel): GELU decreases below its
        minimum (x ~ -0.75) and increases above it, so its maximum over a set of inputs is at one
        of their two extremes (the same value, up to the last bit of the erf approximation) and
        the widest per-neighbour tensor skips the GELU. (With autograd the backward of a second
        reduction over that tensor costs more than the GELU saves.)
        """
        if torch.is_grad_enabled():
            for layer in list(self.mlp)[1:]:
                x = layer(x)
            return x.amax(dim=-2)
        *body, last = list(self.mlp)[1:]
        for layer in body:
            x = torch.ops.aten.gelu_(x, approximate=layer.approximate) if isinstance(layer, nn.GELU) else layer(x)
        if not isinstance(last, nn.GELU):  # (every MLP here ends Linear, LayerNorm, GELU)
            return last(x).amax(dim=-2)
        high = torch.ops.aten.gelu_(x.amax(dim=-2), approximate=last.approximate)
        low = torch.ops.aten.gelu_(x.amin(dim=-2), approximate=last.approximate)
        return torch.maximum(high, low, out=high)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (multi-head self-attention + GELU MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        hidden = int(round(width * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(batch, length, width)))
        return x + self.drop(self.mlp(self.norm2(x)))


class Point4DEncoder(nn.Module):
    """POINT4D encoder: ``points [B, T, N, 3]`` (metres) -> :class:`Point4DOutput`."""

    def __init__(self, config: Point4DConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or Point4DConfig()
        eps = config.layer_norm_eps
        self.sa1 = SetAbstraction(0, config.sa1_channels, config.sa1_radius, config.sa1_neighbours,
                                  config.grouping, eps, config.sa_implementation)
        self.sa2 = SetAbstraction(config.sa1_channels[-1], config.sa2_channels, config.sa2_radius,
                                  config.sa2_neighbours, config.grouping, eps, config.sa_implementation)
        width = config.hidden_size
        self.token_proj = (nn.Identity() if config.sa2_channels[-1] == width
                           else nn.Linear(config.sa2_channels[-1], width))
        self.position = nn.Sequential(nn.Linear(4, width), nn.GELU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(TransformerBlock(width, config.num_heads, config.mlp_ratio, config.dropout, eps)
                                    for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(width, eps=eps)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def _check_points(self, points: torch.Tensor) -> None:
        if points.dim() != 4 or points.shape[-1] != 3:
            raise ValueError(f"points must be [B, T, N, 3], got {tuple(points.shape)}")
        if not points.is_floating_point():
            raise ValueError(f"points must be floating point, got {points.dtype}")
        if points.shape[2] < self.config.sa1_centroids:
            raise ValueError(f"points has N={points.shape[2]} per frame, fewer than "
                             f"sa1_centroids={self.config.sa1_centroids}")
        if points.shape[0] * points.shape[1] == 0:
            raise ValueError(f"points has no frames: shape {tuple(points.shape)}")
        if not bool(torch.isfinite(points).all()):
            raise ValueError("points contains NaN or Inf coordinates")

    def encode_frames(self, points: torch.Tensor) -> FrameTokens:
        """Per-frame set abstraction of ``points [B, T, N, 3]``; frame t depends on frame t only."""
        self._check_points(points)
        batch, frames, n, _ = points.shape
        flat = points.reshape(batch * frames, n, 3).float()
        index1 = farthest_point_sample(flat, self.config.sa1_centroids)
        centres1 = gather_points(flat, index1)
        features1 = self.sa1(flat, None, centres1)
        index2 = farthest_point_sample(centres1, self.config.sa2_centroids)
        centres2 = gather_points(centres1, index2)
        features2 = self.token_proj(self.sa2(centres1, features1, centres2))
        m = self.config.sa2_centroids
        return FrameTokens(features=features2.reshape(batch, frames, m, -1),
                           centres=centres2.reshape(batch, frames, m, 3),
                           point_index=index1.gather(1, index2).reshape(batch, frames, m))

    def position_encoding(self, centres: torch.Tensor) -> torch.Tensor:
        """Learned 4D encoding ``[B, T, M, C]`` of ``centres [B, T, M, 3]`` and their frame index."""
        frames = centres.shape[1]
        t = torch.arange(frames, device=centres.device, dtype=centres.dtype) * self.config.time_scale
        t = t.reshape(1, frames, 1, 1).expand(*centres.shape[:-1], 1)
        return self.position(torch.cat([centres, t], dim=-1))

    def token_embeddings(self, frame_tokens: FrameTokens) -> torch.Tensor:
        """Transformer input ``[B, T*M, C]``: token features + 4D position, frame-major order."""
        x = frame_tokens.features + self.position_encoding(frame_tokens.centres)
        return x.flatten(1, 2)

    def encode_tokens(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run the transformer on ``embeddings [B, L, C]`` (any token subset) -> ``[B, L, C]``."""
        x = embeddings
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def encode_window(self, frame_tokens: FrameTokens) -> Point4DOutput:
        """Mix all (frame, centroid) tokens of a window; t = position of the frame in it."""
        batch, frames, m, _ = frame_tokens.features.shape
        x = self.encode_tokens(self.token_embeddings(frame_tokens)).reshape(batch, frames, m, -1)
        return Point4DOutput(token_features=x, token_centres=frame_tokens.centres,
                             token_point_index=frame_tokens.point_index, clip_feature=x.mean(dim=(1, 2)))

    def forward(self, points: torch.Tensor) -> Point4DOutput:
        return self.encode_window(self.encode_frames(points))

    def point_features(self, output: Point4DOutput, points: torch.Tensor,
                       neighbours: int | None = None) -> torch.Tensor:
        """Per-point features ``[B, T, N, C]``: each point takes its nearest token's feature in its
        own frame (``neighbours=1``) or an inverse-distance blend of the ``neighbours`` nearest."""
        if points.shape[:2] != output.token_centres.shape[:2] or points.shape[-1] != 3:
            raise ValueError(f"points {tuple(points.shape)} must be [B, T, N, 3] matching the output's "
                             f"[B, T] = {tuple(output.token_centres.shape[:2])}")
        k = neighbours or self.config.point_feature_neighbours
        return interpolate_features(points.float(), output.token_centres, output.token_features, k=k)
