"""Checkpoints: resumable training checkpoints and the recognizer directory the ROS nodes load.

Training checkpoint (one directory per step, written into a temporary directory and
renamed into place, so a directory named ``step_*`` is always complete)::

    <out>/checkpoints/step_00001200/
        model.safetensors      weights of the training module (encoder + heads + EMA)
        optimizer.safetensors  optimizer tensors (Adam moments, step counts)
        rng.safetensors        RNG states of every rank (python, numpy, torch, cuda, loader)
        state.json             epoch, step, position in the epoch, optimizer hyper-parameters, config

Recognizer directory (``encoder.safetensors``, optional ``classifier.safetensors``,
``config.json`` with ``model_config``, ``label_names``, ``normalisation``, ``model_id``);
each file is written atomically (temp file + ``os.replace``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from cross4d_core.errors import CheckpointError
from cross4d_core.fileio import atomic_directory, atomic_path, remove_temporaries, remove_tree, write_json_atomic
from cross4d_core.fileio import read_json as read_json_file

if TYPE_CHECKING:
    from cross4d_core.models import Point4DEncoder

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def read_json(path: str | Path) -> dict:
    return read_json_file(path, CheckpointError)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError as exc:
        raise CheckpointError(path, "missing") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(path, f"corrupt safetensors file ({exc})") from exc


def _load_module(module: nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    try:
        missing, unexpected = load_model(module, path, strict=False, device=str(device))
    except FileNotFoundError as exc:
        raise CheckpointError(path, "missing") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(path, f"corrupt safetensors file ({exc})") from exc
    except RuntimeError as exc:  # shape mismatch
        raise CheckpointError(path, f"does not match the model: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(path, f"does not match the model: missing keys {sorted(missing)[:8]}, "
                              f"unexpected keys {sorted(unexpected)[:8]}")


# --------------------------------------------------------------------------- training


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_training_checkpoint(out_dir: str | Path, step: int, model: nn.Module,
                             optimizer: torch.optim.Optimizer, state: dict,
                             rng: dict[str, torch.Tensor], keep: int = 2) -> Path:
    """Write ``<out_dir>/checkpoints/step_<step>/`` atomically; keep the newest ``keep``."""
    final = Path(out_dir) / CHECKPOINT_DIR / f"step_{step:08d}"
    with atomic_directory(final) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _optimizer_to_tensors(optimizer)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file({k: v.contiguous() for k, v in rng.items()}, tmp / "rng.safetensors")
        write_json_atomic(tmp / "state.json", {**state, "step": step, "optimizer": opt_meta})
        if final.exists():  # a re-run of this step replaces the old checkpoint
            remove_tree(final)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        remove_tree(old)  # renamed away first: a kill here never leaves a step_N/ without state.json
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete training checkpoints under ``out_dir``, oldest first: ``step_N/`` directories
    holding ``state.json`` (the last file written; temporaries and the remains of a deletion
    killed by an older version are not checkpoints)."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def remove_checkpoint_temporaries(out_dir: str | Path) -> list[Path]:
    """Remove the temporaries a killed run left in ``<out_dir>/checkpoints`` (rank 0, at start)."""
    root = Path(out_dir) / CHECKPOINT_DIR
    return remove_temporaries(root) if root.is_dir() else []


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_training_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             device: torch.device | str = "cpu") -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore ``model`` and ``optimizer`` in place; returns ``(state, rng tensors)``."""
    path = Path(path)
    state = read_json(path / "state.json")
    _load_module(model, path / "model.safetensors", device)
    opt = _optimizer_from_tensors(_load_tensors(path / "optimizer.safetensors"), state["optimizer"])
    try:
        optimizer.load_state_dict(opt)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(path / "optimizer.safetensors", f"does not match the optimizer: {exc}") from exc
    return state, _load_tensors(path / "rng.safetensors")


# --------------------------------------------------------------------------- recognizer

