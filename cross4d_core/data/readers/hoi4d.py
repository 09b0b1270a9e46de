"""HOI4D benchmark files: action segmentation (per-frame labels) and 4D semantic
segmentation (per-point labels).

Both releases are HDF5 files of whole sequences, with datasets
``pcd`` ``[N, T, P, 3]`` float (metres: Open3D back-projection of the mm depth) and
``center`` ``[N, T, 3]`` (per-frame centroid), plus

- action segmentation (hoi4d/HOI4D_ActionSeg ``datasets/AS_base.py``): ``train1.h5`` ..
  ``train4.h5``, ``test1.h5``, ``test2.h5`` with ``label`` ``[N, T]`` per-frame action labels
  (19 classes; T = 150, P = 2048). Each sequence's labels go to its video meta
  (``frame_labels``); the video label is -1 (a sequence holds several actions).
- 4D semantic segmentation (hoi4d/HOI4D_SemSeg ``datasets/seg_base.py``): ``train1.h5`` ..
  ``train4.h5``, ``test1_right.h5``, ``test2_right.h5`` with ``semantic`` ``[N, T, P]``
  per-point labels, stored as the dataset's per-point ``part`` array. The public code
  has 49 label values (0..48, ``index_to_class = [str(i)]``, ``num_classes=49``) and its
  evaluation skips 0 and 1; the only list of their names (``labels.xlsx`` in
  leolyliu/HOI4D-Instructions) is not published as text, so ``part_names`` are
  ``semantic_00`` .. ``semantic_48`` (recorded in the manifest).

``test_wolabel.h5`` (both releases: ``pcd`` and ``center``, no labels) converts as the
unlabelled split ``test_wolabel``. Any other ``.h5`` file under the source is not read
and is listed in the summary (``reported["skipped_files"]``).

Points are kept as stored, as both public loaders return them (``center`` is used only
inside their training augmentation); ``subtract_center=True`` subtracts each sequence's
first-frame centre instead (recorded in the manifest). Labels stored as floats must be
integral: a value such as 1.5 is refused naming the file, dataset, sequence and position.
Frames are 15 fps.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cross4d_core.data.readers.common import ConversionSummary, SourceFormatError, convert_items
from cross4d_core.msgconv.stamp import seconds_to_ns

if TYPE_CHECKING:
    import h5py  # imported lazily, where used (open_file)

FPS = 15.0
#: release -> (label dataset, number of label values, manifest source)
RELEASES = {
    "action": ("label", 19, "hoi4d"),
    "semantic": ("semantic", 49, "hoi4d-semseg"),
}
ACTION_NAMES = tuple(f"action_{k:02d}" for k in range(RELEASES["action"][1]))
SEMANTIC_NAMES = tuple(f"semantic_{k:02d}" for k in range(RELEASES["semantic"][1]))
UNLABELLED_FILE = "test_wolabel.h5"
_FILE = re.compile(r"(train\d*|test\d*(_right)?|test_wolabel)\.h5")


@dataclass
class BenchmarkFile:
    """One open benchmark ``.h5``: its datasets (h5py), release and split.

    Attributes:
        release: ``"action"`` or ``"semantic"``; None for an unlabelled file.
        labels: the ``label`` ``[N, T]`` or ``semantic`` ``[N, T, P]`` dataset, or None.
    """

    path: Path
    handle: h5py.File
    pcd: h5py.Dataset
    center: h5py.Dataset
    labels: h5py.Dataset | None
    release: str | None
    split: str

    def close(self) -> None:
        self.handle.close()


def find_files(src: Path) -> tuple[list[Path], list[Path]]:
    """``(benchmark files, other .h5 files)`` under ``src``, each sorted."""
    files = sorted(Path(src).rglob("*.h5"))
    return [p for p in files if _FILE.fullmatch(p.name)], [p for p in files if not _FILE.fullmatch(p.name)]


def open_file(path: Path) -> BenchmarkFile:
    """Open a benchmark ``.h5`` and check its datasets' shapes."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SourceFormatError(path, f"not a readable HDF5 file: {exc}") from exc
    try:
        unlabelled = path.name == UNLABELLED_FILE
        kinds = [r for r, (key, _, _) in RELEASES.items() if key in f]
        if len(kinds) > 1:
            raise SourceFormatError(path, "has both 'label' and 'semantic' datasets (one release per file)")
        missing = [k for k in ("pcd", "center") if k not in f]
        if not kinds and not unlabelled:
            missing.append("label (action segmentation) or semantic (semantic segmentation)")
        if missing:
            raise SourceFormatError(path, f"missing datasets {missing} (has {sorted(f.keys())})")
        pcd, center = f["pcd"], f["center"]
        if pcd.ndim != 4 or pcd.shape[3] != 3:
            raise SourceFormatError(path, f"pcd must be [N, T, P, 3], got {pcd.shape}")
        n, t, p = pcd.shape[:3]
        if center.shape[0] != n or center.shape[-1] != 3 or center.ndim not in (2, 3):
            raise SourceFormatError(path, f"center must be [N, T, 3] or [N, 3] for N={n}, got {center.shape}")
        release = kinds[0] if kinds else None
        labels = f[RELEASES[release][0]] if release else None
        if labels is not None and release == "action" and labels.shape != (n, t):
            raise SourceFormatError(path, f"label shape {labels.shape} != pcd's [N, T] = {(n, t)}")
        if labels is not None and release == "semantic" and labels.shape != (n, t, p):
            raise SourceFormatError(path, f"semantic shape {labels.shape} != pcd's [N, T, P] = {(n, t, p)}")
    except BaseException:
        f.close()
        raise
    split = "train" if path.name.startswith("train") else "test_wolabel" if unlabelled else "test"
    return BenchmarkFile(path, f, pcd, center, labels, release, split)


