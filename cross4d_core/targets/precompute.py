"""``precompute_targets``: correspondence + frozen teacher + projection -> target cache.

The teacher runs once per stored frame here and never during cached training; the same
functions (:func:`correspond_clip`, :func:`teacher_grids`, :func:`target_record`) make the
targets of online-teacher training (:mod:`cross4d_core.targets.online`) and of ``distill_node``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from cross4d_core.correspondence import CorrespondenceError, RenderViews, camera_correspondence, render_clip
from cross4d_core.targets.batch import compact_targets
from cross4d_core.targets.cache import TargetCacheWriter, TargetRecord, cache_config
from cross4d_core.targets.frames import VideoClips, group_clips, load_frames
from cross4d_core.targets.projection import FeatureProjection
from cross4d_core.teachers.base import Teacher
from cross4d_core.types import Clip, Correspondence

if TYPE_CHECKING:
    from cross4d_core.teachers.parts import PartTeacher

log = logging.getLogger(__name__)

SOURCES = ("render", "camera")


def correspond_clip(clip: Clip, teacher: Teacher, source: str, image_size: int = 126, splat_radius: int = 1,
                    depth_tolerance: float = 0.05, views: RenderViews | None = None
                    ) -> tuple[torch.Tensor, Correspondence]:
    """What the teacher sees and the point -> patch correspondence of one clip.

    ``render``: ``[V * T, image_size, image_size, 3]`` depth-shaded renders from the clip's
    virtual cameras (``views``; camera-major), or for a part-label teacher the
    ``[V * T, S, S]`` part label of the nearest point per pixel; ``camera``: the clip's own
    ``[T, H, W, 3]`` images and cameras. Both go through the teacher's own image transform,
    so the patch indices match its feature grid. Shared by ``cross4d precompute`` and the ROS
    ``distill_node``.
    """
    if source == "render":
        transform = teacher.image_transform(image_size, image_size)
        out = render_clip(clip.points, image_size, teacher.patch_size, splat_radius, transform=transform,
                          tubelet=teacher.tubelet, views=views)
        if teacher.input_kind == "part_labels":
            if clip.part is None:
                raise CorrespondenceError("the part teacher needs per-point part labels; this clip has none")
            part_teacher = cast("PartTeacher", teacher)  # input_kind 'part_labels': the part teacher's interface
            return out.label_images(part_teacher.point_labels(clip.points, clip.part)), out.correspondence
        return out.images, out.correspondence
    if teacher.input_kind != "rgb":
        raise CorrespondenceError(f"camera mode needs an RGB teacher; {teacher.name} reads {teacher.input_kind}")
    if clip.images is None or clip.cameras is None:
        raise CorrespondenceError("clip has no images / cameras; camera mode needs both (use --source render)")
    images = np.asarray(clip.images)
    if images.ndim != 4 or 0 in images.shape:
        raise CorrespondenceError(f"images: expected [T, H, W, 3] with a non-zero size, got {images.shape}")
    transform = teacher.image_transform(images.shape[1], images.shape[2])
    corr = camera_correspondence(clip.points, images, clip.cameras, transform, tubelet=teacher.tubelet,
                                 depth_tolerance=depth_tolerance)
    return torch.from_numpy(images), corr


def teacher_grids(teacher: Teacher, inputs: torch.Tensor, num_frames: int, corr: Correspondence) -> torch.Tensor:
    """``[V * S, hp, wp, C]`` teacher features of :func:`correspond_clip`'s ``inputs`` (``V * T``
    frames, camera-major: each camera's frames run through the teacher as one clip)."""
    feats = []
    for start in range(0, inputs.shape[0], num_frames):
        grid, transform = teacher.grid_features(inputs[start:start + num_frames])
        if transform.grid_size != corr.grid_size:
            raise RuntimeError(f"teacher grid {transform.grid_size} != correspondence grid {corr.grid_size}")
        feats.append(grid)
    return torch.cat(feats)