ENCODER_FILE = "encoder.safetensors"
CLASSIFIER_FILE = "classifier.safetensors"
CONFIG_FILE = "config.json"


def save_encoder(directory: str | Path, encoder: Point4DEncoder, *, model_id: str,
                 normalisation: dict | None = None, extra: dict | None = None) -> None:
    """Write ``encoder.safetensors`` and ``config.json`` (model config from ``encoder.config``;
    no classifier yet) atomically."""
    directory = Path(directory)
    with atomic_path(directory / ENCODER_FILE) as tmp:
        save_model(encoder, str(tmp))
    meta = {"model_id": model_id, "model_config": encoder.config.to_dict(),
            "normalisation": normalisation or {}, "label_names": [], **(extra or {})}
    write_json_atomic(directory / CONFIG_FILE, meta)


def save_classifier(directory: str | Path, classifier: nn.Linear, label_names: list[str],
                    extra: dict | None = None) -> None:
    """Add ``classifier.safetensors`` (keys ``weight [K,C]``, ``bias [K]``) and the label names."""
    directory = Path(directory)
    if classifier.out_features != len(label_names):
        raise ValueError(f"classifier has {classifier.out_features} outputs but {len(label_names)} label names")
    tensors = {"weight": classifier.weight.detach().float().cpu().contiguous(),
               "bias": classifier.bias.detach().float().cpu().contiguous()}
    with atomic_path(directory / CLASSIFIER_FILE) as tmp:
        save_file(tensors, tmp)
    meta = read_json(directory / CONFIG_FILE)
    meta.update({"label_names": list(label_names), **(extra or {})})
    write_json_atomic(directory / CONFIG_FILE, meta)


def read_recognizer_config(directory: str | Path) -> dict:
    """The ``config.json`` of a checkpoint directory (CheckpointError when missing or invalid)."""
    return read_json(Path(directory) / CONFIG_FILE)


def load_encoder(directory: str | Path, device: torch.device | str = "cpu") -> tuple[Point4DEncoder, dict]:
    """The POINT4D encoder of a checkpoint directory (eval mode) and its ``config.json``."""
    from cross4d_core.models import Point4DConfig, Point4DEncoder

    directory = Path(directory)
    meta = read_recognizer_config(directory)
    try:
        config = Point4DConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(directory / CONFIG_FILE, f"invalid model_config ({exc})") from exc
    encoder = Point4DEncoder(config)
    _load_module(encoder, directory / ENCODER_FILE)
    return encoder.to(device).eval(), meta


def load_classifier(directory: str | Path, device: torch.device | str = "cpu") -> nn.Linear | None:
    """The linear classifier of a checkpoint directory, or None when it has none."""
    path = Path(directory) / CLASSIFIER_FILE
    if not path.exists():
        return None
    tensors = _load_tensors(path)
    if (set(tensors) != {"weight", "bias"} or tensors["weight"].ndim != 2
            or tensors["bias"].shape != tensors["weight"].shape[:1]):
        raise CheckpointError(path, f"expected tensors weight [K,C] and bias [K], got "
                              f"{ {k: tuple(v.shape) for k, v in tensors.items()} }")
    k, c = tensors["weight"].shape
    head = nn.Linear(c, k)
    head.load_state_dict(tensors)
    return head.to(device).eval()


def load_recognizer(directory: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[nn.Module, nn.Linear | None, list[str], dict]:
    """``(encoder, classifier or None, label_names, config.json dict)`` of a checkpoint directory."""
    encoder, meta = load_encoder(directory, device)
    classifier = load_classifier(directory, device)
    labels = list(meta.get("label_names") or [])
    if classifier is not None and classifier.out_features != len(labels):
        raise CheckpointError(Path(directory) / CONFIG_FILE, f"{len(labels)} label names but the "
                              f"classifier has {classifier.out_features} outputs")
    return encoder, classifier, labels, meta
