"""The typed batches the pretraining objectives read, and the one-op per-point target gather.

``ClipBatch`` is what every objective needs (the clips' points); ``TargetBatch`` adds the
teacher targets of the dense and global objectives in the target cache's token-granularity
form: per clip a compact table of the projected teacher features that some visible point
uses, and per point the row of its target in that table. Both are built by a DataLoader
``collate_fn`` (:meth:`ClipBatch.collate` for ``ClipDataset`` dict items,
:meth:`TargetBatch.collate` for :class:`ClipTargets` items) and check their shapes once,
here, instead of in each objective.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


def _map_tensors(obj, fn):
    """A copy of the dataclass ``obj`` with ``fn`` applied to every tensor field."""
    return dataclasses.replace(obj, **{f.name: fn(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                       if isinstance(getattr(obj, f.name), torch.Tensor)})


@dataclass
class ClipBatch:
    """Points of ``B`` clips of ``T`` frames x ``N`` points.

    Attributes:
        points: ``[B, T, N, 3]`` float32, metres.
        label: ``[B]`` int64 action label (-1 = none).
        video: ``[B]`` int64 index of the clip's video in its dataset.
        start: ``[B]`` int64 first source frame of the clip in its video.
    """

    points: torch.Tensor
    label: torch.Tensor
    video: torch.Tensor
    start: torch.Tensor

    def __post_init__(self) -> None:
        if self.points.dim() != 4 or self.points.shape[-1] != 3:
            raise ValueError(f"{type(self).__name__}: points must be [B, T, N, 3], got {tuple(self.points.shape)}")
        for name in ("label", "video", "start"):
            value = getattr(self, name)
            if value.shape != self.points.shape[:1]:
                raise ValueError(f"{type(self).__name__}: {name} must be [B={self.points.shape[0]}], got "
                                 f"{tuple(value.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.points.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False):
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        """Called by ``DataLoader(pin_memory=True)``."""
        return _map_tensors(self, lambda t: t.pin_memory())

    @classmethod
    def collate(cls, items: list[dict]) -> ClipBatch:
        """``collate_fn`` for ``ClipDataset`` items (dicts with ``points``, ``label``, ``video``, ``start``)."""
        stacked = {k: torch.stack([torch.as_tensor(item[k]) for item in items]) for k in ("points", "label",
                                                                                          "video", "start")}
        return ClipBatch(points=stacked["points"].float(), label=stacked["label"].long(),
                         video=stacked["video"].long(), start=stacked["start"].long())


@dataclass
class ClipTargets:
    """One clip of a target cache (or of online-teacher training) with its teacher targets.

    Attributes:
        points: ``[T, N, 3]`` float32, metres.
        target_index: ``[T, N]`` int64 row of each point's target in ``features``; -1 = the
            point is not visible to the teacher and carries no target.
        features: ``[K, d_p]`` float16 projected teacher features of the ``K`` distinct
            (time slot, patch) cells that some visible point of the clip lands in.
        clip_target: ``[d_p]`` float32 clip-level target of the ``global`` baseline (projection
            of the mean teacher feature over those ``K`` cells: the subject's patches).
        label, video, start, clip: int64 scalars (``clip``: index in the clip dataset).
    """

    points: torch.Tensor
    target_index: torch.Tensor
    features: torch.Tensor
    clip_target: torch.Tensor
    label: torch.Tensor
    video: torch.Tensor
    start: torch.Tensor
    clip: torch.Tensor


@dataclass
class TargetBatch(ClipBatch):
    """A :class:`ClipBatch` with the dense and global teacher targets.

    Attributes:
        target_index: ``[B, T, N]`` int64 row of each point's target in ``features[b]``;
            -1 = invisible (no target).
        features: ``[B, K, d_p]`` float16 per-clip target tables, zero-padded to the batch's
            largest ``K`` (padding rows are never indexed).
        clip_target: ``[B, d_p]`` float32.
        clip: ``[B]`` int64 index of each clip in its clip dataset.
    """

    target_index: torch.Tensor
    features: torch.Tensor
    clip_target: torch.Tensor
    clip: torch.Tensor

    def __post_init__(self) -> None:
        super().__post_init__()
        B, T, N = self.points.shape[:3]
        if self.target_index.shape != (B, T, N):
            raise ValueError(f"TargetBatch: target_index must be [B, T, N] = {(B, T, N)}, got "
                             f"{tuple(self.target_index.shape)}")
        if self.features.dim() != 3 or self.features.shape[0] != B:
            raise ValueError(f"TargetBatch: features must be [B={B}, K, d_p], got {tuple(self.features.shape)}")
        if self.clip_target.shape != (B, self.features.shape[-1]):
            raise ValueError(f"TargetBatch: clip_target must be [B, d_p] = {(B, self.features.shape[-1])}, got "
                             f"{tuple(self.clip_target.shape)}")
        if self.clip.shape != (B,):
            raise ValueError(f"TargetBatch: clip must be [B={B}], got {tuple(self.clip.shape)}")

    @property
    def visible(self) -> torch.Tensor:
        """``[B, T, N]`` bool: the point has a teacher target."""
        return self.target_index >= 0

    # Each batch type collates its own item type (a collate_fn, never called through the base class).
    @classmethod
    def collate(cls, items: list[ClipTargets]) -> TargetBatch:  # type: ignore[override]
        """``collate_fn`` for :class:`ClipTargets`: stacks, zero-pads ``features`` to the largest
        ``K`` and checks that every visible point indexes a row of its own clip's table."""
        if not items:
            raise ValueError("TargetBatch.collate: no items")
        sizes = [int(item.features.shape[0]) for item in items]
        for i, item in enumerate(items):
            if item.target_index.numel() and int(item.target_index.max()) >= sizes[i]:
                raise ValueError(f"TargetBatch.collate: clip {int(item.clip)} has target rows up to "
                                 f"{int(item.target_index.max())} but a table of {sizes[i]} rows")
        first = items[0].features
        features = first.new_zeros(len(items), max(1, *sizes), first.shape[-1])  # >= 1 row: gather needs one
        for i, item in enumerate(items):
            features[i, :sizes[i]] = item.features
        stack = lambda name: torch.stack([getattr(item, name) for item in items])  # noqa: E731
        return cls(points=stack("points"), label=stack("label"), video=stack("video"), start=stack("start"),
                   target_index=stack("target_index"), features=features, clip_target=stack("clip_target"),
                   clip=stack("clip"))


def compact_targets(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Renumber target rows densely.

    Args:
        rows: ``[...]`` int64 rows into some feature table, -1 = no target.

    Returns:
        ``used [K]`` the distinct rows >= 0, ascending, and ``index [...]`` int64 with
        ``used[index] == rows`` where ``rows >= 0`` and -1 elsewhere. Costs O(rows + the range
        of row values): meant for the rows of one clip or video (a contiguous table range).
    """
    valid = rows >= 0
    if not bool(valid.any()):
        return rows.new_zeros(0), torch.full_like(rows, -1)
    # a presence table over [lo, hi] instead of a sort: the rows of one clip span a small range
    lo, hi = int(rows[valid].min()), int(rows.max())
    shifted = torch.where(valid, rows - lo, hi - lo + 1)  # invisible -> one extra slot past the range
    present = torch.zeros(hi - lo + 2, dtype=torch.bool, device=rows.device)
    present[shifted] = True
    present[-1] = False
    renumber = torch.cumsum(present, 0) - 1
    index = torch.where(valid, renumber[shifted], -1)
    return torch.nonzero(present).squeeze(1) + lo, index


def gather_point_targets(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-point targets in one advanced-indexing op.

    Args:
        features: ``[B, K, d]`` per-clip target tables.
        index: ``[B, ...]`` int64 rows into them (-1 = invisible).

    Returns:
        ``[B, ..., d]``; rows of invisible points are arbitrary (row 0) and must be masked.
    """
    B = features.shape[0]
    batch = torch.arange(B, device=features.device).reshape(B, *([1] * (index.dim() - 1)))
    return features[batch, index.clamp_min(0)]
