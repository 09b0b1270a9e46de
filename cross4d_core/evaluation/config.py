"""Run configurations of the evaluation commands (YAML shipped in :mod:`cross4d_core.configs`, ``--set`` overrides)."""
from __future__ import annotations

from dataclasses import dataclass, field

from cross4d_core.evaluation.finetune import AugmentConfig
from cross4d_core.evaluation.probe import ProbeConfig
from cross4d_core.evaluation.robustness import RobustnessConfig
from cross4d_core.evaluation.segmentation import SegmentConfig
from cross4d_core.training.config import DataConfig, OptimConfig


@dataclass
class ClipDataConfig:
    """Clips for evaluation; ``frames`` / ``num_points`` default to the encoder's config."""

    train_split: str | None = "train"
    test_split: str | None = "test"
    frames: int | None = None
    frame_step: int = 1
    clip_stride: int = 1
    num_points: int | None = None
    short_video: str = "pad"
    """``pad`` (repeat the last frame) or ``report`` (left out and listed in the results)."""
    seed: int = 0
    batch_size: int = 16
    """Feature-extraction batch size."""
    verify: str = "checksum"
    """Dataset file check on first access of each video: ``checksum`` (SHA-256 against
    meta.json, as ``cross4d data info --verify checksum``), ``size`` or ``none``."""
    num_workers: int = 0


@dataclass
class ProbeRunConfig:
    """``cross4d probe`` / ``cross4d transfer``."""

    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    device: str = "auto"
    amp: bool = True


@dataclass
class FinetuneRunConfig:
    """``cross4d finetune``: every (init, label fraction) pair is one resumable training run."""

    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    inits: list[str] = field(default_factory=lambda: ["pretrained", "scratch"])
    subset_seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=1e-4))
    epochs: int = 50
    batch_size: int = 16
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    progress: bool = True


@dataclass
class SegmentRunConfig:
    """``cross4d segment``: per-point part probe and temporal correspondence."""

    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    device: str = "auto"
    amp: bool = True


@dataclass
class RobustnessRunConfig:
    """``cross4d robustness``: converged probe on clean features, test-time perturbations."""

    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(paper=None))
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    device: str = "auto"
    amp: bool = True


def finetune_train_config(run: FinetuneRunConfig, out_dir: str):
    """The :class:`TrainConfig` of one fine-tuning run."""
    from cross4d_core.training.config import TrainConfig

    return TrainConfig(out_dir=out_dir, optim=run.optim, epochs=run.epochs, max_steps=run.max_steps,
                       seed=run.seed, device=run.device, amp=run.amp, progress=run.progress,
                       data=DataConfig(source="clips", batch_size=run.batch_size,
                                       num_workers=run.data.num_workers))
