"""Atomic file and directory writes: write under a temporary name in the same directory,
fsync, then ``os.replace`` onto the final name, so readers (and a resumed run after a
kill) see either the old content or the complete new one, never a partial file.

Temporary names are ``.<name>.<random hex>.tmp`` next to the target; a body that raises
leaves no temporary behind (a killed process may: readers skip dot-names, and the single
writer of a directory removes them with :func:`remove_temporaries` when it starts).
Directories are deleted atomically too (:func:`remove_tree`): renamed to a temporary name
first, so a kill during the deletion never leaves a half-deleted directory under its name.
Temporaries are created with the default (umask) permissions, like a plain ``open``.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cross4d_core.errors import FileError


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the body to create; on success it is
    fsynced and atomically replaces ``path``. Creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on success its files are fsynced
    and it is renamed to ``path``, which must not exist yet (or be an empty directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_tree(path: str | Path) -> None:
    """Delete the directory ``path``: rename it to a temporary name, then remove that, so
    ``path`` vanishes in one step even if the process is killed during the deletion."""
    path = Path(path)
    tmp = _temporary_name(path)
    os.replace(path, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporaries (``.*.tmp`` files and directories) a killed writer left in
    ``directory``; only its single writer may call this (a live writer's temporaries look the
    same). Returns what was removed."""
    removed = []
    for leftover in Path(directory).glob(".*.tmp"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def read_json(path: str | Path, error: type[FileError] = FileError) -> Any:
    """The parsed JSON file ``path``; a missing, unreadable or invalid file raises
    ``error(path, reason)`` (e.g. :class:`~cross4d_core.errors.DatasetFormatError`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(path, "missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(path, f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise error(path, f"unreadable ({exc.strerror or exc})") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically as JSON (indent 2, sorted keys, trailing newline)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
