"""Training configuration: dataclasses loaded from YAML with dotted command-line overrides.

A YAML file mirrors the dataclass tree (``optim: {lr: 5e-4}``); ``--set optim.lr=1e-3``
overrides one leaf, its value parsed as YAML (``1e-3`` -> float, ``[1, 2]`` -> list,
``null`` -> None). Unknown keys and wrongly typed values raise :class:`ConfigError`
naming the key, the value and the file.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from cross4d_core.configs import config_source
from cross4d_core.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up followed by a cosine decay (the paper's optimiser: AdamW, lr
    5e-4, weight decay 1e-4, 5% warm-up)."""

    lr: float = 5e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 0.05
    """Fraction of all optimisation steps spent in the linear warm-up."""
    min_lr_ratio: float = 0.0
    """Final learning rate of the cosine, as a fraction of ``lr``."""
    grad_clip: float = 1.0
    """Max global gradient L2 norm; 0 disables clipping."""


@dataclass
class DataConfig:
    """Where training items come from.

    ``source="targets"`` reads a precomputed target cache (dense / global objectives);
    ``source="online"`` reads an on-disk dataset and runs the frozen teacher (``teacher``)
    inside the training step, no cache (dense / global; datasets whose cache would not fit);
    ``source="clips"`` reads an on-disk dataset through ``ClipDataset`` (intra, fine-tuning).
    """

    source: str = "targets"
    path: str = ""
    split: str | None = "train"
    frames: int = 24
    frame_step: int = 1
    clip_stride: int = 1
    num_points: int = 2048
    short_video: str = "pad"
    batch_size: int = 16
    """Global batch size (split evenly over DDP ranks)."""
    num_workers: int = 0
    verify: str = "checksum"
    """``clips`` / ``online``: dataset file check on first access of each video (``checksum``:
    SHA-256 against meta.json, as ``cross4d data info --verify checksum``; ``size``; ``none``)."""


@dataclass
class TeacherConfig:
    """The frozen teacher of online-teacher training (``data.source: online``): the settings
    ``cross4d precompute`` takes (its command-line options of the same names)."""

    kind: str = "dinov2"
    """``dinov2`` or ``parts`` (image teachers; a video teacher needs a precomputed cache)."""
    model: str = "facebook/dinov2-large"
    """Hugging Face id in the local cache, or a ``save_pretrained`` directory."""
    source: str = "render"
    """``render`` (virtual cameras) or ``camera`` (the dataset's images and cameras)."""
    d_p: int = 384
    seed: int = 0
    """Point sampling, random projection C -> d_p and part-teacher seed (precompute's ``--seed``)."""
    image_size: int = 126
    splat_radius: int = 1
    cameras: int = 1
    azimuth: float = 0.0
    elevation: float = 0.0
    depth_tolerance: float = 0.05
    resize: int | None = None
    crop: int | None = None
    pose_bins: int = 3


@dataclass
class ModelConfig:
    """The POINT4D encoder: a preset (``paper`` or ``tiny``) plus field overrides."""

    preset: str = "paper"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    """Pretraining objective (``dense``, ``global``, ``intra``, ``none``) and its options."""

    name: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything ``cross4d pretrain`` needs (one YAML file, e.g. a shipped one: :mod:`cross4d_core.configs`)."""

    out_dir: str = "runs/pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 100
    max_steps: int | None = None
    """Stop after this many optimisation steps (the schedule still spans ``epochs``)."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``; under DDP the local rank's GPU."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many steps (0: only at the end of each epoch)."""
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    progress: bool = True
    tensorboard: bool = True
    find_unused_parameters: bool = False


def _type_error(key: str, value: Any, expected: Any, source: str) -> ConfigError:
    return ConfigError(f"{source}: '{key}' = {value!r} is not a valid {expected}")


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type ``hint`` (converting int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                pass
        raise _type_error(key, value, hint, source)
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _type_error(key, value, f"mapping for {hint.__name__}", source)
        return _build(hint, value, source, prefix=key + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, hint, source)
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, source) for v in value)
        if len(args) != len(value):
            raise _type_error(key, value, hint, source)
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, hint, source)
        (arg,) = typing.get_args(hint)
        return [_coerce(v, arg, key, source) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, hint, source)
        return dict(value)
    if hint is float:
        if isinstance(value, str):  # PyYAML reads "5e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _type_error(key, value, "float", source) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, value, "float", source)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, "int", source)
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise _type_error(key, value, hint.__name__, source)
        return value
    return value


def _build(cls: type[T], values: dict, source: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[prefix + k for k in unknown]} "
                          f"(valid: {sorted(prefix + n for n in names)})")
    kwargs = {k: _coerce(v, hints[k], prefix + k, source) for k, v in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{k}' is not a mapping")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """``["optim.lr=1e-3", ...]`` -> ``[("optim.lr", 0.001), ...]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        parsed.append((key.strip(), value))
    return parsed


def load_config(cls: type[T], path: str | os.PathLike | Traversable | None = None,
                overrides: list[str] | None = None) -> T:
    """Build dataclass ``cls`` from a YAML file (optional) and ``key.path=value`` overrides.

    ``path``: a YAML file, or the name of a shipped config (``"pretrain_dense.yaml"``; see
    :func:`cross4d_core.configs.config_source`: an existing file of that name wins).
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        path = config_source(path)
        source = str(path)
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(tree).__name__}")
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
    if overrides:
        source += f" + overrides {list(overrides)}"
    return _build(cls, tree, source)


def config_to_dict(config: Any) -> dict:
    """A JSON/YAML-serialisable dict of a config dataclass (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(dataclasses.asdict(config))
