"""Frozen-encoder feature extraction (computed once, then reused by the probes)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset


@dataclass
class ClipFeatures:
    """Mean-pooled clip features of a dataset.

    Attributes:
        features: ``[M, C]`` float32 clip features.
        labels: ``[M]`` int64 class per clip (-1 when unlabelled).
        videos: ``[M]`` int64 video id per clip.
    """

    features: torch.Tensor
    labels: torch.Tensor
    videos: torch.Tensor


@torch.no_grad()
def extract_clip_features(encoder: nn.Module, dataset: Dataset, *, batch_size: int = 16,
                          device: torch.device | str = "cpu", amp: bool = True, num_workers: int = 0,
                          transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ClipFeatures:
    """Run the frozen ``encoder`` over every item (``points [T,N,3]``, ``label``, ``video``);
    ``transform`` maps each batch's ``points [B, T, N, 3]`` first (a test-time perturbation)."""
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    feats, labels, videos = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        points = batch["points"] if transform is None else transform(batch["points"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            out = encoder(points.to(device))
        feats.append(out.clip_feature.float().cpu())
        labels.append(batch["label"].long())
        videos.append(batch["video"].long())
    if not feats:
        raise ValueError("dataset is empty: no clips to extract features from")
    return ClipFeatures(torch.cat(feats), torch.cat(labels), torch.cat(videos))


def clip_labels_and_videos(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``([M] labels, [M] videos)`` of a clip dataset (``ClipDataset.clip_labels`` /
    ``clip_videos`` when available, else one pass over its items)."""
    if isinstance(dataset, Subset):
        labels, videos = clip_labels_and_videos(dataset.dataset)
        index = torch.as_tensor(dataset.indices, dtype=torch.int64)
        return labels[index], videos[index]
    if hasattr(dataset, "clip_labels") and hasattr(dataset, "clip_videos"):
        return (torch.as_tensor(dataset.clip_labels, dtype=torch.int64),
                torch.as_tensor(dataset.clip_videos, dtype=torch.int64))
    label_batches: list[torch.Tensor] = []
    video_batches: list[torch.Tensor] = []
    for batch in DataLoader(dataset, batch_size=64, shuffle=False):
        label_batches.append(batch["label"].long())
        video_batches.append(batch["video"].long())
    return torch.cat(label_batches), torch.cat(video_batches)
