"""The recognizer: a POINT4D encoder and a linear head on its clip feature, with the window its
head was fitted on (T frames x N points), its label names and where it came from. ``cross4d
probe`` writes it; ``perception_node`` serves it and takes T and N from it.

A recognizer directory, in the Hugging Face manner (:meth:`Recognizer.save_pretrained` /
:meth:`Recognizer.from_pretrained`)::

    <dir>/
        config.json        RecognizerConfig.to_dict(): format "cross4d-recognizer", format_version,
                           model_config (Point4DConfig.to_dict()), label_names, num_frames,
                           num_points, model_id, provenance
        model.safetensors  the module's tensors: encoder.*, head.weight [C, D], head.bias [C]

The directory is written whole (a temporary directory renamed into place), so a reader finds the
old recognizer or the new one, never the config of one with the weights of the other. Weights
are read with safetensors only. A missing directory or file, another format or format version,
an invalid config and tensors that do not match the config are each one
:class:`~cross4d_core.errors.CheckpointError` line naming the file.

The pretrained encoder directory of ``cross4d pretrain`` is a different artefact
(:mod:`cross4d_core.training.checkpoint`); so are the resumable training checkpoints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cross4d_core import __version__
from cross4d_core.errors import CheckpointError, FileError
from cross4d_core.fileio import atomic_directory, read_json, remove_tree, write_json_atomic
from cross4d_core.models.point4d import Point4DConfig, Point4DEncoder, Point4DOutput
from cross4d_core.models.weights import load_weights, save_weights

RECOGNIZER_FORMAT = "cross4d-recognizer"
RECOGNIZER_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _check_keys(cls: type, values: Any, where: str) -> dict:
    """``values`` as a dict whose keys are fields of the dataclass ``cls`` (ValueError naming the
    unknown ones, and the missing ones that have no default)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(values).__name__}")
    fields = dataclasses.fields(cls)
    unknown = sorted(set(values) - {f.name for f in fields})
    missing = [f.name for f in fields if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    problems = ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return dict(values)


@dataclass
class RecognizerProvenance:
    """Where a recognizer came from: recorded for people and reports, never read to compute.

    Attributes:
        source_checkpoint: the pretrained encoder directory (``cross4d pretrain`` output) it was made from.
        objective, teacher, pretrain_data: that encoder's pretraining objective, teacher and data.
        dataset: root of the dataset the head was fitted on.
        normalisation: that dataset's ``normalisation`` record (its ``manifest.json``).
        probe_l2: L2 strength of the linear probe that fitted the head (chosen by cross-validation).
        train_accuracy, test_accuracy: video accuracy on that dataset's train / test split.
        created_by: the cross4d that wrote it (``"cross4d <version>"``).
    """

    source_checkpoint: str | None = None
    objective: str | None = None
    teacher: str | None = None
    pretrain_data: str | None = None
    dataset: str | None = None
    normalisation: dict = field(default_factory=dict)
    probe_l2: float | None = None
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    created_by: str = f"cross4d {__version__}"


@dataclass
class RecognizerConfig:
    """What a recognizer is and what it must be fed (the ``config.json`` of its directory).

    Attributes:
        model_config: the encoder's :class:`Point4DConfig`. Its ``num_frames`` / ``num_points``
            are the size the encoder was built for; the recognizer's own below are the window
            its head was fitted on, which is what it serves.
        label_names: the C class names; logit ``c`` scores ``label_names[c]`` (distinct, non-empty).
        num_frames: T, frames per window.
        num_points: N, points per frame (at least ``model_config.sa1_centroids``).
        model_id: the identifier published with every result (``ActionRecognition.model_id``).
        provenance: see :class:`RecognizerProvenance`.
    """

    model_config: Point4DConfig
    label_names: list[str]
    num_frames: int
    num_points: int
    model_id: str = ""
    provenance: RecognizerProvenance = field(default_factory=RecognizerProvenance)

    def __post_init__(self) -> None:
        if not isinstance(self.model_config, Point4DConfig):
            raise ValueError(f"RecognizerConfig.model_config must be a Point4DConfig, got "
                             f"{type(self.model_config).__name__}")
        names = self.label_names
        if (not isinstance(names, (list, tuple)) or not names
                or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
            raise ValueError(f"RecognizerConfig.label_names must be distinct non-empty strings, got {names!r}")
        self.label_names = list(names)
        for name in ("num_frames", "num_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RecognizerConfig.{name} must be a positive int, got {value!r}")
        if self.num_points < self.model_config.sa1_centroids:
            raise ValueError(f"RecognizerConfig.num_points ({self.num_points}) must be >= the encoder's "
                             f"sa1_centroids ({self.model_config.sa1_centroids})")
        if not isinstance(self.model_id, str):
            raise ValueError(f"RecognizerConfig.model_id must be a string, got {self.model_id!r}")
        if not isinstance(self.provenance, RecognizerProvenance):
            raise ValueError(f"RecognizerConfig.provenance must be a RecognizerProvenance, got "
                             f"{type(self.provenance).__name__}")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict:
        """The ``config.json`` object (JSON types only)."""
        return {"format": RECOGNIZER_FORMAT, "format_version": RECOGNIZER_FORMAT_VERSION,
                "model_config": self.model_config.to_dict(), "label_names": list(self.label_names),
                "num_frames": self.num_frames, "num_points": self.num_points, "model_id": self.model_id,
                "provenance": dataclasses.asdict(self.provenance)}

    @classmethod
    def from_dict(cls, values: Any) -> RecognizerConfig:
        """The inverse of :meth:`to_dict`. ``ValueError`` (or ``TypeError``) naming the problem
        for another ``format`` or ``format_version``, unknown or missing keys, invalid values."""
        kind = values.get("format") if isinstance(values, dict) else None
        if kind != RECOGNIZER_FORMAT:
            raise ValueError(f"not a recognizer config: format {kind!r}, expected {RECOGNIZER_FORMAT!r} (a "
                             "`cross4d pretrain` directory or an older probe output? `cross4d probe` writes "
                             "the recognizer to <out>/recognizer/)")
        if values.get("format_version") != RECOGNIZER_FORMAT_VERSION:
            raise ValueError(f"recognizer format_version {values.get('format_version')!r}; this cross4d "
                             f"({__version__}) reads {RECOGNIZER_FORMAT_VERSION}")
        values = {k: v for k, v in values.items() if k not in ("format", "format_version")}
        values = _check_keys(cls, values, "config")
        if not isinstance(values["model_config"], dict):
            raise ValueError(f"model_config must be a JSON object, got {type(values['model_config']).__name__}")
        values["model_config"] = Point4DConfig.from_dict(values["model_config"])
        values["provenance"] = RecognizerProvenance(**_check_keys(RecognizerProvenance, values.get("provenance", {}),
                                                                  "provenance"))
        return cls(**values)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> RecognizerConfig:
        """The checked ``config.json`` of a recognizer directory (no weights are read)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(directory, "no such recognizer directory" if not directory.exists() else
                                  f"not a directory (a recognizer directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
        path = directory / CONFIG_FILE
        values = read_json(path, CheckpointError)
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(path, str(exc)) from None


@dataclass
class RecognizerOutput:
    """Recognizer output for B windows.

    Attributes:
        logits: ``[B, C]`` class scores before the softmax; column ``c`` is ``config.label_names[c]``.
        clip_feature: ``[B, D]`` the encoder's mean-pooled clip feature the head read.
        encoder_output: the encoder's :class:`Point4DOutput` (tokens ``[B, T, M, D]``, for point features).
    """

    logits: torch.Tensor
    clip_feature: torch.Tensor
    encoder_output: Point4DOutput


class Recognizer(nn.Module):
    """POINT4D encoder + linear head: ``points [B, T, N, 3]`` (metres; T = ``config.num_frames``,
    N = ``config.num_points``) -> :class:`RecognizerOutput` (logits ``[B, C]``).

    Args:
        config: the :class:`RecognizerConfig`.
        encoder: a trained :class:`Point4DEncoder` whose config is ``config.model_config``;
            default: a fresh one.
        head: a trained ``nn.Linear(D, C)`` (D = ``model_config.hidden_size``, C = number of
            labels); default: a fresh one.
    """

    def __init__(self, config: RecognizerConfig, encoder: Point4DEncoder | None = None,
                 head: nn.Linear | None = None) -> None:
        super().__init__()
        encoder = Point4DEncoder(config.model_config) if encoder is None else encoder
        if encoder.config != config.model_config:
            raise ValueError(f"the encoder's config {encoder.config} is not the recognizer's model_config "
                             f"{config.model_config}")
        width, classes = config.model_config.hidden_size, config.num_classes
        head = nn.Linear(width, classes) if head is None else head
        if (head.in_features, head.out_features) != (width, classes):
            raise ValueError(f"head is Linear({head.in_features}, {head.out_features}); the config needs "
                             f"Linear({width}, {classes}) (hidden_size, label names)")
        self.config = config
        self.encoder = encoder
        self.head = head

    def forward(self, points: torch.Tensor) -> RecognizerOutput:
        shape = (self.config.num_frames, self.config.num_points, 3)
        if points.dim() != 4 or tuple(points.shape[1:]) != shape:
            raise ValueError(f"points must be [B, {shape[0]}, {shape[1]}, 3] (the recognizer's num_frames x "
                             f"num_points), got {list(points.shape)}")
        return self.classify(self.encoder(points))

    def classify(self, encoded: Point4DOutput) -> RecognizerOutput:
        """The head on an encoder output of T-frame windows (e.g. the node's per-frame-cached ones)."""
        return RecognizerOutput(logits=self.head(encoded.clip_feature), clip_feature=encoded.clip_feature,
                                encoder_output=encoded)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` in one atomic step.
        An earlier recognizer there is replaced; a directory holding anything else is refused
        (:class:`~cross4d_core.errors.FileError`). Returns ``directory``."""
        directory = Path(directory)
        if directory.exists():
            others = sorted(p.name for p in directory.iterdir() if p.name not in (CONFIG_FILE, WEIGHTS_FILE)) \
                if directory.is_dir() else [directory.name]
            if others:
                raise FileError(directory, f"exists and is not a recognizer directory (holds {others[:5]}); "
                                "not replaced")
        with atomic_directory(directory) as tmp:
            save_weights(self, tmp / WEIGHTS_FILE)
            write_json_atomic(tmp / CONFIG_FILE, self.config.to_dict())
            if directory.exists():
                remove_tree(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> Recognizer:
        """The recognizer of a directory written by :meth:`save_pretrained`, in eval mode on ``device``."""
        directory = Path(directory)
        recognizer = cls(RecognizerConfig.from_pretrained(directory))
        load_weights(recognizer, directory / WEIGHTS_FILE)
        return recognizer.to(device).eval()
