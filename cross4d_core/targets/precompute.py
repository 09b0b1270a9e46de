"""``precompute_targets``: correspondence + frozen teacher + projection -> target cache.

The teacher runs once per clip here and never during training.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cross4d_core.correspondence import CorrespondenceError, RenderViews, camera_correspondence, render_clip
from cross4d_core.targets.cache import TargetCacheWriter
from cross4d_core.targets.projection import FeatureProjection
from cross4d_core.teachers.base import Teacher
from cross4d_core.types import Clip, Correspondence

log = logging.getLogger(__name__)

SOURCES = ("render", "camera")


def _clip_at(dataset, index: int) -> tuple[Clip, int, int]:
    """``(clip, video, start)`` from a ``ClipDataset`` (``get_clip`` + its clip table, or the
    item's ``video`` / ``start``) or from a plain sequence of :class:`Clip` (video = index, start = 0)."""
    if hasattr(dataset, "get_clip"):
        if hasattr(dataset, "clip_videos") and hasattr(dataset, "clip_starts"):
            video, start = dataset.clip_videos[index], dataset.clip_starts[index]
        else:
            item = dataset[index]
            video, start = item["video"], item["start"]
        return dataset.get_clip(index), int(video), int(start)
    clip = dataset[index]
    if not isinstance(clip, Clip):
        raise TypeError(f"precompute_targets: dataset item {index} is a {type(clip).__name__}, expected a Clip")
    return clip, index, 0


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
            return out.label_images(teacher.point_labels(clip.points, clip.part)), out.correspondence
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


def subject_mean(feats: torch.Tensor, corr: Correspondence) -> torch.Tensor:
    """``[C]`` mean teacher feature over the (slot, patch) cells that hold a visible point:
    the clip-level target of the ``global`` baseline. Pooling over the subject's cells, not
    over every patch, keeps the background (most of the image) from making every clip's
    target the same; a clip with no visible point falls back to the mean of all cells."""
    flat = feats.reshape(-1, feats.shape[-1])
    cells = (corr.slot * (feats.shape[1] * feats.shape[2]) + corr.patch)[corr.visible]
    if cells.numel() == 0:
        return flat.mean(0)
    return flat[torch.unique(cells)].mean(0)


def target_record(points: np.ndarray, corr: Correspondence, feats: torch.Tensor, projection: FeatureProjection,
                  **fields) -> dict:
    """One clip's entry of a target cache: ``points [T, N, 3]``, its correspondence and teacher
    features ``[S, hp, wp, C]``, projected (the arrays of
    :data:`~cross4d_core.targets.cache.ARRAY_FIELDS`; ``fields`` gives label / video / start / clip)."""
    projected = projection(feats)  # [S, hp, wp, d_p]
    return {
        "points": np.asarray(points, dtype=np.float32),
        "slot": corr.slot.cpu().numpy(),
        "patch": corr.patch.cpu().numpy(),
        "visible": corr.visible.cpu().numpy(),
        "grids": projected.reshape(projected.shape[0], -1, projected.shape[-1]).cpu().numpy(),
        "clip_target": projection(subject_mean(feats, corr)).cpu().numpy(),
        **fields,
    }


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
    pca_clips: int = 16,
    overwrite: bool = False,
    dataset_info: dict | None = None,
    progress: bool = False,
    views: RenderViews | None = None,
) -> dict:
    """Compute and cache the dense teacher targets of every clip.

    Args:
        clip_dataset: a ``cross4d_core.data.ClipDataset`` or any sequence of :class:`Clip`.
        teacher: a loaded frozen teacher (:func:`cross4d_core.teachers.load_teacher`).
        source: ``render`` (virtual camera, depth-shaded renders) or ``camera`` (the clip's
            images and cameras).
        out: cache directory; an unfinished cache with the same settings is resumed.
        d_p: projected feature size; projection: ``random`` (seeded) or ``pca`` (fitted on the
            patch features of the first ``pca_clips`` clips).
        image_size: render size (render mode); splat_radius: render splat half-size (pixels);
        views: render mode's virtual cameras (default: one, the sensor's own view);
        depth_tolerance: camera-mode occlusion tolerance (metres).
        shard_size: clips per atomically written shard (the resume granularity).
        dataset_info: extra fields for the manifest (e.g. dataset root, split).

    Returns:
        The manifest (also written to ``out/manifest.json``). Clips that cannot be put in
        correspondence are left out and listed with the reason under ``dropped``;
        non-finite points are kept (invisible) and counted.
    """
    if source not in SOURCES:
        raise ValueError(f"precompute_targets: source {source!r} is not one of {SOURCES}")
    if projection not in ("random", "pca"):
        raise ValueError(f"precompute_targets: projection {projection!r} is not 'random' or 'pca'")
    num_clips = len(clip_dataset)
    config = {
        "teacher": {"name": teacher.name, "class": type(teacher).__name__, "patch_size": teacher.patch_size,
                    "tubelet": teacher.tubelet, "feature_dim": teacher.feature_dim},
        "source": source, "d_p": d_p, "projection": {"kind": projection, "seed": seed},
        "image_size": image_size if source == "render" else None, "splat_radius": splat_radius,
        "depth_tolerance": depth_tolerance if source == "camera" else None, "shard_size": shard_size,
        "num_dataset_clips": num_clips, "dataset": dataset_info or {},
    }
    if source == "render":
        config["views"] = dataclasses.asdict(views or RenderViews())
    writer = TargetCacheWriter(out, config, overwrite=overwrite)

    def features_of(index: int):
        clip, video, start = _clip_at(clip_dataset, index)
        inputs, corr = correspond_clip(clip, teacher, source, image_size, splat_radius, depth_tolerance, views)
        return clip, video, start, corr, teacher_grids(teacher, inputs, clip.num_frames, corr)

    if writer.projection_path.exists():
        proj = FeatureProjection.load(writer.projection_path)
    elif projection == "random":
        proj = FeatureProjection.random(teacher.feature_dim, d_p, seed)
    else:
        samples = []
        for index in range(min(pca_clips, num_clips)):
            try:
                samples.append(features_of(index)[-1].reshape(-1, teacher.feature_dim))
            except CorrespondenceError:
                continue
        if not samples:
            raise ValueError("precompute_targets: no clip of the first pca_clips could be used to fit the PCA")
        proj = FeatureProjection.pca(torch.cat(samples).cpu(), d_p)
    if not writer.projection_path.exists():
        proj.save(writer.projection_path)

    shards = range(math.ceil(num_clips / shard_size))
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, desc="precompute", unit="shard")
    for shard in shards:
        if writer.shard_done(shard):
            continue
        records, dropped, nonfinite = [], [], 0
        for index in range(shard * shard_size, min(num_clips, (shard + 1) * shard_size)):
            try:
                clip, video, start, corr, feats = features_of(index)
            except CorrespondenceError as err:
                dropped.append({"clip": index, "reason": str(err)})
                log.warning("precompute: clip %d left out: %s", index, err)
                continue
            nonfinite += int((~np.isfinite(np.asarray(clip.points)).all(-1)).sum())
            records.append(target_record(clip.points, corr, feats, proj, label=-1 if clip.label is None else int(clip.label),
                                         video=video, start=start, clip=index))
        writer.write_shard(shard, records, dropped, nonfinite)
    return writer.finalize()
