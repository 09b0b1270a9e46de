"""Evaluation protocols end to end on datasets: linear probe / transfer and label-efficient
fine-tuning (the paper's clip-level protocols: linear probe, label efficiency, full
fine-tuning). Results are JSON-serialisable dicts."""
from __future__ import annotations

from collections.abc import Callable, Sized
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from cross4d_core.evaluation.config import FinetuneRunConfig, finetune_train_config
from cross4d_core.evaluation.features import clip_labels_and_videos, extract_clip_features
from cross4d_core.evaluation.finetune import ClassificationModule, stratified_video_subset
from cross4d_core.evaluation.metrics import VideoAccuracy
from cross4d_core.evaluation.probe import ProbeConfig, ProbeFit, evaluate_classifier, fit_linear_probe, fit_paper_probe


def dataset_report(dataset: Dataset) -> dict:
    """Clip / video counts of a clip dataset, with the short and empty videos it reported."""
    assert isinstance(dataset, Sized)  # a map-style clip dataset
    videos = torch.unique(clip_labels_and_videos(dataset)[1]) if len(dataset) else torch.zeros(0)
    return {
        "clips": len(dataset),
        "videos_with_clips": int(len(videos)),
        "videos_selected": getattr(dataset, "num_videos", None),
        "short_videos": list(getattr(dataset, "short_videos", [])),
        "short_video_policy": getattr(dataset, "short_video", None),
        "empty_videos": list(getattr(dataset, "empty_videos", [])),
    }


def accuracy_report(acc: VideoAccuracy) -> dict:
    return {"clip_accuracy": acc.clip_accuracy, "video_accuracy": acc.video_accuracy,
            "clips": acc.num_clips, "videos": acc.num_videos}


def probe_report(fit: ProbeFit, train, test) -> dict:
    """A fitted probe's description with its train and test accuracy (:class:`ClipFeatures`)."""
    return {**fit.summary(),
            "train": accuracy_report(evaluate_classifier(fit.head, train.features, train.labels, train.videos)),
            "test": accuracy_report(evaluate_classifier(fit.head, test.features, test.labels, test.videos))}


def run_linear_probe(encoder: nn.Module, train_set: Dataset, test_set: Dataset, num_classes: int,
                     config: ProbeConfig | None = None, *, device: torch.device | str = "cpu",
                     amp: bool = True, batch_size: int = 16) -> tuple[dict, nn.Linear]:
    """Frozen features once -> converged linear probe on ``train_set`` (L2 by CV grouped by
    video) -> clip / video accuracy on ``test_set``; the paper-recipe probe on the same
    features beside it (``results["paper_probe"]``) unless ``config.paper`` is None.

    Returns ``(results, head)``; ``head`` (on raw features) is the converged probe's.
    """
    config = ProbeConfig() if config is None else config
    train = extract_clip_features(encoder, train_set, batch_size=batch_size, device=device, amp=amp)
    test = extract_clip_features(encoder, test_set, batch_size=batch_size, device=device, amp=amp)
    fit = fit_linear_probe(train.features, train.labels, num_classes, config, groups=train.videos, device=device)
    report = probe_report(fit, train, test)
    results = {
        "test": report.pop("test"), "train": report.pop("train"), "probe": report,
        "feature_dim": int(train.features.shape[1]),
        "train_data": dataset_report(train_set), "test_data": dataset_report(test_set),
    }
    if config.paper is not None:
        paper = fit_paper_probe(train.features, train.labels, num_classes, config.paper, config.seed,
                                config.tolerance, device)
        results["paper_probe"] = probe_report(paper, train, test)
    return results, fit.head.cpu()


def run_finetune(make_encoder: Callable[[str], nn.Module], feature_dim: int, train_set: Dataset,
                 test_set: Dataset, num_classes: int, config: FinetuneRunConfig, out_dir: str | Path,
                 resume: bool = False) -> dict:
    """Fine-tune ``make_encoder(init)`` for every (init, label fraction) pair; score on ``test_set``.

    Each pair trains in ``out_dir/<init>_<fraction>/`` with the shared :class:`Trainer`
    (resumable); the label subsets are class-stratified over videos and nested.
    """
    from cross4d_core.training.trainer import Trainer

    labels, videos = clip_labels_and_videos(train_set)
    results: dict = {"runs": {}, "test_data": dataset_report(test_set)}
    for fraction in config.fractions:
        indices = stratified_video_subset(labels, videos, fraction, config.subset_seed)
        subset = Subset(train_set, indices.tolist())
        for init in config.inits:
            run_dir = Path(out_dir) / f"{init}_{fraction:g}"
            torch.manual_seed(config.seed)
            module = ClassificationModule(make_encoder(init), feature_dim, num_classes, config.augment)
            trainer = Trainer(finetune_train_config(config, str(run_dir)), module, subset)
            fit = trainer.fit(resume=resume)
            entry = {"fraction": fraction, "init": init, "train_clips": len(indices),
                     "train_videos": int(len(torch.unique(videos[indices]))), "steps": fit.step,
                     "final_loss": fit.step_losses[-1] if fit.step_losses else None}
            if trainer.dist.is_main:
                module.eval()
                test = extract_clip_features(module.encoder, test_set, batch_size=config.data.batch_size,
                                             device=trainer.device, amp=config.amp)
                entry["test"] = accuracy_report(evaluate_classifier(module.head, test.features, test.labels,
                                                                    test.videos))
            results["runs"][f"{init}_{fraction:g}"] = entry
    return results
