"""HOI4D action-segmentation reader (``train1.h5``..``train4.h5``, ``test1.h5``, ``test2.h5``).

Layout (DATA-FORMATS.md): datasets ``pcd`` ``[N, 150, 2048, 3]`` float (metres, camera
frame), ``center`` ``[N, 150, 3]`` (the public loaders subtract the first frame's
centre) and ``label`` ``[N, 150]`` int64 per-frame action labels (19 classes).

Every sequence becomes one video with its per-frame labels kept (``frame_labels``
in the video meta; the video label is left unset, -1, since one sequence holds
several actions). Frames are 15 fps.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cross4d_core.data.readers.common import ConversionSummary, SourceFormatError, convert_items

NUM_CLASSES = 19
FPS = 15.0
_FILE = re.compile(r"(train|test)\d*\.h5")


def find_files(src: Path) -> list[Path]:
    """Sorted ``train*.h5`` / ``test*.h5`` files under ``src``."""
    return sorted(p for p in Path(src).rglob("*.h5") if _FILE.fullmatch(p.name))


def open_file(path: Path):
    """Open a benchmark ``.h5`` and check its datasets; returns ``(h5 file, pcd, center, label)``."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SourceFormatError(path, f"not a readable HDF5 file: {exc}") from exc
    try:
        missing = [k for k in ("pcd", "center", "label") if k not in f]
        if missing:
            raise SourceFormatError(path, f"missing datasets {missing} (has {sorted(f.keys())})")
        pcd, center, label = f["pcd"], f["center"], f["label"]
        n, t = pcd.shape[:2] if pcd.ndim == 4 else (None, None)
        if pcd.ndim != 4 or pcd.shape[3] != 3:
            raise SourceFormatError(path, f"pcd must be [N, T, P, 3], got {pcd.shape}")
        if label.shape != (n, t):
            raise SourceFormatError(path, f"label shape {label.shape} != pcd's [N, T] = {(n, t)}")
        if center.shape[0] != n or center.shape[-1] != 3 or center.ndim not in (2, 3):
            raise SourceFormatError(path, f"center must be [N, T, 3] or [N, 3] for N={n}, got {center.shape}")
    except BaseException:
        f.close()
        raise
    return f, pcd, center, label


def read_sequence(path: Path, pcd, center, label, i: int, subtract_center: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(points [T, P, 3] float32 metres, frame labels [T] int64)`` of sequence ``i``."""
    try:
        points = np.asarray(pcd[i], dtype=np.float32)
        frame_labels = np.asarray(label[i], dtype=np.int64)
        c = np.asarray(center[i], dtype=np.float32)
    except OSError as exc:  # h5py reports a truncated / corrupt chunk as OSError
        raise SourceFormatError(path, f"sequence {i}: unreadable data: {exc}") from exc
    if not np.isfinite(points).all():
        raise SourceFormatError(path, f"sequence {i}: pcd has non-finite coordinates")
    if frame_labels.min() < 0 or frame_labels.max() >= NUM_CLASSES:
        raise SourceFormatError(
            path, f"sequence {i}: labels outside 0..{NUM_CLASSES - 1}: [{frame_labels.min()}, {frame_labels.max()}]"
        )
    if subtract_center:
        points = points - (c[0] if c.ndim == 2 else c)
    return points, frame_labels


def convert(src: Path, out: Path, progress: bool = True, subtract_center: bool = True) -> dict:
    """Convert the HOI4D action-segmentation ``.h5`` files into the dataset format.

    Args:
        subtract_center: subtract each sequence's first-frame ``center`` (as the public
            loaders do; recorded in the manifest).
    """
    from cross4d_core.data.format import DatasetWriter

    files = find_files(Path(src))
    if not files:
        raise FileNotFoundError(f"{src}: no HOI4D train*.h5 / test*.h5 files")
    normalisation = {
        "source_units": "m",
        "scale_to_m": 1.0,
        "subtract_center": "first frame's center" if subtract_center else None,
        "labels": "per-frame action labels in video meta 'frame_labels'; video label -1",
    }
    summary = ConversionSummary(source="hoi4d", out=str(out))
    label_names = [f"action_{k:02d}" for k in range(NUM_CLASSES)]
    with DatasetWriter(out, source="hoi4d", label_names=label_names, units="m",
                       normalisation=normalisation) as writer:
        for path in files:
            h5, pcd, center, label = open_file(path)
            with h5:
                split = "train" if path.name.startswith("train") else "test"

                def write_one(video_id: str, i: int) -> int:
                    points, frame_labels = read_sequence(path, pcd, center, label, i, subtract_center)
                    writer.add_video(
                        video_id, points, label=-1, split=split, stamps=np.arange(len(points)) / FPS,
                        meta={"file": path.name, "index": i, "frame_labels": frame_labels.tolist()},
                    )
                    return len(points)

                items = [(f"{path.stem}_{i:05d}", i) for i in range(pcd.shape[0])]
                convert_items(writer, items, write_one, summary, progress, f"hoi4d {path.name}", total=len(items))
    return summary.as_dict()
