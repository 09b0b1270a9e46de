"""Reading the results JSONs of ``cross4d pretrain | probe | transfer | finetune | segment | robustness``
and working out what each run was: objective, teacher, evaluated dataset, pretraining dataset.

A results file records some of this itself; the rest is read, in order, from the files the
run left next to it (the checkpoint's ``config.json`` and ``pretrain_results.json``, the
target cache's and the datasets' ``manifest.json``). :attr:`RunRecord.provenance` says
where each field came from, so the report can show it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cross4d_core.errors import FileError, ReportError
from cross4d_core.fileio import read_json
from cross4d_core.manifests import DATASET_FORMAT, TARGET_CACHE_FORMAT

PROTOCOLS = ("pretrain", "probe", "transfer", "finetune", "segment", "robustness")
RESULT_FILES = {f"{p}_results.json": p for p in PROTOCOLS}
OBJECTIVES_WITHOUT_TEACHER = ("none", "intra")




@dataclass
class RunRecord:
    """One results JSON and what it was run on.

    Attributes:
        path: the results file.
        protocol: ``pretrain``, ``probe``, ``transfer``, ``finetune`` or ``segment`` (from the file name).
        results: the parsed JSON.
        objective: pretraining objective (``none`` = random init) or None when unknown.
        teacher: teacher name of a ``global`` / ``dense`` run (None for teacher-free objectives or unknown).
        dataset: display name of the evaluated dataset (the pretraining dataset for ``pretrain``).
        pretrain_dataset: display name of the dataset the encoder was pretrained on (None: not pretrained / unknown).
        provenance: field -> where it was read from.
        dataset_root, pretrain_root: the recorded dataset paths the names were derived from.
    """

    path: Path
    protocol: str
    results: dict
    objective: str | None = None
    teacher: str | None = None
    dataset: str | None = None
    pretrain_dataset: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    dataset_root: str | None = None
    pretrain_root: str | None = None


def find_result_files(dirs: Iterable[str | Path]) -> list[Path]:
    """Every ``<protocol>_results.json`` under the directories (recursively), sorted, unique."""
    found: set[Path] = set()
    for d in dirs:
        root = Path(d)
        if root.is_file() and root.name in RESULT_FILES:
            found.add(root.resolve())
            continue
        if not root.is_dir():
            raise ReportError(f"results directory {root} does not exist")
        for name in RESULT_FILES:
            found.update(p.resolve() for p in root.rglob(name) if p.is_file())
    return sorted(found)


def _read_json(path: Path) -> dict | None:
    """A JSON object, or None when the file is missing, unreadable or not an object (a report
    lists what it can read and names the rest)."""
    try:
        value = read_json(path)
    except FileError:
        return None
    return value if isinstance(value, dict) else None


def _existing_dir(value, base: Path) -> Path | None:
    """``value`` as a directory: absolute, relative to the current directory, or to ``base``."""
    if not value or not isinstance(value, str):
        return None
    for candidate in (Path(value), base / value):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _checkpoint_meta(path: Path, results: dict) -> tuple[dict, Path | None]:
    """The encoder ``config.json`` belonging to a results file (its directory, the recorded
    checkpoint, or the parent directory, in that order)."""
    candidates = [path.parent]
    recorded = _existing_dir(results.get("checkpoint"), path.parent)
    if recorded is not None:
        candidates.append(recorded)
    candidates.append(path.parent.parent)
    for directory in candidates:
        meta = _read_json(directory / "config.json")
        if meta is not None and "model_config" in meta:
            return meta, directory
    return {}, None


def _teacher_name(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("name")
    if not value:
        return None
    value = str(value)
    return Path(value).name if value.startswith("/") else value


def _dataset_manifest(root: Path | None) -> dict | None:
    manifest = _read_json(root / "manifest.json") if root is not None else None
    return manifest if manifest is not None and manifest.get("format") == DATASET_FORMAT else None


def _resolve_pretrain_root(value, base: Path) -> tuple[Path | None, str | None, str]:
    """``(dataset root, teacher, how)`` of a recorded pretraining data path (a target cache
    whose manifest names its teacher and dataset root, or a dataset root)."""
    directory = _existing_dir(value, base)
    if directory is None:
        return None, None, "unresolved path"
    manifest = _read_json(directory / "manifest.json") or {}
    if manifest.get("format") == TARGET_CACHE_FORMAT:
        root = _existing_dir((manifest.get("dataset") or {}).get("root"), directory)
        return root, _teacher_name(manifest.get("teacher")), "target cache manifest.json"
    if manifest.get("format") == DATASET_FORMAT:
        return directory, None, "dataset manifest.json"
    return None, None, "no cross4d manifest.json"


def load_run(path: str | Path) -> RunRecord:
    """Parse one results file and resolve its objective, teacher and datasets."""
    path = Path(path)
    protocol = RESULT_FILES.get(path.name)
    if protocol is None:
        raise ReportError(f"{path}: not a results file (expected one of {sorted(RESULT_FILES)})")
    results = _read_json(path)
    if results is None:
        raise ReportError(f"{path}: unreadable or not a JSON object")
    run = RunRecord(path=path, protocol=protocol, results=results)
    meta, ckpt_dir = _checkpoint_meta(path, results)
    pretrain = _read_json(ckpt_dir / "pretrain_results.json") if ckpt_dir is not None else None
    if protocol == "pretrain":
        pretrain = results

    for source, record in (("results", results), ("checkpoint config.json", meta),
                           ("pretrain_results.json", pretrain or {})):
        if run.objective is None and record.get("objective"):
            run.objective, run.provenance["objective"] = str(record["objective"]), source
        if run.teacher is None and _teacher_name(record.get("teacher")):
            run.teacher, run.provenance["teacher"] = _teacher_name(record.get("teacher")), source

    pretrain_path = results.get("pretrain_data") or meta.get("pretrain_data") or \
        ((pretrain or {}).get("config") or {}).get("data", {}).get("path")
    if run.objective in OBJECTIVES_WITHOUT_TEACHER:
        run.teacher = None
        run.provenance.pop("teacher", None)
    if run.objective != "none" and pretrain_path:
        root, teacher, how = _resolve_pretrain_root(pretrain_path, path.parent)
        if run.teacher is None and teacher is not None and run.objective not in OBJECTIVES_WITHOUT_TEACHER:
            run.teacher, run.provenance["teacher"] = teacher, how
        if root is not None:
            run.pretrain_root = str(root)
            run.provenance["pretrain_dataset"] = how
        else:
            run.pretrain_root = str(pretrain_path)
            run.provenance["pretrain_dataset"] = f"path name ({how})"

    if protocol == "pretrain":
        run.dataset_root = run.pretrain_root
    elif results.get("dataset"):
        run.dataset_root = str(results["dataset"])
    return run


def _display_names(roots: Iterable[str]) -> dict[str, str]:
    """Dataset root -> its manifest ``source`` (``source:dirname`` where two roots share one)."""
    roots = sorted(set(roots))
    source = {}
    for root in roots:
        manifest = _dataset_manifest(Path(root)) if Path(root).is_dir() else None
        source[root] = str(manifest["source"]) if manifest and manifest.get("source") else Path(root).name
    names = {}
    for root in roots:
        clash = sum(1 for other in roots if source[other] == source[root]) > 1
        names[root] = f"{source[root]}:{Path(root).name}" if clash else source[root]
    return names


def collect_runs(dirs: Iterable[str | Path]) -> list[RunRecord]:
    """Load every results file under ``dirs`` and name datasets consistently across runs."""
    paths = find_result_files(dirs)
    if not paths:
        raise ReportError(f"no results files ({', '.join(sorted(RESULT_FILES))}) under {list(map(str, dirs))}")
    runs = [load_run(p) for p in paths]
    names = _display_names([r for run in runs for r in (run.dataset_root, run.pretrain_root) if r])
    for run in runs:
        run.dataset = names.get(run.dataset_root) if run.dataset_root else None
        run.pretrain_dataset = names.get(run.pretrain_root) if run.pretrain_root else None
    return runs


def finite(value) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