def _long(value, default: torch.Tensor, device: torch.device) -> torch.Tensor:
    value = default if value is None else value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
    return value.to(device, torch.int64)


def target_record(points: np.ndarray | torch.Tensor, corr: Correspondence, feats: torch.Tensor,
                  projection: FeatureProjection, clip_frames: np.ndarray | torch.Tensor | None = None, *,
                  frame: np.ndarray | torch.Tensor | None = None, video: int = 0, label: int = -1,
                  starts: np.ndarray | torch.Tensor | None = None,
                  clips: np.ndarray | torch.Tensor | None = None) -> TargetRecord:
    """One stored video of a target cache from its frames, correspondence and teacher features.

    Keeps, of the teacher features ``feats [S, hp, wp, C]`` (all slots of all views), only
    the (slot, patch) cells some visible point lands in, projected to d_p in fp16, and gives
    each point the row of its cell. A clip's ``clip_target`` (the ``global`` baseline's
    target) is the projection of the mean feature over the cells holding a visible point of
    the clip: pooling over the subject's cells, not over every patch, keeps the background
    (most of the image) from making every clip's target the same; a clip with no visible
    point falls back to the mean over every cell of ``feats``.

    Args:
        points: ``[F, N, 3]`` metres; corr: their correspondence (slots index ``feats``).
        clip_frames: ``[n, T]`` positions in the ``F`` frames of each clip (default: one clip of all frames).
        frame: ``[F]`` source frame indices (default ``0 .. F-1``); video, label: the video's.
        starts, clips: ``[n]`` first source frame and clip-dataset index of each clip (default 0).
    """
    device = feats.device
    as_long = lambda value, default: _long(value, default, device)  # noqa: E731
    points = torch.as_tensor(points).to(device, torch.float32)
    F, N = corr.visible.shape
    flat = feats.reshape(-1, feats.shape[-1])
    cells = corr.slot.to(device) * (feats.shape[1] * feats.shape[2]) + corr.patch.to(device)
    used, target = compact_targets(torch.where(corr.visible.to(device), cells, -1))
    clip_frames = as_long(clip_frames, torch.arange(F)[None])
    K = len(used)
    member = torch.zeros(F, K + 1, dtype=torch.bool, device=device)  # frame f holds a point with target row k
    member[torch.arange(F, device=device)[:, None].expand(F, N), target + 1] = True
    clip_member = member[:, 1:][clip_frames].any(1).float()  # [n, K]
    count = clip_member.sum(1, keepdim=True)
    subject = (clip_member @ flat[used].float()) / count.clamp_min(1)
    subject = torch.where(count > 0, subject, flat.float().mean(0))
    n = clip_frames.shape[0]
    return TargetRecord(points=points, target=target, frame=as_long(frame, torch.arange(F)),
                        features=projection(flat[used]).half(), cell=used, clip_frames=clip_frames,
                        clip_target=projection(subject), start=as_long(starts, torch.zeros(n, dtype=torch.int64)),
                        clip=as_long(clips, torch.zeros(n, dtype=torch.int64)), video=int(video), label=int(label),
                        nonfinite_points=int((~torch.isfinite(points).all(-1)).sum()))


