"""Linear probe on mean-pooled frozen features (METHOD.md protocol 1; also used for transfer)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cross4d_core.evaluation.metrics import VideoAccuracy, video_level_accuracy


@dataclass
class ProbeConfig:
    """Linear-probe optimisation (the paper fixes 300 epochs and no standardisation only)."""

    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    seed: int = 0


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       config: ProbeConfig = ProbeConfig(), device: torch.device | str = "cpu") -> nn.Linear:
    """Fit ``nn.Linear(C, num_classes)`` with AdamW + cosine on raw (unstandardised) features.

    Args:
        features: ``[M, C]`` float clip features.
        labels: ``[M]`` int64 in ``[0, num_classes)``.
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"expected features [M,C] and labels [M], got {tuple(features.shape)}, {tuple(labels.shape)}")
    if features.shape[0] == 0 or config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"linear probe would train nothing: {features.shape[0]} clips, "
                         f"probe.epochs={config.epochs}, probe.batch_size={config.batch_size} (each must be >= 1)")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} training labels outside [0, {num_classes}) "
                         f"(e.g. {labels[bad][:5].tolist()}); unlabelled clips cannot train a probe")
    device = torch.device(device)
    x, y = features.float().to(device), labels.long().to(device)
    gen = torch.Generator().manual_seed(config.seed)
    head = nn.Linear(x.shape[1], num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * (1.0 / math.sqrt(x.shape[1])))
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs * steps_per_epoch))
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        for idx in order.split(config.batch_size):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def evaluate_classifier(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                        videos: torch.Tensor) -> VideoAccuracy:
    """Clip and video accuracy of ``head`` on precomputed features."""
    device = next(head.parameters()).device
    probs = torch.softmax(head(features.float().to(device)).float(), dim=1).cpu()
    return video_level_accuracy(probs, videos, labels)
