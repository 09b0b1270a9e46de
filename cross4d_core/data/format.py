"""The on-disk 4D dataset format every source is converted to and training reads.

Layout (one directory per video; every array a plain ``.npy`` opened with
``mmap_mode='r'``, so a clip is read in O(1) without loading the video)::

    ROOT/manifest.json                 source, units, normalisation, label / part names,
                                       counts, and the video index (id, label, split,
                                       subject, frames, points, empty frames)
    ROOT/videos/<id>/points.npy        [P, 3] float32 metres, all frames concatenated
    ROOT/videos/<id>/offsets.npy       [T + 1] int64: frame t is points[offsets[t]:offsets[t+1]]
    ROOT/videos/<id>/stamps.npy        [T] int64 nanoseconds (format version 1: float64 seconds)
    ROOT/videos/<id>/images.npy        [T, H, W, 3] uint8 RGB                 (optional)
    ROOT/videos/<id>/camera_K.npy      [T, 3, 3] float64 intrinsics           (with images)
    ROOT/videos/<id>/camera_D.npy      [T, nd] float64 distortion             (with images)
    ROOT/videos/<id>/camera_T.npy      [T, 4, 4] float64 T_cam_from_points    (with images)
    ROOT/videos/<id>/part.npy          [P] int16/int32 part label per point   (optional)
    ROOT/videos/<id>/track.npy         [P] int32/int64 track id per point     (optional)
    ROOT/videos/<id>/meta.json         labels, sizes + SHA-256 of every file above, camera
                                       size / model, free-form source metadata

Writing is atomic per video (a temporary directory renamed into place once complete) and
resumable: reopening a root keeps every finished video (``has_video``) and removes
leftovers of a killed run. ``manifest.json`` is rewritten atomically on close; while a
writer is open (or after it was killed) it says ``"complete": false`` and
:meth:`Dataset4D.open` refuses it. Every file's size is checked when a video is first
opened (full SHA-256 check with ``verify="checksum"`` or :meth:`Dataset4D.verify`); a
mismatch raises :class:`DatasetFormatError` naming the file.

Frames with zero points are stored as they are and counted (``empty_frames``); the clip
sampler replaces them (see :mod:`cross4d_core.data.clips`).

Format versions: 2 stores stamps as int64 nanoseconds (the stamps of the frames, bit-exact
from a ROS header); datasets of version 1 (float64 seconds) are still read, their stamps
converted to the nearest nanosecond (:attr:`VideoRecord.stamps_ns`).
"""
from __future__ import annotations

import hashlib
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cross4d_core.errors import DatasetFormatError
from cross4d_core.fileio import atomic_directory, read_json, remove_temporaries, write_json_atomic
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.manifests import DATASET_FORMAT
from cross4d_core.msgconv.stamp import seconds_to_ns
from cross4d_core.types import FrameSequence

FORMAT_NAME = DATASET_FORMAT
FORMAT_VERSION = 2
#: Versions :meth:`Dataset4D.open` reads (1: stamps in float64 seconds).
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")


def _read_json(path: Path) -> dict:
    return read_json(path, DatasetFormatError)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _small_int(a: np.ndarray, field: str, video_id: str) -> np.ndarray:
    a = np.asarray(a)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"add_video({video_id!r}): {field} must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    for dt in (np.int16, np.int32):
        info = np.iinfo(dt)
        if not a.size or (a.min() >= info.min and a.max() <= info.max):
            return a.astype(dt)
    return a


