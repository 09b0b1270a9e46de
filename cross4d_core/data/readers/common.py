"""Shared plumbing of the dataset readers: the error type, depth back-projection, the
legacy object-array ``.npz`` loader and the resumable, progress-reporting conversion loop."""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from cross4d_core.errors import SourceFormatError

ItemT = TypeVar("ItemT")


def backproject_depth(depth: np.ndarray, scale: float) -> list[np.ndarray]:
    """Back-project depth maps the way the public MSR-Action3D / NTU-60 loaders do.

    Pixels with depth > 0 become ``x = (u - W/2) z / f``, ``y = (v - H/2) z / f``, ``z``
    with f = 280 (:func:`cross4d_core.geometry.projection.msr_ntu_camera`) and
    ``z = depth * scale``.

    Args:
        depth: ``[T, H, W]`` depth maps (any numeric dtype, source units).
        scale: factor from source depth units to metres (0.001 for millimetres).

    Returns:
        T arrays ``[n_t, 3]`` float32 in metres, pixels in row-major order.
    """
    import torch

    from cross4d_core.geometry.projection import depth_to_points, msr_ntu_camera

    T, H, W = depth.shape
    depth_m = torch.from_numpy(depth.astype(np.float64) * scale)
    points, valid = depth_to_points(depth_m, msr_ntu_camera(W, H))
    counts = valid.reshape(T, -1).sum(1).tolist()
    return [p.numpy() for p in torch.split(points[valid], counts)]


class _NumericArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global (a function, a class) in
    the pickle stream is refused before it can run."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a point-cloud array")
        return super().find_class(module, name)


def _read_npz_member(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of an ``.npz``; an object array is unpickled with numpy types only."""
    with zipfile.ZipFile(path) as archive:
        member = f"{key}.npy"
        if member not in archive.namelist():
            keys = [n.removesuffix(".npy") for n in archive.namelist()]
            raise SourceFormatError(path, f"no key {key!r} (keys: {keys})")
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            header_readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in header_readers:
                raise SourceFormatError(path, f"{member}: unsupported .npy format version {version}")
            shape, _, dtype = header_readers[version](f)
            if not dtype.hasobject:
                f.seek(0)
                return np.lib.format.read_array(f, allow_pickle=False)
            arr = _NumericArrayUnpickler(f).load()
    if not isinstance(arr, np.ndarray) or arr.shape != shape:
        raise SourceFormatError(path, f"{key!r}: pickled payload is not the [{shape}] array its header declares")
    return arr


def load_object_frames(path: Path, key: str, scale: float) -> list[np.ndarray]:
    """Load a legacy ``.npz`` whose ``key`` is an object array of per-frame ``[N_t, 3]`` arrays
    (the MSR-Action3D and NTU-60 legacy formats) and scale it to metres.

    Object arrays are pickles: only for this documented legacy layout do we unpickle, and
    then with an unpickler that admits numpy arrays alone (``np.load(allow_pickle=True)``
    would run whatever the file names); every frame is then checked to be numeric ``[N, 3]``.
    """
    try:
        arr = _read_npz_member(path, key)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        if isinstance(exc, SourceFormatError):
            raise
        raise SourceFormatError(path, f"unreadable .npz: {type(exc).__name__}: {exc}") from exc
    items: Iterable[object] = arr
    if arr.dtype != object and arr.ndim == 3:
        items = list(arr)
    elif arr.dtype != object or arr.ndim != 1:
        raise SourceFormatError(path, f"{key!r} must be a 1-D object array of frames, got {arr.dtype} {arr.shape}")
    frames = []
    for t, frame in enumerate(items):
        if not (isinstance(frame, np.ndarray) and frame.dtype.kind in "fiu" and frame.ndim == 2
                and frame.shape[1] == 3):
            desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise SourceFormatError(path, f"{key}[{t}] must be a numeric [N, 3] array, got {desc}")
        if not np.isfinite(frame).all():
            raise SourceFormatError(path, f"{key}[{t}] has non-finite coordinates")
        frames.append((frame.astype(np.float64) * scale).astype(np.float32))
    if not frames:
        raise SourceFormatError(path, f"{key!r} holds no frames")
    return frames


@dataclass
class ConversionSummary:
    """What one ``convert`` run did (returned as a dict by the readers); ``dataset`` holds the
    writer's counts of everything the output now contains (this and earlier runs);
    ``reported`` what a reader noticed in the source and wants the user to see (e.g.
    ``{"missing_frames": {video_id: [3]}}``, ``{"skipped_files": [...]}``)."""

    source: str
    out: str
    written: int = 0
    skipped_existing: int = 0
    frames: int = 0
    dataset: dict = field(default_factory=dict)
    reported: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "out": self.out,
            "written": self.written,
            "skipped_existing": self.skipped_existing,
            "frames": self.frames,
            "dataset": self.dataset,
            "reported": self.reported,
        }


def convert_items(
    writer,
    items: Iterable[tuple[str, ItemT]],
    write_one: Callable[[str, ItemT], int],
    summary: ConversionSummary,
    progress: bool,
    desc: str,
    total: int | None = None,
) -> None:
    """Run ``write_one(video_id, item) -> frames written`` over ``items``, skipping videos
    the writer already holds (so an interrupted conversion resumes where it stopped)."""
    from tqdm import tqdm

    for video_id, item in tqdm(items, desc=desc, total=total, disable=not progress, unit="video"):
        if writer.has_video(video_id):
            summary.skipped_existing += 1
            continue
        summary.frames += write_one(video_id, item)
        summary.written += 1
    summary.dataset = writer.summary()

