"""Training engine: config, trainer (AdamW, warm-up + cosine, DDP, AMP), checkpoints."""
from cross4d_core.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_encoder,
    save_encoder,
)
from cross4d_core.training.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from cross4d_core.training.schedule import warmup_cosine_lr
from cross4d_core.training.trainer import NonFiniteLossError, Trainer, TrainResult

__all__ = [
    "CheckpointError", "ConfigError", "DataConfig", "ModelConfig", "NonFiniteLossError", "ObjectiveConfig",
    "OptimConfig", "TrainConfig", "TrainResult", "Trainer", "latest_checkpoint", "load_config",
    "load_encoder", "save_encoder", "warmup_cosine_lr",
]
