"""Label-efficient fine-tuning (the paper's label-efficiency protocol): stratified label subsets, light
augmentation, and a classification module trained by the shared :class:`Trainer`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class AugmentConfig:
    """Light fine-tuning augmentation, one transform per clip (same for all its frames)."""

    scale: tuple[float, float] = (0.9, 1.1)
    max_rotation_deg: float = 15.0
    """Rotation about ``rotation_axis`` through the clip centroid, uniform in +-this."""
    rotation_axis: str = "z"
    """The data's vertical axis: ``z`` for z-up data; ``y`` for camera-optical frames (y down)."""
    jitter_sigma: float = 0.01
    """Per-point Gaussian jitter, metres (clipped at 5 sigma)."""


def stratified_video_subset(labels: torch.Tensor, videos: torch.Tensor, fraction: float,
                            seed: int = 0) -> torch.Tensor:
    """Indices of the clips of a class-stratified, seeded subset of the labelled videos.

    Per class, ``max(1, floor(fraction * n_videos + 0.5))`` videos are kept, taken as a
    prefix of one seeded permutation, so smaller fractions are subsets of larger ones.
    Whole videos are kept (clips of one video never straddle the split).

    Args:
        labels: ``[M]`` int64 class of each clip.
        videos: ``[M]`` int64 video id of each clip.
    Returns:
        ``[M']`` int64 sorted clip indices.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    video_ids, inverse = torch.unique(videos, return_inverse=True)
    video_label = torch.zeros(len(video_ids), dtype=torch.int64).scatter_(0, inverse, labels.long())
    if (video_label < 0).any():
        raise ValueError(f"{int((video_label < 0).sum())} unlabelled videos in the fine-tuning split")
    gen = torch.Generator().manual_seed(seed)
    keep = torch.zeros(len(video_ids), dtype=torch.bool)
    for cls in torch.unique(video_label).tolist():
        members = torch.nonzero(video_label == cls).squeeze(1)
        k = max(1, math.floor(fraction * len(members) + 0.5))
        keep[members[torch.randperm(len(members), generator=gen)[:k]]] = True
    return torch.nonzero(keep[inverse]).squeeze(1)


def augment_clips(points: torch.Tensor, config: AugmentConfig,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random scale, z-rotation (about the clip centroid) and jitter of ``points [B,T,N,3]``."""
    B = points.shape[0]
    dev, dt = points.device, points.dtype

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(B, generator=generator)).to(dev, dt)

    scale = uniform(*config.scale)
    angle = uniform(-1.0, 1.0) * math.radians(config.max_rotation_deg)
    if config.rotation_axis not in ("x", "y", "z"):
        raise ValueError(f"AugmentConfig.rotation_axis must be 'x', 'y' or 'z', got {config.rotation_axis!r}")
    axis = "xyz".index(config.rotation_axis)
    i, j = [a for a in range(3) if a != axis]
    c, s = torch.cos(angle), torch.sin(angle)
    R = torch.eye(3, dtype=dt, device=dev).repeat(B, 1, 1)
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = c, -s, s, c
    R = R.reshape(B, 1, 3, 3)
    centre = points.mean(dim=(1, 2), keepdim=True)
    out = ((points - centre) @ R.transpose(-1, -2)) * scale.view(B, 1, 1, 1) + centre
    if config.jitter_sigma > 0:
        noise = torch.randn(points.shape, generator=generator).to(dev, dt) * config.jitter_sigma
        out = out + noise.clamp(-5 * config.jitter_sigma, 5 * config.jitter_sigma)
    return out


class ClassificationModule(nn.Module):
    """Encoder + linear head on the mean-pooled clip feature, trained with cross-entropy.

    ``forward(batch)`` takes ``points [B,T,N,3]`` and ``label [B]`` and returns
    ``(loss, {"accuracy": ...})``; augmentation is applied only in training mode.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int,
                 augment: AugmentConfig | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)
        self.augment = augment

    def logits(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(points).clip_feature)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        points = batch["points"]
        if self.training and self.augment is not None:
            points = augment_clips(points, self.augment)
        logits = self.logits(points).float()
        loss = F.cross_entropy(logits, batch["label"])
        return loss, {"accuracy": (logits.argmax(1) == batch["label"]).float().mean().detach()}
