"""Checkpoints: resumable training checkpoints and the pretrained encoder directory.

Training checkpoint (one directory per step, written into a temporary directory and
renamed into place, so a directory named ``step_*`` is always complete)::

    <out>/checkpoints/step_00001200/
        model.safetensors      weights of the training module (encoder + heads + EMA)
        optimizer.safetensors  optimizer tensors (Adam moments, step counts)
        rng.safetensors        RNG states of every rank (python, numpy, torch, cuda, loader)
        state.json             epoch, step, position in the epoch, optimizer hyper-parameters, config

Pretrained encoder directory (``cross4d pretrain`` output, what ``cross4d probe | finetune |
...`` read): ``encoder.safetensors`` and ``config.json`` with ``model_config``, ``model_id``,
``normalisation`` and the pretraining provenance (``objective``, ``pretrain_data``,
``teacher``); each file is written atomically (temp file + ``os.replace``). The recognizer the
ROS node serves is :class:`cross4d_core.models.Recognizer` (its own directory).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import nn

from cross4d_core.errors import CheckpointError
from cross4d_core.fileio import atomic_directory, remove_temporaries, remove_tree, write_json_atomic
from cross4d_core.fileio import read_json as read_json_file
from cross4d_core.models.weights import load_tensors, load_weights, save_weights

if TYPE_CHECKING:
    from cross4d_core.models import Point4DEncoder

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def read_json(path: str | Path) -> dict:
    return read_json_file(path, CheckpointError)


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
        save_weights(model, tmp / "model.safetensors")
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
    load_weights(model, path / "model.safetensors", device)
    opt = _optimizer_from_tensors(load_tensors(path / "optimizer.safetensors"), state["optimizer"])
    try:
        optimizer.load_state_dict(opt)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(path / "optimizer.safetensors", f"does not match the optimizer: {exc}") from exc
    return state, load_tensors(path / "rng.safetensors")


# --------------------------------------------------------------------------- pretrained encoder

ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.json"


def save_encoder(directory: str | Path, encoder: Point4DEncoder, *, model_id: str,
                 normalisation: dict | None = None, extra: dict | None = None) -> None:
    """Write ``encoder.safetensors`` and ``config.json`` (model config from ``encoder.config``,
    ``model_id``, ``normalisation`` and the ``extra`` provenance keys) atomically."""
    directory = Path(directory)
    save_weights(encoder, directory / ENCODER_FILE)
    meta = {"model_id": model_id, "model_config": encoder.config.to_dict(),
            "normalisation": normalisation or {}, **(extra or {})}
    write_json_atomic(directory / CONFIG_FILE, meta)


def load_encoder(directory: str | Path, device: torch.device | str = "cpu") -> tuple[Point4DEncoder, dict]:
    """The POINT4D encoder of a pretrained encoder directory (eval mode) and its ``config.json``."""
    from cross4d_core.models import Point4DConfig, Point4DEncoder

    directory = Path(directory)
    meta = read_json(directory / CONFIG_FILE)
    try:
        config = Point4DConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(directory / CONFIG_FILE, f"invalid model_config ({exc})") from exc
    encoder = Point4DEncoder(config)
    load_weights(encoder, directory / ENCODER_FILE)
    return encoder.to(device).eval(), meta
