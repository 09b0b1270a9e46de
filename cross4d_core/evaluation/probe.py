"""Linear probes on frozen features: a converged multinomial logistic regression (the default)
and the paper's stated recipe, side by side.

A probe is a measuring instrument, so the default one is fitted to convergence and its
result does not depend on the feature scale or on a step budget:

* features are centred and divided by ONE scalar (the root-mean-square of the centred
  training features). That is not standardisation: every direction keeps its relative
  scale, so the probe sees the features' geometry as the paper's "no standardisation"
  asks; it only makes the L2 strength mean the same thing for every encoder, and a
  feature scale factor cancels exactly. (Per-dimension standardisation is an option.)
* the loss ``mean cross-entropy + l2 / 2 * ||W||^2`` (bias not penalised) is minimised by
  full-batch L-BFGS (strong-Wolfe line search, float64) until the gradient's largest
  entry is below ``tolerance``; the fit records its iterations, final gradient norm and
  whether it converged;
* ``l2`` is chosen from ``l2_grid`` by k-fold cross-validation on the training split with
  folds grouped by video (clips of one video are never split between folds; classes are
  dealt evenly over folds when every video has one label).

Why L-BFGS in torch rather than scikit-learn: the probe runs on the encoder's device next
to feature extraction, needs no extra run-time dependency, and exposes its convergence
state; the tests check it against scikit-learn's ``LogisticRegression`` on the loss.

The paper's protocol ("300 epochs, no feature standardisation"; optimiser, lr and batch
unstated) is :class:`PaperProbeConfig`: AdamW, lr 1e-3, no weight decay, batch 256, cosine
decay, on the raw features. Its result depends on the feature scale and the step budget;
it is reported beside the converged probe, never instead of it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from cross4d_core.evaluation.metrics import VideoAccuracy, video_level_accuracy

log = logging.getLogger(__name__)

PROBE_METHODS = ("lbfgs", "paper")


@dataclass
class PaperProbeConfig:
    """The paper's linear-probe recipe (300 epochs, raw features); the optimiser settings are ours."""

    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    optimizer: str = "AdamW, cosine decay to 0, no warm-up"
    """Written into the results (the paper does not state it); not a setting."""


@dataclass
class ProbeConfig:
    """The converged linear probe.

    Attributes:
        l2_grid: candidate L2 strengths (on the scale-normalised features), chosen by CV.
        cv_folds: folds of the grouped cross-validation (fewer when there are fewer videos).
        max_iter: L-BFGS iteration budget per fit.
        tolerance: convergence threshold on the largest gradient entry of the mean loss.
        standardize: standardise each feature dimension (default: one scalar for all).
        seed: fold assignment seed.
        paper: also fit the paper-protocol probe on the same features (``None``: skip it).
    """

    l2_grid: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    cv_folds: int = 5
    max_iter: int = 1000
    tolerance: float = 1e-5
    standardize: bool = False
    seed: int = 0
    paper: PaperProbeConfig | None = field(default_factory=PaperProbeConfig)

    def __post_init__(self) -> None:
        self.l2_grid = tuple(float(v) for v in self.l2_grid)
        if not self.l2_grid or min(self.l2_grid) < 0:
            raise ValueError(f"ProbeConfig.l2_grid must be non-empty and >= 0, got {self.l2_grid}")
        if self.cv_folds < 2 or self.max_iter < 1 or not self.tolerance > 0:
            raise ValueError(f"ProbeConfig: need cv_folds >= 2, max_iter >= 1, tolerance > 0; got "
                             f"{self.cv_folds}, {self.max_iter}, {self.tolerance}")