def precompute_targets(
    clip_dataset: Sequence,
    teacher: Teacher,
    source: str,
    out: str | Path,
    d_p: int = 384,
    projection: str = "random",
    seed: int = 0,
    image_size: int = 126,
    splat_radius: int = 1,
    depth_tolerance: float = 0.05,
    shard_size: int = 64,
    pca_videos: int = 16,
    overwrite: bool = False,
    dataset_info: dict | None = None,
    progress: bool = False,
    views: RenderViews | None = None,
) -> dict:
    """Compute and cache the dense teacher targets of every clip, video by video.

    Each video's frames that some clip uses are sampled once (``ClipDataset.video_frames``),
    put in correspondence once (render: the video's virtual cameras, fitted to all those
    frames, so every clip of the video sees the same camera) and run through the teacher once;
    the clips index into them (:mod:`cross4d_core.targets.cache`).

    Args:
        clip_dataset: a ``cross4d_core.data.ClipDataset`` or any sequence of :class:`Clip`
            (one video each).
        teacher: a loaded frozen teacher (:func:`cross4d_core.teachers.load_teacher`).
        source: ``render`` (virtual camera, depth-shaded renders) or ``camera`` (the clip's
            images and cameras).
        out: cache directory; an unfinished cache with the same settings is resumed.
        d_p: projected feature size; projection: ``random`` (seeded) or ``pca`` (fitted on the
            patch features of the first ``pca_videos`` videos).
        image_size: render size (render mode); splat_radius: render splat half-size (pixels);
        views: render mode's virtual cameras (default: one, the sensor's own view);
        depth_tolerance: camera-mode occlusion tolerance (metres).
        shard_size: videos per atomically written shard (the resume granularity).
        dataset_info: extra fields for the manifest (e.g. dataset root, split).

    Returns:
        The manifest (also written to ``out/manifest.json``). Videos that cannot be put in
        correspondence are left out and each of their clips listed with the reason under
        ``dropped``; non-finite points are kept (invisible) and counted.
    """
    if source not in SOURCES:
        raise ValueError(f"precompute_targets: source {source!r} is not one of {SOURCES}")
    if projection not in ("random", "pca"):
        raise ValueError(f"precompute_targets: projection {projection!r} is not 'random' or 'pca'")
    videos = group_clips(clip_dataset)
    config = cache_config(teacher, source, d_p, projection, seed, image_size=image_size, splat_radius=splat_radius,
                          depth_tolerance=depth_tolerance, views=dataclasses.asdict(views or RenderViews()),
                          shard_size=shard_size, num_dataset_clips=len(clip_dataset), dataset=dataset_info or {})
    writer = TargetCacheWriter(out, config, overwrite=overwrite)

    def features_of(video: VideoClips) -> tuple[Clip, Correspondence, torch.Tensor]:
        clip = load_frames(clip_dataset, video)
        inputs, corr = correspond_clip(clip, teacher, source, image_size, splat_radius, depth_tolerance, views)
        return clip, corr, teacher_grids(teacher, inputs, clip.num_frames, corr)

    proj = writer.stored_projection()
    if proj is None and projection == "random":
        proj = FeatureProjection.random(teacher.feature_dim, d_p, seed)
    elif proj is None:
        samples = []
        for video in videos[:pca_videos]:
            try:
                samples.append(features_of(video)[-1].reshape(-1, teacher.feature_dim))
            except CorrespondenceError:
                continue
        if not samples:
            raise ValueError("precompute_targets: no video of the first pca_videos could be used to fit the PCA")
        proj = FeatureProjection.pca(torch.cat(samples).cpu(), d_p)
    writer.use_projection(proj)

    shards: Iterable[int] = range(math.ceil(len(videos) / shard_size))
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, desc="precompute", unit="shard")
    for shard in shards:
        if writer.shard_done(shard):
            continue
        records: list[TargetRecord] = []
        dropped: list[dict] = []
        for video in videos[shard * shard_size:(shard + 1) * shard_size]:
            try:
                clip, corr, feats = features_of(video)
            except CorrespondenceError as err:
                dropped.extend({"clip": int(c), "reason": str(err)} for c in video.clips)
                log.warning("precompute: video %d (%d clips) left out: %s", video.video, len(video.clips), err)
                continue
            records.append(target_record(clip.points, corr, feats, proj, video.clip_frames, frame=video.frames,
                                         video=video.video, label=-1 if clip.label is None else int(clip.label),
                                         starts=video.starts, clips=video.clips))
        writer.write_shard(shard, records, dropped)
    return writer.finalize()
