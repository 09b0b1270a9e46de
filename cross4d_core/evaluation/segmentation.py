"""Per-point probes on frozen per-point features: part segmentation (the paper's per-point protocol)
and temporal correspondence (protocol 5), both over clips with ground-truth ``part`` /
``track`` arrays (``ClipDataset.get_clip``)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cross4d_core.evaluation.metrics import confusion_matrix, correspondence_accuracy, segmentation_metrics
from cross4d_core.evaluation.probe import PaperProbeConfig, ProbeConfig, fit_linear_probe, fit_paper_probe
from cross4d_core.types import Clip

if TYPE_CHECKING:
    from cross4d_core.models.point4d import Point4DEncoder


@dataclass
class SegmentConfig:
    """Per-point probe settings."""

    points_per_clip: int = 256
    """Training points sampled (seeded) per clip for the per-point linear head (bounds memory:
    the training features are held as ``clips x points_per_clip x C`` float32)."""
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(
        paper=PaperProbeConfig(epochs=30, lr=1e-3, batch_size=4096)))
    """The converged per-point probe (L2 by CV grouped by video); ``probe.paper`` is the
    fixed-budget AdamW head fitted beside it for comparison (``null`` to skip)."""
    batch_size: int = 8
    correspondence_gaps: tuple[int, ...] = (8, 15)
    correspondence_threshold: float = 0.02


def iter_clips(dataset, batch_size: int) -> Iterator[tuple[list[Clip], list[int]]]:
    """Batches of ``(clips, video ids)``: :class:`Clip` from ``dataset.get_clip(i)`` and the
    clip's video (``dataset.clip_videos``; the clip index when the dataset has no videos)."""
    videos = getattr(dataset, "clip_videos", None)
    for start in range(0, len(dataset), batch_size):
        index = range(start, min(start + batch_size, len(dataset)))
        yield [dataset.get_clip(i) for i in index], [int(videos[i]) if videos is not None else i for i in index]


@torch.no_grad()
def point_features(encoder: Point4DEncoder, clips: list[Clip], device: torch.device, amp: bool = True) -> torch.Tensor:
    """``[B, T, N, C]`` float32 frozen per-point features of equally sized clips."""
    points = torch.from_numpy(np.stack([c.points for c in clips])).float().to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        out = encoder(points)
        feats = encoder.point_features(out, points)
    return feats.float()


def _parts(clips: list[Clip]) -> torch.Tensor | None:
    if any(c.part is None for c in clips):
        return None
    return torch.stack([torch.as_tensor(c.part, dtype=torch.int64) for c in clips])


def run_segmentation_probe(encoder: Point4DEncoder, train_set, test_set, num_parts: int | None = None,
                           config: SegmentConfig | None = None, device: torch.device | str = "cpu",
                           amp: bool = True) -> tuple[dict, nn.Linear | None]:
    """Fit a per-point linear head on frozen features of ``train_set``; score ``test_set``.

    Returns ``(results, head)``: results hold the converged probe's ``miou``, ``macc``,
    ``overall_accuracy`` and its fit (``probe``: L2, iterations, gradient norm, converged,
    train accuracy) when clips carry parts, the paper-recipe head beside it
    (``paper_probe``, with its own ``test`` metrics), and ``correspondence`` accuracy per
    gap when clips carry tracks. ``head`` is the converged probe's.
    """
    config = SegmentConfig() if config is None else config
    device = torch.device(device)
    encoder = encoder.to(device).eval()
    gen = torch.Generator().manual_seed(config.probe.seed)
    xs, ys, gs = [], [], []
    for clips, videos in iter_clips(train_set, config.batch_size):
        parts = _parts(clips)
        if parts is None:
            continue
        feats = point_features(encoder, clips, device, amp).cpu()
        B, T, N, C = feats.shape
        k = min(config.points_per_clip, T * N)
        pick = torch.argsort(torch.rand(B, T * N, generator=gen), dim=1)[:, :k]
        xs.append(torch.gather(feats.reshape(B, T * N, C), 1, pick[..., None].expand(-1, -1, C)).reshape(-1, C))
        ys.append(torch.gather(parts.reshape(B, T * N), 1, pick).reshape(-1))
        gs.append(torch.as_tensor(videos).repeat_interleave(k))
    heads: dict[str, nn.Linear] = {}
    results: dict = {}
    if xs:
        x, y, g = torch.cat(xs), torch.cat(ys), torch.cat(gs)
        keep = y >= 0
        num_parts = num_parts or int(y.max()) + 1
        fits = {"probe": fit_linear_probe(x[keep], y[keep], num_parts, config.probe, groups=g[keep], device=device)}
        if config.probe.paper is not None:
            fits["paper_probe"] = fit_paper_probe(x[keep], y[keep], num_parts, config.probe.paper,
                                                  config.probe.seed, config.probe.tolerance, device)
        for name, fit in fits.items():
            heads[name] = fit.head.to(device)
            results[name] = {**fit.summary(), "train_points": int(keep.sum())}
    confusion: dict[str, torch.Tensor] = {}
    corr = {g: [0, 0] for g in config.correspondence_gaps}
    has_tracks = False
    for clips, _ in iter_clips(test_set, config.batch_size):
        feats = point_features(encoder, clips, device, amp)
        parts = _parts(clips)
        if parts is not None:
            for name, head in heads.items():
                assert num_parts is not None  # set where the heads were fitted
                with torch.no_grad():
                    cm = confusion_matrix(head(feats).argmax(-1).cpu(), parts, num_parts)
                confusion[name] = confusion[name] + cm if name in confusion else cm
        for clip, f in zip(clips, feats.cpu()):
            if clip.track is None:
                continue
            has_tracks = True
            counts = correspondence_accuracy(f, torch.from_numpy(clip.points).float(), torch.as_tensor(clip.track),
                                             config.correspondence_gaps, config.correspondence_threshold)
            for gap, (c, t) in counts.items():
                corr[gap][0] += c
                corr[gap][1] += t
    if "probe" in confusion:  # the converged probe's metrics are the result; the paper head's sit beside
        results.update(segmentation_metrics(confusion["probe"]))
        results["num_parts"] = num_parts
        results["confusion"] = confusion["probe"].tolist()
    if "paper_probe" in confusion:
        results["paper_probe"]["test"] = segmentation_metrics(confusion["paper_probe"])
    if has_tracks:
        results["correspondence"] = {str(g): {"accuracy": c / t if t else None, "correct": c, "total": t}
                                     for g, (c, t) in corr.items()}
        results["correspondence_threshold"] = config.correspondence_threshold
    return results, heads.get("probe")
