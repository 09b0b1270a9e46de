"""Evaluation protocols: linear probe, label-efficient fine-tuning, transfer, per-point probes."""
from cross4d_core.evaluation.features import ClipFeatures, clip_labels_and_videos, extract_clip_features
from cross4d_core.evaluation.finetune import (
    AugmentConfig,
    ClassificationModule,
    augment_clips,
    stratified_video_subset,
)
from cross4d_core.evaluation.metrics import (
    VideoAccuracy,
    confusion_matrix,
    correspondence_accuracy,
    segmentation_metrics,
    video_level_accuracy,
)
from cross4d_core.evaluation.probe import (
    PaperProbeConfig,
    ProbeConfig,
    ProbeFit,
    evaluate_classifier,
    fit_linear_probe,
    fit_paper_probe,
)
from cross4d_core.evaluation.segmentation import SegmentConfig, run_segmentation_probe

__all__ = [
    "AugmentConfig", "ClassificationModule", "ClipFeatures", "PaperProbeConfig", "ProbeConfig", "ProbeFit",
    "SegmentConfig", "VideoAccuracy",
    "augment_clips", "clip_labels_and_videos", "confusion_matrix", "correspondence_accuracy", "evaluate_classifier",
    "extract_clip_features", "fit_linear_probe", "fit_paper_probe", "run_segmentation_probe",
    "segmentation_metrics", "stratified_video_subset",
    "video_level_accuracy",
]
