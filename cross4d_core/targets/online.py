"""Online-teacher training: the frozen teacher runs inside the training step, no target cache.

For datasets whose cache would not fit on disk. The data source (:class:`OnlineClips`, in
DataLoader workers, CPU) yields each clip's points, the teacher's inputs and the
correspondence; :class:`OnlineTeacher` (the trainer's ``prepare_batch``, on the training
device: bf16 autocast on CUDA, fp32 on CPU, under ``torch.inference_mode``) runs the
teacher on the whole batch at once and turns it into the same :class:`TargetBatch` a
:class:`~cross4d_core.targets.TargetCache` gives, through the same functions as
``cross4d precompute`` (:func:`correspond_clip`, :func:`teacher_grids`, :func:`target_record`).

The targets equal the cached ones (up to the fp16 rounding both use): frames are sampled
per frame (``ClipDataset.video_frames``) and the render source draws the clip's whole video
(the stored frames of its video, as the cache does) so that the virtual cameras and the depth
shading are the video's; only the clip's frames go through the teacher. Image teachers only
(``tubelet == 1``): a video teacher's features of a frame depend on the frames around it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cross4d_core.correspondence import RenderViews
from cross4d_core.targets.batch import ClipBatch, TargetBatch
from cross4d_core.targets.frames import group_clips, load_frames
from cross4d_core.targets.precompute import SOURCES, correspond_clip, target_record, teacher_grids
from cross4d_core.targets.projection import FeatureProjection
from cross4d_core.teachers.base import Teacher
from cross4d_core.types import Correspondence


@dataclass
class OnlineClip:
    """One clip ready for the teacher.

    Attributes:
        points: ``[T, N, 3]`` float32 metres.
        inputs: ``[V * T, H, W, 3]`` uint8 teacher images (camera-major; ``V`` render
            cameras, 1 in camera mode) or ``[V * T, H, W]`` int64 part labels.
        slot, patch: ``[T, N]`` int64 slot ``v * T + t`` into the teacher's grids of
            ``inputs`` and flat patch index (-1 = invisible); visible: ``[T, N]`` bool.
        grid_size: ``(grid_h, grid_w)`` of the teacher's patch grid.
        label, video, start, clip: int64 scalars.
    """

    points: torch.Tensor
    inputs: torch.Tensor
    slot: torch.Tensor
    patch: torch.Tensor
    visible: torch.Tensor
    label: torch.Tensor
    video: torch.Tensor
    start: torch.Tensor
    clip: torch.Tensor
    grid_size: tuple[int, int]


@dataclass
class OnlineBatch(ClipBatch):
    """Collated :class:`OnlineClip`: ``inputs [B, V * T, ...]``, ``slot`` / ``patch`` / ``visible
    [B, T, N]``, ``clip [B]`` and the shared ``grid_size``."""

    inputs: torch.Tensor
    slot: torch.Tensor
    patch: torch.Tensor
    visible: torch.Tensor
    clip: torch.Tensor
    grid_size: tuple[int, int]

    # Each batch type collates its own item type (a collate_fn, never called through the base class).
    @classmethod
    def collate(cls, items: list[OnlineClip]) -> OnlineBatch:  # type: ignore[override]
        """``collate_fn`` for :class:`OnlineClips`."""
        stack = lambda name: torch.stack([getattr(item, name) for item in items])  # noqa: E731
        return cls(points=stack("points"), label=stack("label"), video=stack("video"), start=stack("start"),
                   inputs=stack("inputs"), slot=stack("slot"), patch=stack("patch"), visible=stack("visible"),
                   clip=stack("clip"), grid_size=items[0].grid_size)


class OnlineClips(torch.utils.data.Dataset):
    """The clips of a ``ClipDataset`` with their teacher inputs and correspondence.

    Args:
        clips: the ``ClipDataset`` (its clip table and ``video_frames``).
        teacher: the frozen teacher; only its image transform, patch size and input kind are
            used here (workers never run it).
        source, image_size, splat_radius, depth_tolerance, views: as for ``cross4d precompute``.
    """

    collate = staticmethod(OnlineBatch.collate)

    def __init__(self, clips, teacher: Teacher, source: str = "render", image_size: int = 126,
                 splat_radius: int = 1, depth_tolerance: float = 0.05, views: RenderViews | None = None) -> None:
        if teacher.tubelet != 1:
            raise ValueError(f"online-teacher training needs an image teacher (tubelet 1); {teacher.name} has "
                             f"tubelet {teacher.tubelet}: precompute a target cache instead")
        if source not in SOURCES:
            raise ValueError(f"OnlineClips: source {source!r} is not one of {SOURCES}")
        self.clips, self.teacher, self.source = clips, teacher, source
        self.image_size, self.splat_radius, self.depth_tolerance, self.views = (image_size, splat_radius,
                                                                                 depth_tolerance, views)
        self.videos = group_clips(clips)
        self._where = {int(c): (g, row) for g, video in enumerate(self.videos) for row, c in enumerate(video.clips)}

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> OnlineClip:
        g, row = self._where[int(index)]
        video = self.videos[g]
        frames = load_frames(self.clips, video)
        inputs, corr = correspond_clip(frames, self.teacher, self.source, self.image_size, self.splat_radius,
                                       self.depth_tolerance, self.views)
        F = frames.num_frames
        positions = torch.from_numpy(video.clip_frames[row])
        T = len(positions)
        views = inputs.shape[0] // F
        rows = (torch.arange(views)[:, None] * F + positions[None]).reshape(-1)  # camera-major like the slots
        slot = corr.slot[positions]
        slot = (slot // F) * T + torch.arange(T)[:, None]  # tubelet 1: slot v * F + f -> v * T + t
        scalar = lambda v: torch.tensor(int(v), dtype=torch.int64)  # noqa: E731
        return OnlineClip(points=torch.from_numpy(np.ascontiguousarray(frames.points[positions.numpy()])),
                          inputs=inputs[rows], slot=slot, patch=corr.patch[positions],
                          visible=corr.visible[positions], label=scalar(-1 if frames.label is None else frames.label),
                          video=scalar(video.video), start=scalar(video.starts[row]), clip=scalar(index),
                          grid_size=corr.grid_size)


class OnlineTeacher:
    """The trainer's ``prepare_batch`` in online-teacher mode: ``OnlineBatch -> TargetBatch``.

    Runs the frozen teacher on every frame of the batch in one call (the teacher's own
    autocast: bf16 on CUDA, fp32 on CPU; ``torch.inference_mode``), projects the features
    and keeps, per clip, the cells its visible points use (:func:`target_record`), so the
    objectives read exactly what a target cache gives.
    """

    def __init__(self, teacher: Teacher, projection: FeatureProjection) -> None:
        self.teacher, self.projection = teacher, projection

    def __call__(self, batch: OnlineBatch) -> TargetBatch:
        B, T = batch.points.shape[:2]
        frames = batch.inputs.flatten(0, 1)  # [B * V * T, ...]
        corr = Correspondence(batch.slot, batch.patch, batch.visible, batch.grid_size)
        with torch.inference_mode():
            feats = teacher_grids(self.teacher, frames, frames.shape[0], corr)  # [B * V * T, hp, wp, C]
        feats = feats.to(batch.points.device).reshape(B, -1, *feats.shape[1:])
        items = [target_record(batch.points[b], Correspondence(batch.slot[b], batch.patch[b], batch.visible[b],
                                                               batch.grid_size),
                               feats[b], self.projection, video=int(batch.video[b]), label=int(batch.label[b]),
                               starts=batch.start[b:b + 1], clips=batch.clip[b:b + 1]).clip_targets(0)
                 for b in range(B)]
        return TargetBatch.collate(items)
