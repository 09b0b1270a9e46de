"""Pretraining objectives: dense / global distillation, intra-modal masked latents, none."""
from cross4d_core.objectives.losses import cosine_distillation_loss, variance_penalty
from cross4d_core.objectives.objectives import (
    OBJECTIVES,
    DenseObjective,
    GlobalObjective,
    IntraObjective,
    NoObjective,
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    build_objective,
)

__all__ = [
    "OBJECTIVES", "DenseObjective", "GlobalObjective", "IntraObjective", "NoObjective", "Objective",
    "ObjectiveConfig", "ObjectiveOutput", "build_objective", "cosine_distillation_loss", "variance_penalty",
]
