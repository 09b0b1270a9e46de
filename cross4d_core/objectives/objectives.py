"""Pretraining objectives on one POINT4D encoder (arXiv 2607.00514: token matching, loss and baselines).

Each objective is an ``nn.Module`` with ``forward(batch) -> ObjectiveOutput`` and an
``after_step()`` hook the trainer calls after every optimiser step. ``batch`` is a typed
batch that checked its own shapes when it was collated: a
:class:`~cross4d_core.targets.TargetBatch` for ``dense`` / ``global`` (points, per-point
target rows into per-clip feature tables, clip targets), any
:class:`~cross4d_core.targets.ClipBatch` (points) for ``intra``.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cross4d_core.models.point4d import Point4DEncoder, TransformerBlock
from cross4d_core.objectives.losses import cosine_distillation_loss
from cross4d_core.ops import gather_points
from cross4d_core.targets.batch import ClipBatch, TargetBatch, gather_point_targets

OBJECTIVES = ("dense", "global", "intra", "none")


@dataclass
class ObjectiveConfig:
    """Objective hyper-parameters.

    Attributes:
        target_dim: teacher target width d_p (the cache's projection width).
        variance_weight, variance_eps: lambda and eps of the VICReg variance term.
        centre_targets: ``dense`` / ``global``: subtract the training set's mean target (the
            cache's ``target_means``) before the cosine loss, so the loss sees what varies
            between points / clips rather than the features' common component.
        mask_ratio: ``intra``: fraction of a clip's tokens that are masked.
        mask_blocks: ``intra``: the masked tokens are the ones nearest (in x, y, z, ignoring
            time) to any of this many random seed tokens: spatial blocks that span every
            frame, so a masked region cannot be copied from the same place one frame earlier.
        ema_momentum: ``intra``: target-encoder EMA momentum per ``after_step``.
        predictor_width, predictor_layers, predictor_heads: ``intra`` predictor size.
    """

    target_dim: int = 384
    variance_weight: float = 1.0
    variance_eps: float = 1e-4
    centre_targets: bool = False
    mask_ratio: float = 0.6
    mask_blocks: int = 4
    ema_momentum: float = 0.996
    predictor_width: int = 128
    predictor_layers: int = 4
    predictor_heads: int = 4

    def __post_init__(self) -> None:
        for name in ("target_dim", "mask_blocks", "predictor_width", "predictor_layers", "predictor_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ObjectiveConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.variance_weight < 0 or not self.variance_eps > 0:
            raise ValueError(f"ObjectiveConfig: variance_weight must be >= 0 and variance_eps > 0, got "
                             f"{self.variance_weight!r}, {self.variance_eps!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"ObjectiveConfig.mask_ratio must be in (0, 1), got {self.mask_ratio!r}")
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise ValueError(f"ObjectiveConfig.ema_momentum must be in [0, 1], got {self.ema_momentum!r}")
        if self.predictor_width % self.predictor_heads:
            raise ValueError(f"ObjectiveConfig.predictor_width ({self.predictor_width}) must be divisible by "
                             f"predictor_heads ({self.predictor_heads})")

    @classmethod
    def from_dict(cls, values: dict) -> ObjectiveConfig:
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"ObjectiveConfig: unknown keys {unknown}")
        return cls(**values)


@dataclass
class ObjectiveOutput:
    """``loss``: scalar to minimise; ``metrics``: detached scalar tensors for logging."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def _expect(batch, kind: type, objective: str) -> None:
    if not isinstance(batch, kind):
        raise TypeError(f"{objective} objective: batch must be a {kind.__name__}, got {type(batch).__name__} "
                        f"(collate with {kind.__name__}.collate)")


class Objective(nn.Module):
    """Base class: holds the student ``encoder``; ``after_step()`` is a no-op by default."""

    requires_training = True
    target_mean: torch.Tensor | None  # a buffer (register_buffer in __init__)

    def __init__(self, encoder: Point4DEncoder, config: ObjectiveConfig,
                 target_mean: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.register_buffer("target_mean", None if target_mean is None else target_mean.float().clone(),
                             persistent=False)

    def centred(self, targets: torch.Tensor) -> torch.Tensor:
        """``targets [..., d_p]`` minus the training set's mean target when ``centre_targets``."""
        if not self.config.centre_targets:
            return targets
        if self.target_mean is None or self.target_mean.shape != targets.shape[-1:]:
            raise ValueError(f"{type(self).__name__}: centre_targets needs the training set's mean target "
                             f"[d_p={targets.shape[-1]}] (a target cache written by this version of `cross4d "
                             f"precompute` records it); got "
                             f"{None if self.target_mean is None else tuple(self.target_mean.shape)}")
        return targets.float() - self.target_mean

    def after_step(self) -> None:
        """Called by the trainer after each optimiser step."""


class DenseObjective(Objective):
    """Each token predicts the teacher patch feature of its centre point (visible centres only)."""

    def __init__(self, encoder: Point4DEncoder, config: ObjectiveConfig,
                 target_mean: torch.Tensor | None = None) -> None:
        super().__init__(encoder, config, target_mean)
        self.head = nn.Linear(encoder.hidden_size, config.target_dim)

    def forward(self, batch: TargetBatch) -> ObjectiveOutput:
        _expect(batch, TargetBatch, "dense")
        if batch.features.shape[-1] != self.config.target_dim:
            raise ValueError(f"dense objective: features {tuple(batch.features.shape)} must be [B, K, "
                             f"d_p={self.config.target_dim}]")
        output = self.encoder(batch.points)
        row = batch.target_index.gather(2, output.token_point_index)  # [B, T, M]: the token centre's target row
        visible = row >= 0
        targets = self.centred(gather_point_targets(batch.features, row))
        predictions = self.head(output.token_features)
        loss, metrics = cosine_distillation_loss(predictions, targets, visible,
                                                 self.config.variance_weight, self.config.variance_eps)
        metrics["coverage"] = visible.float().mean().detach()
        metrics["point_coverage"] = batch.visible.float().mean().detach()
        return ObjectiveOutput(loss, metrics)


class GlobalObjective(Objective):
    """The mean-pooled clip feature predicts one teacher embedding per clip (``clip_target``)."""

    def __init__(self, encoder: Point4DEncoder, config: ObjectiveConfig,
                 target_mean: torch.Tensor | None = None) -> None:
        super().__init__(encoder, config, target_mean)
        self.head = nn.Linear(encoder.hidden_size, config.target_dim)

    def forward(self, batch: TargetBatch) -> ObjectiveOutput:
        _expect(batch, TargetBatch, "global")
        points, target = batch.points, batch.clip_target
        if target.shape != (points.shape[0], self.config.target_dim):
            raise ValueError(f"global objective: clip_target is {tuple(target.shape)}, expected "
                             f"[B, d_p] = {(points.shape[0], self.config.target_dim)}")
        target = self.centred(target)
        predictions = self.head(self.encoder(points).clip_feature)
        supervised = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        loss, metrics = cosine_distillation_loss(predictions, target, supervised,
                                                 self.config.variance_weight, self.config.variance_eps)
        metrics["coverage"] = supervised.float().mean()
        return ObjectiveOutput(loss, metrics)


class LatentPredictor(nn.Module):
    """Small transformer predicting masked-token latents from context tokens and 4D positions."""

    def __init__(self, feature_width: int, config: ObjectiveConfig, eps: float) -> None:
        super().__init__()
        width = config.predictor_width
        self.embed = nn.Linear(feature_width, width)
        self.mask_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.position = nn.Sequential(nn.Linear(4, width), nn.GELU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(TransformerBlock(width, config.predictor_heads, 4.0, 0.0, eps)
                                    for _ in range(config.predictor_layers))
        self.norm = nn.LayerNorm(width, eps=eps)
        self.out = nn.Linear(width, feature_width)

    def forward(self, context: torch.Tensor, context_position: torch.Tensor,
                masked_position: torch.Tensor) -> torch.Tensor:
        """``context [B, Lc, C]``, positions ``[B, Lc, 4]`` / ``[B, Lm, 4]`` -> predictions ``[B, Lm, C]``."""
        queries = self.mask_token.expand(*masked_position.shape[:2], -1) + self.position(masked_position)
        x = torch.cat([self.embed(context) + self.position(context_position), queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, context.shape[1]:]))


class IntraObjective(Objective):
    """i-JEPA-style masked latent prediction with an EMA target encoder (intra-modal baseline).

    The student sees only the context tokens (the transformer runs on them alone); the
    predictor regresses the EMA encoder's layer-normed features of the masked 4D block.
    """

    def __init__(self, encoder: Point4DEncoder, config: ObjectiveConfig) -> None:
        super().__init__(encoder, config)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.predictor = LatentPredictor(encoder.hidden_size, config, encoder.config.layer_norm_eps)

    def train(self, mode: bool = True) -> IntraObjective:
        super().train(mode)
        self.target_encoder.eval()
        return self

    def _positions(self, centres: torch.Tensor) -> torch.Tensor:
        """``centres [B, T, M, 3]`` -> ``[B, T*M, 4]`` of (x, y, z, t * time_scale)."""
        frames = centres.shape[1]
        t = torch.arange(frames, device=centres.device, dtype=centres.dtype) * self.encoder.config.time_scale
        t = t.reshape(1, frames, 1, 1).expand(*centres.shape[:-1], 1)
        return torch.cat([centres, t], dim=-1).flatten(1, 2)

    def _block_mask(self, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices ``(masked [B, Lm], context [B, Lc])`` into the ``L = T*M`` tokens of
        ``centres [B, T, M, 3]``: the ``Lm`` tokens nearest in space to any of
        ``mask_blocks`` random seed tokens (blocks that span all frames)."""
        xyz = centres.flatten(1, 2)
        batch, length, _ = xyz.shape
        num_masked = min(max(int(round(self.config.mask_ratio * length)), 1), length - 1)
        seeds = torch.randint(length, (batch, self.config.mask_blocks), device=xyz.device)
        seed_xyz = xyz.gather(1, seeds[..., None].expand(-1, -1, 3))                  # [B, blocks, 3]
        nearest_seed = torch.cdist(xyz.float(), seed_xyz.float()).amin(dim=-1)       # [B, L]
        order = nearest_seed.argsort(dim=-1, stable=True)
        return order[:, :num_masked], order[:, num_masked:]

    def forward(self, batch: ClipBatch) -> ObjectiveOutput:
        _expect(batch, ClipBatch, "intra")
        points = batch.points
        frame_tokens = self.encoder.encode_frames(points)
        length = frame_tokens.centres.shape[1] * frame_tokens.centres.shape[2]
        if length < 2:
            raise ValueError(f"intra objective needs at least 2 tokens per clip, got {length}")
        with torch.no_grad():
            target = self.target_encoder(points).token_features.flatten(1, 2).float()
            target = F.layer_norm(target, target.shape[-1:])
        positions = self._positions(frame_tokens.centres)
        masked, context = self._block_mask(frame_tokens.centres)
        embeddings = self.encoder.token_embeddings(frame_tokens)
        context_features = self.encoder.encode_tokens(gather_points(embeddings, context))
        predictions = self.predictor(context_features, gather_points(positions, context),
                                     gather_points(positions, masked)).float()
        targets = gather_points(target, masked)
        loss = F.mse_loss(predictions, targets)
        cosine = F.cosine_similarity(predictions.detach(), targets, dim=-1).mean()
        metrics = {"cosine": cosine, "mask_ratio": torch.tensor(masked.shape[1] / length)}
        return ObjectiveOutput(loss, metrics)

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the target encoder: ``target = m * target + (1 - m) * student``."""
        weight = 1.0 - self.config.ema_momentum
        for target, student in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            target.lerp_(student.detach(), weight)
        for target_buffer, student_buffer in zip(self.target_encoder.buffers(), self.encoder.buffers()):
            target_buffer.copy_(student_buffer)


class NoObjective(Objective):
    """The ``none`` baseline: the randomly initialised encoder, evaluated without pretraining."""

    requires_training = False

    def forward(self, batch: ClipBatch) -> ObjectiveOutput:
        raise RuntimeError("objective 'none' is the random-init baseline: there is nothing to pretrain; "
                           "evaluate the encoder as initialised (skip `cross4d pretrain`)")


_CLASSES = {"dense": DenseObjective, "global": GlobalObjective, "intra": IntraObjective, "none": NoObjective}


def build_objective(name: str, encoder: Point4DEncoder, config: ObjectiveConfig | dict | None = None,
                    target_mean: torch.Tensor | None = None) -> Objective:
    """The objective ``name`` in ``{dense, global, intra, none}`` around the student ``encoder``;
    ``target_mean [d_p]``: the training set's mean target (``centre_targets``)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown objective {name!r}; choose one of {list(OBJECTIVES)}")
    if config is None:
        config = ObjectiveConfig()
    elif isinstance(config, dict):
        config = ObjectiveConfig.from_dict(config)
    if name in ("dense", "global"):
        return _CLASSES[name](encoder, config, target_mean)
    return _CLASSES[name](encoder, config)
