"""Robustness protocol (the paper's Table 13): a linear probe fitted on clean frozen
features, evaluated on test clips under test-time perturbations.

* temporal subsampling: keep a fraction of each clip's frames, evenly spaced (24 / 18 /
  12 / 6 of 24 frames for the paper's clips);
* point dropout: keep a fraction of each frame's points (a seeded random subset);
* coordinate jitter: i.i.d. Gaussian noise of ``sigma`` metres on every coordinate.

The perturbations are seeded per batch, so a run is reproducible.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from cross4d_core.evaluation.features import extract_clip_features
from cross4d_core.evaluation.probe import ProbeConfig, evaluate_classifier, fit_linear_probe


@dataclass
class RobustnessConfig:
    """Perturbation grids (the clean setting is the first entry of each)."""

    frame_fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    point_fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    jitter_sigmas: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05)
    """metres."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("frame_fractions", "point_fractions"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or not all(0.0 < v <= 1.0 for v in values):
                raise ValueError(f"RobustnessConfig.{name} must be fractions in (0, 1], got {values}")
            setattr(self, name, values)
        self.jitter_sigmas = tuple(float(v) for v in self.jitter_sigmas)
        if not self.jitter_sigmas or min(self.jitter_sigmas) < 0:
            raise ValueError(f"RobustnessConfig.jitter_sigmas must be >= 0, got {self.jitter_sigmas}")


def subsample_frames(points: torch.Tensor, fraction: float) -> torch.Tensor:
    """``[B, T, N, 3] -> [B, T', N, 3]``: ``T' = max(1, round(fraction T))`` evenly spaced frames."""
    T = points.shape[1]
    keep = max(1, round(fraction * T))
    index = torch.linspace(0, T - 1, keep).round().long()
    return points[:, index]


def drop_points(points: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """``[B, T, N, 3] -> [B, T, N', 3]``: a random ``N' = max(1, round(fraction N))`` of each frame's points."""
    B, T, N, _ = points.shape
    keep = max(1, round(fraction * N))
    index = torch.rand(B, T, N, generator=generator).argsort(-1)[..., :keep]
    return points.gather(2, index[..., None].expand(-1, -1, -1, 3))


def jitter(points: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``points`` plus i.i.d. ``N(0, sigma^2)`` noise (metres)."""
    return points + sigma * torch.randn(points.shape, generator=generator).to(points)


def perturbations(config: RobustnessConfig) -> list[tuple[str, float]]:
    """Every ``(kind, value)`` setting of the protocol."""
    return ([("frames", v) for v in config.frame_fractions] + [("points", v) for v in config.point_fractions]
            + [("jitter", v) for v in config.jitter_sigmas])


def run_robustness(encoder: nn.Module, train_set: Dataset, test_set: Dataset, num_classes: int,
                   config: RobustnessConfig | None = None, probe: ProbeConfig | None = None, *,
                   device: torch.device | str = "cpu", amp: bool = True, batch_size: int = 16) -> dict:
    """Fit the converged probe on clean train features; score test clips per perturbation.

    Returns ``{"probe": fit summary, "clean_train": accuracy, "results": [{"kind", "value",
    "frames" | "points", "video_accuracy", "clip_accuracy"}]}``.
    """
    config = RobustnessConfig() if config is None else config
    probe = ProbeConfig(paper=None) if probe is None else probe
    encoder = encoder.to(device).eval()
    extract = functools.partial(extract_clip_features, encoder, batch_size=batch_size, device=device, amp=amp)
    train = extract(train_set)
    fit = fit_linear_probe(train.features, train.labels, num_classes, probe, groups=train.videos, device=device)
    rows = []
    for kind, value in perturbations(config):
        generator = torch.Generator().manual_seed(config.seed)
        shape: dict = {}

        def transform(points: torch.Tensor, kind=kind, value=value, generator=generator, shape=shape) -> torch.Tensor:
            if kind == "frames":
                points = subsample_frames(points, value)
            elif kind == "points":
                points = drop_points(points, value, generator)
            elif value > 0:
                points = jitter(points, value, generator)
            shape["frames"], shape["points"] = int(points.shape[1]), int(points.shape[2])
            return points

        test = extract(test_set, transform=transform)
        acc = evaluate_classifier(fit.head, test.features, test.labels, test.videos)
        rows.append({"kind": kind, "value": value, **shape, "video_accuracy": acc.video_accuracy,
                     "clip_accuracy": acc.clip_accuracy})
    clean = evaluate_classifier(fit.head, train.features, train.labels, train.videos)
    return {"probe": fit.summary(), "clean_train": {"video_accuracy": clean.video_accuracy,
                                                    "clip_accuracy": clean.clip_accuracy}, "results": rows}
