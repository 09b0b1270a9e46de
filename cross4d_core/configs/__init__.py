"""The shipped run configurations, package data read with :mod:`importlib.resources`: found
from any working directory and in any install (editable, a wheel, the colcon install).

``train/`` holds the YAML of ``cross4d pretrain`` (``pretrain_dense.yaml``,
``pretrain_global.yaml`` and ``pretrain_intra.yaml``: the paper's protocol;
``pretrain_demo.yaml``: ``make demo``; ``pretrain_tiny.yaml``: tests) and of the evaluation
commands (``probe.yaml``, ``finetune.yaml``, ``segment.yaml``, ``robustness.yaml``). A
command's ``--config`` takes a YAML file or the name of one of these.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from cross4d_core.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _train_dir() -> Traversable:
    return files(__name__).joinpath("train")


def train_config_names() -> list[str]:
    """File names of the shipped configs (``"pretrain_dense.yaml"``, ...), sorted."""
    return sorted(entry.name for entry in _train_dir().iterdir() if entry.name.endswith(".yaml"))


def train_config(name: str) -> Traversable:
    """The shipped config ``name`` (a file name, e.g. ``"pretrain_dense.yaml"``); its
    ``read_text()`` is the YAML. Raises :class:`ConfigError` naming the shipped configs when
    there is none of that name."""
    names = train_config_names()
    if name not in names:
        raise ConfigError(f"no shipped config {name!r} (shipped: {', '.join(names)})")
    return _train_dir().joinpath(name)


def config_source(value: str | os.PathLike | Traversable) -> Path | Traversable:
    """What ``--config VALUE`` reads: the file ``VALUE`` when it exists, else the shipped config
    of that name, else ``Path(VALUE)`` (reading it then fails, naming the path). A shipped
    config (a ``Traversable``) is returned as it is."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    path = Path(value)
    if not path.is_file() and path.name == str(value) and path.name in train_config_names():
        return train_config(path.name)
    return path
