"""Module weights as safetensors files (never pickle): written atomically, read with one-line
:class:`~cross4d_core.errors.CheckpointError` s naming the file (missing, corrupt, or not
matching the module's parameters). Used by the recognizer directory and the training
checkpoints alike."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from cross4d_core.errors import CheckpointError
from cross4d_core.fileio import atomic_path


def save_weights(module: nn.Module, path: str | Path) -> None:
    """Write ``module``'s parameters and buffers to the safetensors file ``path`` atomically."""
    with atomic_path(path) as tmp:
        save_model(module, str(tmp))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path`` (on the CPU)."""
    try:
        return load_file(path)
    except FileNotFoundError as exc:
        raise CheckpointError(path, "missing") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(path, f"corrupt safetensors file ({exc})") from exc


def load_weights(module: nn.Module, path: str | Path, device: torch.device | str = "cpu") -> None:
    """Load the safetensors file ``path`` into ``module`` in place: every key present, none
    extra, every shape equal to the module's."""
    try:
        missing, unexpected = load_model(module, path, strict=False, device=str(device))
    except FileNotFoundError as exc:
        raise CheckpointError(path, "missing") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(path, f"corrupt safetensors file ({exc})") from exc
    except RuntimeError as exc:  # shape mismatch: torch's message is a headline and one line per tensor
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip()) or str(exc)
        raise CheckpointError(path, f"does not match the model: {details}") from exc
    if missing or unexpected:
        raise CheckpointError(path, f"does not match the model: missing keys {sorted(missing)[:8]}, "
                              f"unexpected keys {sorted(unexpected)[:8]}")
