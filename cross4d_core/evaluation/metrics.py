"""Evaluation metrics: video-level accuracy, segmentation mIoU / mAcc / OA, correspondence accuracy."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VideoAccuracy:
    """Clip- and video-level accuracy (a video's score = sum of its clips' softmax)."""

    clip_accuracy: float
    video_accuracy: float
    num_clips: int
    num_videos: int
    video_ids: torch.Tensor
    """``[V]`` int64 ids of the evaluated videos (sorted)."""
    video_predictions: torch.Tensor
    """``[V]`` int64 predicted class per video."""
    video_labels: torch.Tensor
    """``[V]`` int64 true class per video."""


def video_level_accuracy(clip_probs: torch.Tensor, videos: torch.Tensor, labels: torch.Tensor) -> VideoAccuracy:
    """Accuracy of clip predictions and of per-video summed clip probabilities.

    Args:
        clip_probs: ``[M, K]`` class probabilities (softmax) of M clips.
        videos: ``[M]`` int64 video id of each clip.
        labels: ``[M]`` int64 class of each clip (all clips of a video share it).
    """
    if clip_probs.ndim != 2 or videos.shape != (clip_probs.shape[0],) or labels.shape != videos.shape:
        raise ValueError(f"expected clip_probs [M,K], videos [M], labels [M]; got {tuple(clip_probs.shape)}, "
                         f"{tuple(videos.shape)}, {tuple(labels.shape)}")
    if clip_probs.shape[0] == 0:
        raise ValueError("no clips to evaluate")
    video_ids, inverse = torch.unique(videos, return_inverse=True)
    scores = torch.zeros(len(video_ids), clip_probs.shape[1], dtype=torch.float64)
    scores.index_add_(0, inverse, clip_probs.double())
    video_labels = torch.full((len(video_ids),), -1, dtype=torch.int64).scatter_reduce(
        0, inverse, labels.long(), "amax", include_self=False)
    lowest = torch.full_like(video_labels, 2**62).scatter_reduce(0, inverse, labels.long(), "amin", include_self=False)
    inconsistent = video_ids[video_labels != lowest]
    if len(inconsistent):
        raise ValueError(f"videos {inconsistent[:10].tolist()} have clips with different labels")
    preds = scores.argmax(1)
    return VideoAccuracy(
        clip_accuracy=float((clip_probs.argmax(1) == labels).double().mean()),
        video_accuracy=float((preds == video_labels).double().mean()),
        num_clips=int(clip_probs.shape[0]), num_videos=len(video_ids),
        video_ids=video_ids, video_predictions=preds, video_labels=video_labels)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[K, K]`` int64 counts, rows = true class, columns = predicted class (negative targets ignored)."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = target >= 0
    if (target[keep] >= num_classes).any() or (pred[keep] < 0).any() or (pred[keep] >= num_classes).any():
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    flat = target[keep] * num_classes + pred[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU, mAcc and overall accuracy from a confusion matrix.

    IoU_k = TP / (TP + FP + FN), averaged over classes that occur in the ground truth or
    the predictions; per-class accuracy TP / |GT_k| over classes present in the ground truth.
    """
    c = confusion.double()
    tp = c.diag()
    gt = c.sum(1)
    pred = c.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = tp[present] / union[present]
    in_gt = gt > 0
    return {
        "miou": float(iou.mean()) if present.any() else float("nan"),
        "macc": float((tp[in_gt] / gt[in_gt]).mean()) if in_gt.any() else float("nan"),
        "overall_accuracy": float(tp.sum() / c.sum()) if c.sum() > 0 else float("nan"),
    }


def correspondence_accuracy(features: torch.Tensor, points: torch.Tensor, track: torch.Tensor,
                            gaps: tuple[int, ...] = (8, 15), threshold: float = 0.02,
                            chunk: int = 4) -> dict[int, tuple[int, int]]:
    """Temporal correspondence by nearest-feature matching (the paper's temporal-correspondence protocol).

    For every frame pair ``(t, t + g)`` and every point of frame t whose track id also
    occurs in frame t + g, the match is the point of frame t + g with the most similar
    feature (cosine similarity). It is correct when the matched point lies within
    ``threshold`` x the diagonal of frame t + g's bounding box of the true position (the
    first point of frame t + g carrying the same track id).

    Args:
        features: ``[T, N, C]`` per-point features of one clip.
        points: ``[T, N, 3]`` point positions, metres.
        track: ``[T, N]`` int64 ground-truth track ids (-1 = untracked).
        gaps: frame gaps to evaluate (gaps >= T are skipped).
    Returns:
        ``{gap: (correct, total)}`` counts.
    """
    T, N, _ = points.shape
    if features.shape[:2] != (T, N) or track.shape != (T, N):
        raise ValueError(f"features {tuple(features.shape)}, points {tuple(points.shape)} and track "
                         f"{tuple(track.shape)} must share [T, N]")
    feats = torch.nn.functional.normalize(features.float(), dim=-1)
    track = track.long()
    out: dict[int, tuple[int, int]] = {}
    for gap in gaps:
        correct = total = 0
        for s in range(0, max(0, T - gap), chunk):
            a = torch.arange(s, min(s + chunk, T - gap))
            b = a + gap
            match = torch.bmm(feats[a], feats[b].transpose(1, 2)).argmax(-1)           # [P, N]
            matched_pos = torch.gather(points[b], 1, match[..., None].expand(-1, -1, 3))
            # First index of each track id in the target frame (ids beyond N handled by a sort).
            tb = track[b]
            ids, inv = torch.unique(torch.cat([track[a], tb], 1), return_inverse=True)
            inv_a, inv_b = inv[:, :N], inv[:, N:]
            first = torch.full((len(a), len(ids)), N, dtype=torch.int64)
            first.scatter_reduce_(1, inv_b, torch.arange(N).expand(len(a), N), "amin", include_self=True)
            target_index = torch.gather(first, 1, inv_a)                                  # [P, N]
            valid = (track[a] >= 0) & (target_index < N)
            true_pos = torch.gather(points[b], 1, target_index.clamp(max=N - 1)[..., None].expand(-1, -1, 3))
            diag = (points[b].amax(1) - points[b].amin(1)).norm(dim=-1)                   # [P]
            ok = (matched_pos - true_pos).norm(dim=-1) <= threshold * diag[:, None]
            correct += int((ok & valid).sum())
            total += int(valid.sum())
        out[gap] = (correct, total)
    return out
