"""Loss terms of the distillation objectives (arXiv 2607.00514: token matching and loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def variance_penalty(predictions: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance term ``mean_k ReLU(1 - sqrt(Var(yhat_k) + eps))`` over rows of ``[n, d]``.

    Needs two rows for a variance; with fewer it is 0 (still attached to the graph).
    """
    if predictions.shape[0] < 2:
        return predictions.sum() * 0.0
    std = torch.sqrt(predictions.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def cosine_distillation_loss(predictions: torch.Tensor, targets: torch.Tensor, supervised: torch.Tensor,
                             variance_weight: float = 1.0, variance_eps: float = 1e-4
                             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over supervised rows of ``1 - cos(pred, stopgrad(target))`` + ``variance_weight`` x variance term.

    Args:
        predictions: ``[..., d]`` head outputs.
        targets: ``[..., d]`` teacher targets (no gradient flows into them). Rows that are
            not supervised are never read arithmetically, so they may hold anything (NaN too).
        supervised: ``[...]`` bool; the variance term is taken over the supervised rows.

    Returns ``(loss, metrics)`` with detached scalars ``cosine`` (mean over supervised rows),
    ``supervised`` (row count) and ``variance`` (the unweighted variance term).
    """
    if predictions.shape != targets.shape or predictions.shape[:-1] != supervised.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)}, targets {tuple(targets.shape)} and "
                         f"supervised {tuple(supervised.shape)} must agree")
    supervised = supervised.bool()
    pred = predictions[supervised].float()
    target = targets[supervised].detach().float()
    variance = variance_penalty(pred, variance_eps)
    if pred.shape[0] == 0:
        cosine = predictions.sum() * 0.0
        loss = cosine + variance
    else:
        cosine = F.cosine_similarity(pred, target, dim=-1, eps=1e-8).mean()
        loss = (1.0 - cosine) + variance_weight * variance
    metrics = {"cosine": cosine.detach(), "supervised": supervised.sum().detach().float(),
               "variance": variance.detach()}
    return loss, metrics