def _per_point(values, counts: np.ndarray, field: str, video_id: str) -> np.ndarray:
    """Concatenate per-frame per-point values (list of [n_t] or a [T, N] array) to [P]."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        values = list(values)
    if len(values) != len(counts):
        raise ValueError(f"add_video({video_id!r}): {field} has {len(values)} frames, points have {len(counts)}")
    lens = np.array([len(v) for v in values])
    if not np.array_equal(lens, counts):
        t = int(np.nonzero(lens != counts)[0][0])
        raise ValueError(f"add_video({video_id!r}): {field}[{t}] has {lens[t]} values for {counts[t]} points")
    return _small_int(np.concatenate([np.asarray(v).reshape(-1) for v in values]) if len(values) else
                      np.zeros(0, np.int64), field, video_id)


class DatasetWriter:
    """Writes (or resumes writing) a dataset at ``root``. Use as a context manager.

    Args:
        root: dataset directory (created).
        source: where the data comes from (``"synthetic"``, ``"msr-action3d"``, ...).
        label_names: class names; labels are indices into this list (-1 = unlabelled).
        units: unit of the stored points (always ``"m"`` for our readers).
        normalisation: every transformation applied to the source data (recorded as is).
        part_names: optional names of per-point part labels.
        description: free text for the manifest.

    Reopening an existing root requires the same ``source`` and ``label_names``.
    """

    def __init__(self, root: str | Path, source: str, label_names: Sequence[str], units: str = "m",
                 normalisation: dict | None = None, part_names: Sequence[str] | None = None,
                 description: str = "") -> None:
        self.root = Path(root)
        self.videos_dir = self.root / "videos"
        self.header: dict[str, Any] = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "source": str(source), "units": str(units),
            "normalisation": dict(normalisation or {}), "label_names": [str(n) for n in label_names],
            "part_names": None if part_names is None else [str(n) for n in part_names],
            "description": description,
        }
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = self.root / MANIFEST
        if manifest_path.exists():
            old = _read_json(manifest_path)
            for key in ("source", "label_names"):
                if old.get(key) != self.header[key]:
                    raise ValueError(f"{manifest_path}: existing dataset has {key}={old.get(key)!r}, "
                                     f"writer was opened with {self.header[key]!r}")
        remove_temporaries(self.videos_dir)  # temporaries of a killed run
        self._videos: dict[str, dict] = {}
        for meta_path in sorted(self.videos_dir.glob("*/meta.json")):
            meta = _read_json(meta_path)
            self._videos[meta["id"]] = meta
        self._closed = False
        self._write_manifest(complete=False)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)

    def has_video(self, video_id: str) -> bool:
        """True when ``video_id`` was completely written (by this or an earlier run)."""
        return video_id in self._videos

    @property
    def num_videos(self) -> int:
        return len(self._videos)

    def add_video(self, video_id: str, frames, label: int | None, split: str, subject: int | None = None,
                  stamps_ns=None, images=None, cameras=None, part=None, track=None,
                  meta: dict | None = None) -> dict:
        """Write one video atomically.

        Args:
            video_id: unique id (letters, digits, ``_ . -``); also the directory name.
            frames: list of T ``[n_t, 3]`` arrays in metres (n_t may vary, may be 0), or ``[T, N, 3]``.
            label: class index in ``[0, len(label_names))`` or -1 / None for unlabelled.
            split: split name (``"train"``, ``"test"``, ...).
            subject: optional performer / identity id.
            stamps_ns: ``[T]`` integer nanoseconds (default: the frame index, in seconds).
            images: optional ``[T, H, W, 3]`` uint8 RGB.
            cameras: a :class:`PinholeCamera` (all frames) or a list of T; required with images.
            part, track: optional per-point int labels (list of T ``[n_t]`` or ``[T, N]``).
            meta: JSON-serialisable source metadata.

        Returns:
            The video's index entry.
        """
        if self._closed:
            raise RuntimeError("DatasetWriter.add_video: writer is closed")
        if not isinstance(video_id, str) or not _VIDEO_ID.match(video_id):
            raise ValueError(f"add_video: video id {video_id!r} must match {_VIDEO_ID.pattern}")
        if video_id in self._videos:
            raise ValueError(f"add_video: video {video_id!r} already exists in {self.root} (check has_video)")
        label = -1 if label is None else int(label)
        if not -1 <= label < len(self.header["label_names"]):
            raise ValueError(f"add_video({video_id!r}): label {label} outside [-1, {len(self.header['label_names'])})")
        if not isinstance(split, str) or not split:
            raise ValueError(f"add_video({video_id!r}): split must be a non-empty string, got {split!r}")

        frame_list = list(frames)
        T = len(frame_list)
        if T == 0:
            raise ValueError(f"add_video({video_id!r}): no frames")
        arrays = []
        for t, fr in enumerate(frame_list):
            fr = np.asarray(fr)
            if fr.ndim != 2 or fr.shape[1] != 3:
                raise ValueError(f"add_video({video_id!r}): frame {t} has shape {fr.shape}, expected [n, 3]")
            if not np.isfinite(fr).all():
                raise ValueError(f"add_video({video_id!r}): frame {t} has NaN/Inf coordinates")
            arrays.append(fr.astype(np.float32, copy=False))
        counts = np.array([len(a) for a in arrays], np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        files: dict[str, np.ndarray] = {
            "points": np.concatenate(arrays) if offsets[-1] else np.zeros((0, 3), np.float32),
            "offsets": offsets,
        }
        stamps = seconds_to_ns(np.arange(T)) if stamps_ns is None else np.asarray(stamps_ns).reshape(-1)
        if stamps.shape != (T,) or stamps.dtype.kind not in "iu":
            raise ValueError(f"add_video({video_id!r}): stamps_ns must be {T} integer nanoseconds, got "
                             f"{stamps.dtype}{list(stamps.shape)}")
        files["stamps"] = stamps.astype(np.int64)
        camera_info = None
        if images is not None:
            images = np.asarray(images)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != T or images.shape[3] != 3:
                raise ValueError(f"add_video({video_id!r}): images must be [{T}, H, W, 3] uint8, "
                                 f"got {images.shape} {images.dtype}")
            files["images"] = images
            if cameras is None:
                raise ValueError(f"add_video({video_id!r}): images need cameras")
        if cameras is not None:
            cams = [cameras] * T if isinstance(cameras, PinholeCamera) else list(cameras)
            if len(cams) != T:
                raise ValueError(f"add_video({video_id!r}): {len(cams)} cameras for {T} frames")
            shapes = {(c.width, c.height, c.distortion_model, c.D.size) for c in cams}
            if len(shapes) != 1:
                raise ValueError(f"add_video({video_id!r}): cameras differ in size / distortion model: {shapes}")
            w, h, model, _ = shapes.pop()
            if images is not None and images.shape[1:3] != (h, w):
                raise ValueError(f"add_video({video_id!r}): images are {images.shape[2]}x{images.shape[1]}, "
                                 f"cameras {w}x{h}")
            camera_info = {"width": w, "height": h, "distortion_model": model}
            files["camera_K"] = np.stack([c.K for c in cams])
            files["camera_D"] = np.stack([c.D for c in cams]).reshape(T, -1)
            files["camera_T"] = np.stack([c.T_cam_from_points for c in cams])
        if part is not None:
            files["part"] = _per_point(part, counts, "part", video_id)
        if track is not None:
            files["track"] = _per_point(track, counts, "track", video_id)

        with atomic_directory(self.videos_dir / video_id) as tmp:
            file_meta = {}
            for name, arr in files.items():
                path = tmp / f"{name}.npy"
                np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
                file_meta[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path),
                                   "dtype": str(arr.dtype), "shape": list(arr.shape)}
            entry = {
                "id": video_id, "label": label, "split": split,
                "subject": None if subject is None else int(subject),
                "num_frames": T, "num_points": int(offsets[-1]),
                "empty_frames": np.nonzero(counts == 0)[0].tolist(),
                "has_images": "images" in files, "has_part": "part" in files, "has_track": "track" in files,
            }
            record = {**entry, "files": file_meta, "camera": camera_info, "meta": meta or {}}
            write_json_atomic(tmp / "meta.json", record)
        self._videos[video_id] = record
        return entry

    def summary(self) -> dict:
        """Counts of what the dataset holds now."""
        return _counts(list(self._videos.values()), len(self.header["label_names"]))

    def close(self, complete: bool = True) -> None:
        """Write the manifest (``complete`` = every video the caller meant to write is in)."""
        if not self._closed:
            self._write_manifest(complete=complete)
            self._closed = True

    def _write_manifest(self, complete: bool) -> None:
        index_keys = ("id", "label", "split", "subject", "num_frames", "num_points", "empty_frames",
                      "has_images", "has_part", "has_track")
        videos = [{k: self._videos[v][k] for k in index_keys} for v in sorted(self._videos)]
        manifest = {**self.header, "complete": bool(complete),
                    "counts": _counts(videos, len(self.header["label_names"])),
                    "splits": sorted({v["split"] for v in videos}), "videos": videos}
        write_json_atomic(self.root / MANIFEST, manifest)


def _counts(videos: list[dict], num_labels: int) -> dict:
    by_split: dict[str, dict] = {}
    by_label = [0] * num_labels
    for v in videos:
        s = by_split.setdefault(v["split"], {"videos": 0, "frames": 0})
        s["videos"] += 1
        s["frames"] += v["num_frames"]
        if v["label"] >= 0:
            by_label[v["label"]] += 1
    return {
        "videos": len(videos), "frames": sum(v["num_frames"] for v in videos),
        "points": sum(v["num_points"] for v in videos),
        "empty_frames": sum(len(v["empty_frames"]) for v in videos),
        "by_split": by_split, "videos_per_label": by_label,
        "unlabelled_videos": sum(v["label"] < 0 for v in videos),
    }


@dataclass
class VideoRecord:
    """One video of a :class:`Dataset4D`; arrays are memory-mapped on first use."""

    root: Path
    entry: dict
    verify: str = "size"

    def __post_init__(self) -> None:
        self.dir = self.root / "videos" / self.entry["id"]
        self.meta = _read_json(self.dir / "meta.json")
        self._arrays: dict[str, np.ndarray] = {}
        for key in ("num_frames", "num_points", "label", "split"):
            if self.meta.get(key) != self.entry[key]:
                raise DatasetFormatError(self.dir / "meta.json", f"{key}={self.meta.get(key)!r} but the manifest "
                                                                 f"says {self.entry[key]!r}")

    @property
    def id(self) -> str:
        return self.entry["id"]

    @property
    def label(self) -> int:
        return int(self.entry["label"])

    @property
    def split(self) -> str:
        return self.entry["split"]

    @property
    def subject(self) -> int | None:
        return self.entry["subject"]

    @property
    def num_frames(self) -> int:
        return int(self.entry["num_frames"])

    def has(self, name: str) -> bool:
        return name in self.meta["files"]

    def array(self, name: str) -> np.ndarray:
        """The memory-mapped array ``name`` (after the size / checksum check)."""
        if name not in self._arrays:
            path = self.dir / f"{name}.npy"
            spec = self.meta["files"].get(name)
            if spec is None:
                raise KeyError(f"video {self.id!r} has no {name!r} array (has {sorted(self.meta['files'])})")
            check_file(path, spec, self.verify)
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, SyntaxError, EOFError, tokenize.TokenError) as e:  # a garbled header
                raise DatasetFormatError(path, f"cannot be read as .npy ({type(e).__name__}: {e})") from None
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                raise DatasetFormatError(path, f"holds {arr.dtype}{list(arr.shape)}, meta.json says "
                                               f"{spec['dtype']}{spec['shape']}")
            self._arrays[name] = arr
        return self._arrays[name]

    @property
    def offsets(self) -> np.ndarray:
        return self.array("offsets")

    def frame(self, t: int) -> np.ndarray:
        """``[n_t, 3]`` float32 points of frame ``t`` (a memory-mapped view)."""
        o = self.offsets
        return self.array("points")[o[t]:o[t + 1]]

    def frame_values(self, name: str, t: int) -> np.ndarray:
        """Per-point values (``part`` / ``track``) of frame ``t``."""
        o = self.offsets
        return self.array(name)[o[t]:o[t + 1]]

    @property
    def stamps_ns(self) -> np.ndarray:
        """``[T]`` int64 frame stamps (a version 1 dataset's float64 seconds, to the nearest ns)."""
        stamps = self.array("stamps")
        return seconds_to_ns(stamps) if stamps.dtype.kind == "f" else np.asarray(stamps, dtype=np.int64)

    @property
    def images(self) -> np.ndarray | None:
        return self.array("images") if self.has("images") else None

    def cameras(self, frames: Sequence[int] | np.ndarray | None = None) -> list[PinholeCamera] | None:
        if not self.has("camera_K"):
            return None
        idx = range(self.num_frames) if frames is None else frames
        K, D, T = self.array("camera_K"), self.array("camera_D"), self.array("camera_T")
        c = self.meta["camera"]
        return [PinholeCamera(K=K[t], width=c["width"], height=c["height"], distortion_model=c["distortion_model"],
                              D=D[t], T_cam_from_points=T[t]) for t in idx]

    def sequence(self) -> FrameSequence:
        """The whole video as a :class:`FrameSequence` (points are memory-mapped views)."""
        return FrameSequence(points=[self.frame(t) for t in range(self.num_frames)], stamps_ns=self.stamps_ns,
                             images=self.images, cameras=self.cameras(),
                             label=self.label if self.label >= 0 else None)


def check_file(path: Path, spec: dict, level: str = "size") -> None:
    """Raise :class:`DatasetFormatError` when ``path`` does not match its recorded size
    (``level="size"``) or SHA-256 (``level="checksum"``)."""
    if level == "none":
        return
    if level not in ("size", "checksum"):
        raise ValueError(f"verify level must be 'none', 'size' or 'checksum', got {level!r}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetFormatError(path, "missing") from None
    if size != spec["bytes"]:
        raise DatasetFormatError(path, f"has {size} bytes, expected {spec['bytes']} (truncated or corrupt)")
    if level == "checksum" and _sha256(path) != spec["sha256"]:
        raise DatasetFormatError(path, "SHA-256 does not match meta.json (corrupt)")


class Dataset4D:
    """Read access to a dataset written by :class:`DatasetWriter`.

    ``manifest`` is the parsed ``manifest.json``; ``video(i)`` returns a lazily read
    :class:`VideoRecord` (videos are ordered by id; a small per-process cache keeps
    recently opened videos' memory maps).
    """

    def __init__(self, root: Path, manifest: dict, verify: str = "size", cache_size: int = 256) -> None:
        self.root = root
        self.manifest = manifest
        self.verify_level = verify
        self._videos = manifest["videos"]
        self._index = {v["id"]: i for i, v in enumerate(self._videos)}
        self._cache: dict[int, VideoRecord] = {}
        self._cache_size = cache_size

    @classmethod
    def open(cls, root: str | Path, verify: str = "size", allow_incomplete: bool = False) -> Dataset4D:
        """Open ``root``. ``verify``: ``"size"`` (default, cheap, checked per video on first
        access), ``"checksum"`` (SHA-256 per file on first access) or ``"none"``."""
        root = Path(root)
        path = root / MANIFEST
        manifest = _read_json(path)
        if manifest.get("format") != FORMAT_NAME:
            raise DatasetFormatError(path, f"not a {FORMAT_NAME} manifest (format={manifest.get('format')!r})")
        if manifest.get("version") not in READABLE_VERSIONS:
            raise DatasetFormatError(path, f"format version {manifest.get('version')!r}, this code reads "
                                           f"{list(READABLE_VERSIONS)}")
        if not manifest.get("complete") and not allow_incomplete:
            raise DatasetFormatError(path, "dataset is incomplete (its writer did not finish); rerun the "
                                           "conversion to resume it, or open with allow_incomplete=True")
        return cls(root, manifest, verify)

    def __getstate__(self) -> dict:
        # Worker processes reopen their own memory maps instead of pickling mapped data.
        return {**self.__dict__, "_cache": {}}

    def __len__(self) -> int:
        return len(self._videos)

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["label_names"])

    @property
    def entries(self) -> list[dict]:
        """The manifest's video index (id, label, split, subject, num_frames, ...)."""
        return self._videos

    def index_of(self, video_id: str) -> int:
        """Position of ``video_id`` in the (id-sorted) video index; KeyError naming the dataset if absent."""
        if video_id not in self._index:
            raise KeyError(f"{self.root}: no video {video_id!r} ({len(self._index)} videos)")
        return self._index[video_id]

    def video(self, i: int) -> VideoRecord:
        if not 0 <= i < len(self._videos):
            raise IndexError(f"video index {i} out of range [0, {len(self._videos)})")
        rec = self._cache.get(i)
        if rec is None:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            rec = self._cache[i] = VideoRecord(self.root, self._videos[i], self.verify_level)
        return rec

    def verify(self, level: str = "checksum") -> int:
        """Check every file of every video; returns the number of files checked."""
        n = 0
        for entry in self._videos:
            vdir = self.root / "videos" / entry["id"]
            meta = _read_json(vdir / "meta.json")
            for name, spec in meta["files"].items():
                check_file(vdir / f"{name}.npy", spec, level)
                n += 1
        return n