def integral_labels(path: Path, dataset: str, i: int, values: np.ndarray, num_classes: int) -> np.ndarray:
    """``values`` as int64 after checking they are whole numbers in ``0..num_classes-1``.

    Raises:
        SourceFormatError: naming the file, dataset, sequence ``i`` and the first bad position.
    """
    if values.dtype.kind == "f":
        bad = np.rint(values) != values  # NaN compares unequal too
        if bad.any():
            at = tuple(int(k) for k in np.argwhere(bad)[0])
            raise SourceFormatError(path, f"dataset {dataset!r}, sequence {i}: non-integral label "
                                          f"{values[at].item()!r} at {at}; labels must be whole numbers")
    elif values.dtype.kind not in "iu":
        raise SourceFormatError(path, f"dataset {dataset!r}: labels must be numbers, got dtype {values.dtype}")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise SourceFormatError(path, f"dataset {dataset!r}, sequence {i}: labels outside 0..{num_classes - 1}: "
                                      f"[{values.min()}, {values.max()}]")
    return values


def read_sequence(f: BenchmarkFile, i: int, subtract_center: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(points [T, P, 3] float32 metres, labels)`` of sequence ``i``; labels are ``[T]``
    (action), ``[T, P]`` (semantic) int64, or None (unlabelled file)."""
    try:
        points = np.asarray(f.pcd[i], dtype=np.float64)
        c = np.asarray(f.center[i], dtype=np.float64)
        raw = None if f.labels is None else np.asarray(f.labels[i])
    except OSError as exc:  # h5py reports a truncated / corrupt chunk as OSError
        raise SourceFormatError(f.path, f"sequence {i}: unreadable data: {exc}") from exc
    if not np.isfinite(points).all():
        raise SourceFormatError(f.path, f"sequence {i}: pcd has non-finite coordinates")
    labels = None
    if raw is not None:
        assert f.release is not None  # labels come with their release (open_file)
        key, num_classes, _ = RELEASES[f.release]
        labels = integral_labels(f.path, key, i, raw, num_classes)
    if subtract_center:
        points = points - (c[0] if c.ndim == 2 else c)
    return points.astype(np.float32), labels


def _release(files: list[BenchmarkFile], release: str) -> str:
    """The release of the files: ``release`` checked against them, or the one they all share."""
    found = sorted({f.release for f in files if f.release})
    if release != "auto":
        if release not in RELEASES:
            raise ValueError(f"hoi4d release must be 'auto' or one of {sorted(RELEASES)}, got {release!r}")
        if found and found != [release]:
            raise ValueError(f"hoi4d release={release!r}, but the files are {found}")
        return release
    if len(found) != 1:
        names = {f.path.name: f.release for f in files}
        raise ValueError(f"hoi4d: cannot tell the release ({'mixed' if found else 'only unlabelled'} files: "
                         f"{names}); convert one release per --src, or pass release=action|semantic")
    return found[0]


def convert(src: Path, out: Path, progress: bool = True, subtract_center: bool = False,
            release: str = "auto") -> dict:
    """Convert HOI4D action- or semantic-segmentation ``.h5`` files into the dataset format.

    Args:
        subtract_center: subtract each sequence's first-frame ``center`` (the public
            loaders do not; recorded in the manifest).
        release: ``auto`` (from the label datasets), ``action`` or ``semantic`` (needed when
            ``src`` holds only ``test_wolabel.h5``).
    """
    from cross4d_core.data.format import DatasetWriter

    paths, others = find_files(Path(src))
    if not paths:
        raise FileNotFoundError(f"{src}: no HOI4D train*.h5 / test*.h5 / {UNLABELLED_FILE} files")
    summary = ConversionSummary(source="hoi4d", out=str(out))
    if others:
        summary.reported["skipped_files"] = [str(p) for p in others]
    files: list[BenchmarkFile] = []
    try:
        for path in paths:
            files.append(open_file(path))
        kind = _release(files, release)
        source = RELEASES[kind][2]
        labels_note = ("per-frame action labels in video meta 'frame_labels'; video label -1" if kind == "action"
                       else "per-point semantic labels in 'part' (part_names; the public evaluation skips 0 and 1); "
                            "video label -1")
        normalisation = {
            "release": f"{kind} segmentation",
            "source_units": "m",
            "scale_to_m": 1.0,
            "subtract_center": "first frame's center" if subtract_center else None,
            "labels": labels_note,
            "unlabelled_split": f"{UNLABELLED_FILE} -> split 'test_wolabel' (no labels)",
            "fps": FPS,
        }
        summary.source = source
        with DatasetWriter(out, source=source, label_names=ACTION_NAMES if kind == "action" else [], units="m",
                           normalisation=normalisation,
                           part_names=SEMANTIC_NAMES if kind == "semantic" else None) as writer:
            for f in files:
                def write_one(video_id: str, i: int, f: BenchmarkFile = f) -> int:
                    points, labels = read_sequence(f, i, subtract_center)
                    meta = {"file": f.path.name, "index": i}
                    if kind == "action" and labels is not None:
                        meta["frame_labels"] = labels.tolist()
                    writer.add_video(video_id, points, label=-1, split=f.split,
                                     stamps_ns=seconds_to_ns(np.arange(len(points)) / FPS), meta=meta,
                                     part=labels if kind == "semantic" else None)
                    return len(points)

                items = [(f"{f.path.stem}_{i:05d}", i) for i in range(f.pcd.shape[0])]
                convert_items(writer, items, write_one, summary, progress, f"hoi4d {f.path.name}", total=len(items))
    finally:
        for f in files:
            f.close()
    return summary.as_dict()