@dataclass
class ProbeFit:
    """A fitted probe: ``head`` maps RAW features to logits; the rest describes the fit.

    Attributes:
        method: ``lbfgs`` or ``paper``.
        l2: chosen L2 strength (``lbfgs``), or None.
        iterations: optimiser iterations (L-BFGS iterations, or SGD steps for ``paper``).
        grad_norm: largest entry of the final full-batch gradient of the mean loss, on the
            scale-normalised features (comparable across methods and encoders).
        loss: final full-batch training loss (cross-entropy + penalty).
        converged: ``grad_norm <= tolerance``.
        train_accuracy: row (clip / point) accuracy on the training set.
        cv: per-L2 mean held-out accuracy and log-loss (``lbfgs`` with >= 2 folds), or None.
    """

    head: nn.Linear
    method: str
    l2: float | None
    iterations: int
    grad_norm: float
    loss: float
    converged: bool
    train_accuracy: float
    cv: list[dict] | None = None
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-serialisable description (without the head)."""
        return {"method": self.method, "l2": self.l2, "iterations": self.iterations, "grad_norm": self.grad_norm,
                "loss": self.loss, "converged": self.converged, "train_accuracy": self.train_accuracy,
                "cv": self.cv, "settings": self.settings}


@dataclass
class FeatureScaling:
    """``x -> (x - mean) / scale``; ``scale`` is a scalar or ``[C]`` (standardise)."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, standardize: bool = False) -> FeatureScaling:
        mean = x.mean(0)
        centred = x - mean
        scale = centred.std(0, unbiased=False) if standardize else centred.pow(2).mean().sqrt()
        tiny = torch.finfo(x.dtype).tiny ** 0.5
        return cls(mean, torch.where(scale > tiny, scale, torch.ones_like(scale)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def raw_head(self, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
        """The ``nn.Linear`` on raw features equal to ``(weight, bias)`` on scaled ones."""
        w = weight / self.scale
        head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.copy_(bias - w @ self.mean)
        return head.eval()

    def scaled_params(self, head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` on scaled features of a head on raw features (the inverse of :meth:`raw_head`)."""
        w = head.weight.detach().to(self.mean)
        return w * self.scale, head.bias.detach().to(self.mean) + w @ self.mean


def _check_inputs(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"expected features [M,C] and labels [M], got {tuple(features.shape)}, {tuple(labels.shape)}")
    if features.shape[0] == 0:
        raise ValueError("linear probe would train nothing: 0 training rows")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} training labels outside [0, {num_classes}) "
                         f"(e.g. {labels[bad][:5].tolist()}); unlabelled rows cannot train a probe")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("linear probe: features contain NaN or Inf")


def _objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float) -> torch.Tensor:
    return F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()


def _gradient_norm(x, y, weight, bias, l2) -> tuple[float, float]:
    """``(loss, largest |gradient entry|)`` of :func:`_objective` at ``(weight, bias)``."""
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True)
    loss = _objective(x, y, w, b, l2)
    gw, gb = torch.autograd.grad(loss, (w, b))
    return float(loss.detach()), float(torch.cat([gw.reshape(-1), gb]).abs().max())


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 1000,
                            tolerance: float = 1e-5, init: tuple[torch.Tensor, torch.Tensor] | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Minimise ``mean CE(x W^T + b, y) + l2 / 2 ||W||^2`` by full-batch L-BFGS.

    Args:
        x: ``[M, C]`` features (already scaled), y: ``[M]`` int64 classes.
        init: warm start ``(W [K, C], b [K])`` (default zeros: the problem is convex).

    Returns:
        ``W [K, C]``, ``b [K]`` (dtype of ``x``) and ``{"iterations", "grad_norm", "loss",
        "converged"}``.
    """
    K, C = num_classes, x.shape[1]
    if init is None:
        weight = torch.zeros(K, C, dtype=x.dtype, device=x.device)
        bias = torch.zeros(K, dtype=x.dtype, device=x.device)
    else:
        weight, bias = (t.detach().clone().to(x) for t in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance,
                            tolerance_change=1e-15, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = _objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    opt.step(closure)
    iterations = int(opt.state[weight].get("n_iter", 0))
    loss, grad = _gradient_norm(x, y, weight, bias, l2)
    return weight.detach(), bias.detach(), {"iterations": iterations, "grad_norm": grad, "loss": loss,
                                            "converged": grad <= tolerance}


def grouped_folds(labels: torch.Tensor, groups: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """``[M]`` int64 fold of every row: whole groups (videos) go to one fold.

    When every group has one label, the groups of each class are shuffled (seeded) and
    dealt round-robin over the folds, continuing where the previous class stopped, so
    every fold sees every class it can. Otherwise (e.g. per-point labels) all groups are
    shuffled and dealt. ``folds`` is capped at the number of groups.
    """
    group_ids, inverse = torch.unique(groups, return_inverse=True)
    folds = min(folds, len(group_ids))
    lo = torch.full((len(group_ids),), 2**62, dtype=torch.int64).scatter_reduce(0, inverse, labels, "amin")
    hi = torch.full((len(group_ids),), -1, dtype=torch.int64).scatter_reduce(0, inverse, labels, "amax")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(group_ids), generator=gen)
    if bool((lo == hi).all()):
        order = order[torch.sort(lo[order], stable=True).indices]  # by class, shuffled within
    fold_of_group = torch.empty(len(group_ids), dtype=torch.int64)
    fold_of_group[order] = torch.arange(len(group_ids)) % folds
    return fold_of_group[inverse]


def _accuracy_and_logloss(x, y, weight, bias) -> tuple[float, float]:
    logits = x @ weight.T + bias
    return float((logits.argmax(1) == y).double().mean()), float(F.cross_entropy(logits, y))


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     config: ProbeConfig | None = None, groups: torch.Tensor | None = None,
                     device: torch.device | str = "cpu") -> ProbeFit:
    """The converged probe: L2 chosen by grouped k-fold CV, then a full-data L-BFGS fit.

    Args:
        features: ``[M, C]`` frozen features (any scale).
        labels: ``[M]`` int64 in ``[0, num_classes)``.
        groups: ``[M]`` int64 video id per row (default: every row its own group).

    Returns:
        :class:`ProbeFit` with a head on raw features. A fit that did not reach
        ``config.tolerance`` says so (``converged=False``) and logs a warning.
    """
    config = ProbeConfig() if config is None else config
    _check_inputs(features, labels, num_classes)
    device = torch.device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    raw = features.to(device, dtype)
    y = labels.long().to(device)
    scaling = FeatureScaling.fit(raw, config.standardize)
    x = scaling(raw)
    groups = torch.arange(len(y)) if groups is None else groups.long().cpu()
    fold = grouped_folds(labels.long().cpu(), groups, config.cv_folds, config.seed).to(device)
    num_folds = int(fold.max()) + 1
    grid = sorted(config.l2_grid, reverse=True)  # strong -> weak: each fit warm-starts the next
    cv = None
    if num_folds >= 2 and len(grid) > 1:
        scores: dict[float, list[tuple[float, float]]] = {l2: [] for l2 in grid}
        for k in range(num_folds):
            train, held = fold != k, fold == k
            init = None
            for l2 in grid:
                w, b, _ = fit_logistic_regression(x[train], y[train], num_classes, l2, config.max_iter,
                                                  config.tolerance, init)
                init = (w, b)
                scores[l2].append(_accuracy_and_logloss(x[held], y[held], w, b))
        cv = [{"l2": l2, "accuracy": sum(a for a, _ in s) / len(s), "log_loss": sum(ll for _, ll in s) / len(s)}
              for l2, s in scores.items()]
        # best held-out accuracy; ties -> lower log-loss -> stronger L2 (earlier in ``grid``)
        best = min(cv, key=lambda r: (-round(r["accuracy"], 9), round(r["log_loss"], 9)))
        l2 = best["l2"]
    else:
        l2 = grid[len(grid) // 2]
    weight, bias, info = fit_logistic_regression(x, y, num_classes, l2, config.max_iter, config.tolerance)
    train_acc, _ = _accuracy_and_logloss(x, y, weight, bias)
    if not info["converged"]:
        log.warning("linear probe did not converge: gradient %.2e > tolerance %.1e after %d L-BFGS iterations",
                    info["grad_norm"], config.tolerance, info["iterations"])
    return ProbeFit(head=scaling.raw_head(weight, bias), method="lbfgs", l2=l2, iterations=info["iterations"],
                    grad_norm=info["grad_norm"], loss=info["loss"], converged=info["converged"],
                    train_accuracy=train_acc, cv=cv,
                    settings={"folds": num_folds, "l2_grid": list(config.l2_grid), "tolerance": config.tolerance,
                              "max_iter": config.max_iter, "scaling": "standardize" if config.standardize else
                              "centre + one global scale"})


def fit_paper_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    config: PaperProbeConfig | None = None, seed: int = 0, tolerance: float = 1e-5,
                    device: torch.device | str = "cpu") -> ProbeFit:
    """The paper's recipe: ``nn.Linear`` on RAW features, AdamW + cosine for ``config.epochs``.

    Its gradient norm is measured like the converged probe's (on scale-normalised
    features, no penalty), so the two can be compared; ``converged`` uses ``tolerance``.
    """
    config = PaperProbeConfig() if config is None else config
    _check_inputs(features, labels, num_classes)
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"paper probe would train nothing: epochs={config.epochs}, batch_size={config.batch_size}")
    device = torch.device(device)
    x, y = features.float().to(device), labels.long().to(device)
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * (1.0 / math.sqrt(x.shape[1])))
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    for _ in range(config.epochs):
        for idx in torch.randperm(len(x), generator=gen).to(device).split(config.batch_size):
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    head = head.eval().cpu()
    raw = features.double()
    scaling = FeatureScaling.fit(raw)
    weight, bias = scaling.scaled_params(head)
    xs = scaling(raw)
    final_loss, grad = _gradient_norm(xs, labels.long(), weight, bias, 0.0)
    train_acc, _ = _accuracy_and_logloss(xs, labels.long(), weight, bias)
    return ProbeFit(head=head, method="paper", l2=None, iterations=config.epochs * steps_per_epoch,
                    grad_norm=grad, loss=final_loss, converged=grad <= tolerance, train_accuracy=train_acc,
                    settings={"epochs": config.epochs, "lr": config.lr, "weight_decay": config.weight_decay,
                              "batch_size": config.batch_size, "optimizer": config.optimizer,
                              "features": "raw (no standardisation)"})


@torch.no_grad()
def evaluate_classifier(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                        videos: torch.Tensor) -> VideoAccuracy:
    """Clip and video accuracy of ``head`` on precomputed features."""
    device = next(head.parameters()).device
    probs = torch.softmax(head(features.float().to(device)).float(), dim=1).cpu()
    return video_level_accuracy(probs, videos, labels)
