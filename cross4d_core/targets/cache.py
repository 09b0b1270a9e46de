"""The fp16 teacher-target cache written by ``cross4d precompute`` (and ``distill_node``) and read by training.

The cache stores each source frame once per video, and of each frame's teacher patch grid
only the patches that some visible point lands in (a token-granularity cache): clips are
lists of rows into their video's frames, and a point's target is one row of a compact
feature table. Overlapping clips (stride 1 over a video) therefore cost a few integers each.

Layout of a cache directory::

    cache_config.json         settings the cache was started with (checked on resume)
    projection.safetensors    the fixed C -> d_p projection (weight, mean; kind, seed)
    shards/shard-000000/      one directory per ``shard_size`` videos, written atomically
                              (temp dir + rename): a killed run resumes at the first missing shard
      frame level (F = the shard's stored frames, video after video):
        points.npy        [F, N, 3]  f32  the frame's N sampled points
        target.npy        [F, N]     i32  row of features.npy holding the point's target; -1 = invisible
        frame.npy         [F]        i64  source frame index in its video
      feature level (K = the distinct (slot, patch) cells some visible point uses):
        features.npy      [K, d_p]   f16  projected teacher features
        cell.npy          [K]        i32  slot * P + patch of each row, in its video's slot numbering
                                          (slot = view * ceil(F_video / tubelet) + f // tubelet,
                                          camera-major; P = grid_h * grid_w, row-major patches)
      video level (v videos):
        video_ids.npy     [v]        i64  dataset video index
        video_frames.npy  [v + 1]    i64  video j holds frames video_frames[j]:video_frames[j + 1]
        video_features.npy[v + 1]    i64  ... and feature rows video_features[j]:video_features[j + 1]
      clip level (n clips):
        clip_frames.npy   [n, T]     i32  the rows of points.npy / target.npy making up the clip
        clip_target.npy   [n, d_p]   f32  projection of the mean teacher feature over the
                                          (slot, patch) cells holding a visible point of the clip
        label.npy video.npy start.npy clip.npy  [n] i64 (clip = index in the clip dataset)
      report.json         sizes of the four levels, bytes of the arrays, clips left out (with the reason),
                          non-finite points (kept, invisible), and the shard's sums of clip
                          targets and of visible point targets (over the clips' points)
    manifest.json         format "cross4d-target-cache", the settings, num_shards, counts, the mean
                          clip target and mean point target (the objectives' optional centring) and,
                          once finalised, the clip targets' spread statistics

A recording commits the manifest after every shard in constant time (running totals, no
re-read of earlier shards), so a long robot session appends shards at a constant cost. Reads are memory-
mapped (``np.load(mmap_mode="r")``), opened lazily per process.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cross4d_core.errors import TargetCacheError
from cross4d_core.fileio import atomic_directory, read_json, remove_temporaries, remove_tree, write_json_atomic
from cross4d_core.manifests import TARGET_CACHE_FORMAT
from cross4d_core.targets.batch import ClipTargets, TargetBatch, compact_targets
from cross4d_core.targets.projection import FeatureProjection

CACHE_FORMAT = TARGET_CACHE_FORMAT
CACHE_FORMAT_VERSION = 2
MANIFEST = "manifest.json"

#: stored dtype and level (the report.json count its first dimension must match) of every shard array
SHARD_ARRAYS = {
    "points": (np.float32, "frames"), "target": (np.int32, "frames"), "frame": (np.int64, "frames"),
    "features": (np.float16, "features"), "cell": (np.int32, "features"),
    "video_ids": (np.int64, "videos"), "video_frames": (np.int64, "video_offsets"),
    "video_features": (np.int64, "video_offsets"),
    "clip_frames": (np.int32, "clips"), "clip_target": (np.float32, "clips"), "label": (np.int64, "clips"),
    "video": (np.int64, "clips"), "start": (np.int64, "clips"), "clip": (np.int64, "clips"),
}
_SUMS = ("points", "visible_points", "nonfinite_points", "clips", "videos", "frames", "features", "bytes")


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


@dataclass
class TargetRecord:
    """One stored video of the cache (a dataset video, a recorded window, or one online clip).

    Attributes:
        points: ``[F, N, 3]`` float32 metres, the video's stored frames.
        target: ``[F, N]`` int64 row of ``features`` holding each point's target; -1 = invisible.
        frame: ``[F]`` int64 source frame index of each stored frame.
        features: ``[K, d_p]`` float16 projected teacher features of the used (slot, patch) cells.
        cell: ``[K]`` int64 ``slot * P + patch`` of each row (ascending).
        clip_frames: ``[n, T]`` int64 positions in the ``F`` frames of each clip's frames.
        clip_target: ``[n, d_p]`` float32 subject-mean clip target of each clip.
        start, clip: ``[n]`` int64 first source frame and clip-dataset index of each clip.
        video: dataset video index; label: action label (-1 = none).
        nonfinite_points: points of the stored frames that are not finite (kept, invisible).
    """

    points: torch.Tensor
    target: torch.Tensor
    frame: torch.Tensor
    features: torch.Tensor
    cell: torch.Tensor
    clip_frames: torch.Tensor
    clip_target: torch.Tensor
    start: torch.Tensor
    clip: torch.Tensor
    video: int = 0
    label: int = -1
    nonfinite_points: int = 0

    def clip_targets(self, c: int) -> ClipTargets:
        """Clip ``c`` as a training item (its target table holds only the rows its points use)."""
        rows = self.clip_frames[c]
        used, index = compact_targets(self.target[rows])
        device = self.points.device
        scalar = lambda v: torch.tensor(int(v), dtype=torch.int64, device=device)  # noqa: E731
        return ClipTargets(points=self.points[rows], target_index=index, features=self.features[used],
                           clip_target=self.clip_target[c], label=scalar(self.label), video=scalar(self.video),
                           start=scalar(self.start[c]), clip=scalar(self.clip[c]))


def cache_config(teacher, source: str, d_p: int, projection: str = "random", seed: int = 0, *,
                 image_size: int | None = None, splat_radius: int = 1, depth_tolerance: float | None = None,
                 views: dict | None = None, shard_size: int = 64, **extra) -> dict:
    """The settings that define a cache (``cache_config.json``; a resume must match them).

    ``image_size`` / ``views`` apply to the render source, ``depth_tolerance`` to the camera
    source (None elsewhere); ``extra`` adds fields such as the dataset's description.
    """
    config = {
        "teacher": {"name": teacher.name, "class": type(teacher).__name__, "patch_size": teacher.patch_size,
                    "tubelet": teacher.tubelet, "feature_dim": teacher.feature_dim},
        "source": source, "d_p": int(d_p), "projection": {"kind": projection, "seed": seed},
        "image_size": image_size if source == "render" else None, "splat_radius": splat_radius,
        "depth_tolerance": depth_tolerance if source == "camera" else None, "shard_size": int(shard_size),
        **extra,
    }
    if source == "render" and views is not None:
        config["views"] = views
    return config


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
        for key in (*_SUMS, "dropped"):
            report[key]  # noqa: B018 - presence check
        return report
    except FileNotFoundError:
        raise TargetCacheError(path, "missing (the shard is corrupt; delete its directory and rerun to rewrite it)") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise TargetCacheError(path, f"corrupt shard report ({type(err).__name__}: {err}); delete the shard "
                         "directory and rerun to rewrite it") from None


def _shard_dirs(root: Path) -> list[Path]:
    """The complete shards, checked to be numbered 0, 1, ... without a gap."""
    shards = sorted(p for p in (root / "shards").glob("shard-*") if p.is_dir())
    for i, path in enumerate(shards):
        if path.name != shard_name(i):
            raise TargetCacheError(root / 'shards', f"{shard_name(i)} is missing but {path.name} exists "
                             "(shards are written in order; delete the later ones and rerun)")
    return shards


class TargetCacheWriter:
    """The one writer of target caches (``cross4d precompute`` and ``distill_node``'s recorder).

    Writes shard by shard; reopening a cache with the same settings resumes it after its
    last complete shard (leftover temporaries of a killed run are removed). The manifest is
    written from running totals: :meth:`commit` in constant time (a recording, after every
    shard), :meth:`finalize` with the clip targets' spread statistics (a pass over every clip
    target: ``cross4d precompute``, once at the end, so an unfinished precompute has no manifest).

    Args:
        root: cache directory.
        config: settings that define the cache (:func:`cache_config`); must match on resume.
        overwrite: start afresh even if ``root`` holds a cache with other settings.
    """

    def __init__(self, root: str | Path, config: dict, overwrite: bool = False):
        self.root = Path(root)
        self.config = json.loads(json.dumps(config))  # normalise tuples etc. for comparison
        config_path = self.root / "cache_config.json"
        if config_path.exists() and not overwrite:
            old = read_json(config_path, error=TargetCacheError)
            diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
            if diff:
                changes = ", ".join(f"{k}: {old.get(k)!r} != {self.config.get(k)!r}" for k in diff)
                raise TargetCacheError(self.root, f"holds a cache made with other settings ({changes}); "
                                 "choose another --out or pass overwrite")
        elif overwrite and self.root.exists():
            remove_tree(self.root)
        if (self.root / MANIFEST).exists():
            read_cache_manifest(self.root)  # refuses a cache of another format or version
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.root / "shards")  # a killed run's half-written shard
        if not config_path.exists():
            write_json_atomic(config_path, self.config)
        self.num_shards = 0
        self._totals: dict = {key: 0 for key in _SUMS}
        self._dropped: list[dict] = []
        self._clip_target_sum = self._point_target_sum = None
        for shard in _shard_dirs(self.root):  # once per process: O(shards) small JSON reads
            self._add(_read_report(shard / "report.json"))

    @property
    def projection_path(self) -> Path:
        return self.root / "projection.safetensors"

    @property
    def bytes(self) -> int:
        """Bytes of the cache's shard arrays (the ``.npy`` files)."""
        return int(self._totals["bytes"])

    def stored_projection(self) -> FeatureProjection | None:
        return FeatureProjection.load(self.projection_path) if self.projection_path.exists() else None

    def use_projection(self, projection: FeatureProjection) -> None:
        """Store ``projection``, or check that it is the one the cache was started with."""
        stored = self.stored_projection()
        if stored is None:
            projection.save(self.projection_path)
        elif not (torch.equal(stored.weight, projection.weight) and torch.equal(stored.mean, projection.mean)):
            raise TargetCacheError(self.projection_path, "stored projection differs from the configured one")

    def shard_done(self, shard: int) -> bool:
        return shard < self.num_shards

    def write_shard(self, shard: int, records: list[TargetRecord], dropped: list[dict] | None = None) -> dict:
        """Write shard ``shard`` (the next one) atomically from ``records`` and update the manifest.

        ``dropped``: one ``{"clip", "reason"}`` per clip left out. Returns the shard's report.
        """
        if shard != self.num_shards:
            raise TargetCacheError(self.root, f"shard {shard} written out of order (next is {self.num_shards})")
        arrays, report = _shard_arrays(records)
        report["dropped"] = list(dropped or [])
        with atomic_directory(self.root / "shards" / shard_name(shard)) as tmp:
            for name, (dtype, _) in SHARD_ARRAYS.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=dtype), allow_pickle=False)
            report["bytes"] = sum(p.stat().st_size for p in tmp.iterdir())
            (tmp / "report.json").write_text(json.dumps(report))
        self._add(report)
        return report

    def commit(self) -> dict:
        """Write ``manifest.json`` for the shards written so far, in constant time (no statistics):
        how a recording makes each new shard readable. Returns the manifest."""
        return self._write_manifest(statistics=None)

    def finalize(self) -> dict:
        """Write ``manifest.json`` with the clip targets' statistics (reads every clip target);
        returns the manifest. Until a writer commits or finalises, readers refuse the cache."""
        targets = [np.load(shard / "clip_target.npy", allow_pickle=False) for shard in _shard_dirs(self.root)]
        return self._write_manifest(statistics=_clip_target_statistics(targets))

    def _add(self, report: dict) -> None:
        for key in _SUMS:
            self._totals[key] += report[key]
        self._dropped.extend(report["dropped"])
        if report.get("clip_target_sum") is not None:
            self._clip_target_sum = np.add(0.0 if self._clip_target_sum is None else self._clip_target_sum,
                                           report["clip_target_sum"])
            self._point_target_sum = np.add(0.0 if self._point_target_sum is None else self._point_target_sum,
                                            report["point_target_sum"])
        self.num_shards += 1

    def _write_manifest(self, statistics: dict | None) -> dict:
        t = self._totals
        manifest = {
            "format": CACHE_FORMAT,
            "format_version": CACHE_FORMAT_VERSION,
            **self.config,
            "num_shards": self.num_shards,
            "counts": {
                "clips": t["clips"], "videos": t["videos"], "frames": t["frames"], "features": t["features"],
                "bytes": t["bytes"], "dropped_clips": len(self._dropped), "nonfinite_points": t["nonfinite_points"],
                "coverage": t["visible_points"] / t["points"] if t["points"] else 0.0,
            },
            "dropped": self._dropped,
            "clip_target": "projection of the mean teacher feature over the (slot, patch) cells holding a "
                           "visible point of the clip",
            "target_means": {
                "clip_target": (self._clip_target_sum / t["clips"]).tolist() if t["clips"] else None,
                "point_target": (self._point_target_sum / t["visible_points"]).tolist() if t["visible_points"]
                else None,
            },
            "target_statistics": statistics,
        }
        write_json_atomic(self.root / MANIFEST, manifest)
        return manifest


def _shard_arrays(records: list[TargetRecord]) -> tuple[dict[str, np.ndarray], dict]:
    """Concatenate ``records`` into the shard arrays (rows offset into the shard) and sum what
    the manifest totals: points and visible points counted once per clip that holds them."""
    for name, sizes in (("frames per clip", {int(r.clip_frames.shape[1]) for r in records}),
                        ("points per frame", {int(r.points.shape[1]) for r in records})):
        if len(sizes) > 1:
            raise ValueError(f"TargetCacheWriter: the records of a shard differ in {name} ({sorted(sizes)})")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SHARD_ARRAYS}
    frame_offset = feature_offset = 0
    sums: dict[str, Any] = {key: 0 for key in _SUMS}  # counts, then the two target sums (lists or None)
    clip_sum = point_sum = None
    for r in records:
        rec = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in vars(r).items()}
        F, n = rec["points"].shape[0], rec["clip_frames"].shape[0]
        target = rec["target"].astype(np.int64)
        parts["points"].append(rec["points"])
        parts["target"].append(np.where(target >= 0, target + feature_offset, -1))
        parts["frame"].append(rec["frame"])
        parts["features"].append(rec["features"])
        parts["cell"].append(rec["cell"])
        parts["video_ids"].append(np.array([rec["video"]]))
        parts["video_frames"].append(np.array([frame_offset]))
        parts["video_features"].append(np.array([feature_offset]))
        parts["clip_frames"].append(rec["clip_frames"] + frame_offset)
        parts["clip_target"].append(rec["clip_target"])
        parts["label"].append(np.full(n, rec["label"]))
        parts["video"].append(np.full(n, rec["video"]))
        parts["start"].append(rec["start"])
        parts["clip"].append(rec["clip"])
        # every clip that holds a frame counts its points once (the clips' point distribution)
        multiplicity = np.bincount(rec["clip_frames"].reshape(-1), minlength=F).astype(np.float64)
        visible = target >= 0
        sums["points"] += int(multiplicity.sum()) * target.shape[1]
        sums["visible_points"] += int(multiplicity @ visible.sum(1))
        row_weight = np.bincount(target[visible], np.broadcast_to(multiplicity[:, None], target.shape)[visible],
                                 minlength=len(rec["features"]))
        point_sum = np.add(0.0 if point_sum is None else point_sum, row_weight @ rec["features"].astype(np.float64))
        clip_sum = np.add(0.0 if clip_sum is None else clip_sum, rec["clip_target"].astype(np.float64).sum(0))
        sums["nonfinite_points"] += int(rec["nonfinite_points"])
        sums["clips"] += n
        sums["videos"] += 1
        sums["frames"] += F
        sums["features"] += len(rec["features"])
        frame_offset += F
        feature_offset += len(rec["features"])
    parts["video_frames"].append(np.array([frame_offset]))
    parts["video_features"].append(np.array([feature_offset]))
    empty = {"points": (0, 0, 3), "target": (0, 0), "features": (0, 0), "clip_frames": (0, 0), "clip_target": (0, 0)}
    arrays = {name: np.concatenate(chunks) if chunks else np.zeros(empty.get(name, (0,)))
              for name, chunks in parts.items()}
    sums["clip_target_sum"] = None if clip_sum is None else clip_sum.tolist()
    sums["point_target_sum"] = None if point_sum is None else point_sum.tolist()
    return arrays, sums


def _clip_target_statistics(shards: list[np.ndarray]) -> dict | None:
    """Spread of the clip targets, as stored and centred (is the global target near-constant?)."""
    if not shards or sum(len(s) for s in shards) < 2:
        return None
    from cross4d_core.statistics import embedding_statistics

    targets = torch.from_numpy(np.concatenate(shards))
    return {"clip_target": embedding_statistics(targets),
            "clip_target_centred": embedding_statistics(targets, centre=True)}


def read_cache_manifest(root: str | Path) -> dict:
    """``root/manifest.json`` of a target cache; errors say what the directory holds instead."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise TargetCacheError(path, "no manifest, the cache is missing or unfinished "
                                "(rerun `cross4d precompute` with the same --out to resume)")
    manifest = read_json(path, error=TargetCacheError)
    kind = manifest.get("format") if isinstance(manifest, dict) else None
    if kind != CACHE_FORMAT:
        if kind is None and isinstance(manifest, dict) and manifest.get("format_version") == 1:
            raise TargetCacheError(path, "a target cache of format 1 (per-clip grids, older cross4d); rerun "
                             "`cross4d precompute` into a new --out")
        raise TargetCacheError(path, f"not a {CACHE_FORMAT} manifest (format={kind!r}); data.source 'targets' "
                         "needs a cache written by `cross4d precompute`")
    if manifest.get("format_version") != CACHE_FORMAT_VERSION:
        raise TargetCacheError(path, f"target cache format version {manifest.get('format_version')!r}, this code "
                         f"reads {CACHE_FORMAT_VERSION}")
    return manifest


class TargetCache(torch.utils.data.Dataset):
    """Memory-mapped reader of a target cache; items are :class:`ClipTargets` (collate them with
    :attr:`collate` = :meth:`TargetBatch.collate`). A cache still being recorded can be read:
    the reader sees the shards its manifest counts."""

    collate = staticmethod(TargetBatch.collate)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_cache_manifest(self.root)
        try:
            num_shards = int(self.manifest["num_shards"])
        except (KeyError, TypeError, ValueError) as err:
            raise TargetCacheError(self.root / MANIFEST, f"'num_shards' must be an integer "
                             f"({type(err).__name__}: {err})") from None
        self._reports = [_read_report(self._folder(s) / "report.json") for s in range(num_shards)]
        self._offsets = np.cumsum([0] + [r["clips"] for r in self._reports]).tolist()
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def target_mean(self, name: str) -> torch.Tensor | None:
        """``[d_p]`` mean ``clip_target`` or visible ``point_target`` of the cache (None when it is empty)."""
        value = (self.manifest.get("target_means") or {}).get(name)
        return None if value is None else torch.tensor(value, dtype=torch.float32)

    @property
    def projection(self) -> FeatureProjection:
        return FeatureProjection.load(self.root / "projection.safetensors")

    def _folder(self, shard: int) -> Path:
        return self.root / "shards" / shard_name(shard)

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._arrays:
            folder, report = self._folder(shard), self._reports[shard]
            sizes = {**report, "video_offsets": report["videos"] + 1}
            arrays = {}
            for name, (_, level) in SHARD_ARRAYS.items():
                path = folder / f"{name}.npy"
                try:
                    arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as err:
                    raise TargetCacheError(path, f"unreadable cache file ({err})") from err
                if arrays[name].shape[:1] != (sizes[level],):
                    raise TargetCacheError(path, f"holds {arrays[name].shape[:1]} rows, report.json says "
                                     f"{sizes[level]} {level}")
            self._arrays[shard] = arrays
        return self._arrays[shard]

    def _locate(self, index: int) -> tuple[dict[str, np.ndarray], int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"TargetCache: index {index} out of range for {len(self)} clips")
        index %= len(self)
        shard = bisect.bisect_right(self._offsets, index) - 1
        return self._shard(shard), index - self._offsets[shard]

    def __getitem__(self, index: int) -> ClipTargets:
        a, row = self._locate(index)
        rows = np.asarray(a["clip_frames"][row], dtype=np.int64)
        used, target_index = compact_targets(torch.from_numpy(a["target"][rows].astype(np.int64)))
        scalar = lambda name: torch.tensor(int(a[name][row]), dtype=torch.int64)  # noqa: E731
        return ClipTargets(points=torch.from_numpy(np.ascontiguousarray(a["points"][rows])),
                           target_index=target_index,
                           features=torch.from_numpy(np.ascontiguousarray(a["features"][used.numpy()])),
                           clip_target=torch.from_numpy(np.array(a["clip_target"][row])),
                           label=scalar("label"), video=scalar("video"), start=scalar("start"), clip=scalar("clip"))

    def video_record(self, index: int) -> TargetRecord:
        """The stored video that clip ``index`` belongs to, with all its frames and clips."""
        a, row = self._locate(index)
        first_frame = int(a["clip_frames"][row, 0])
        j = int(np.searchsorted(a["video_frames"], first_frame, side="right")) - 1
        f0, f1 = int(a["video_frames"][j]), int(a["video_frames"][j + 1])
        k0, k1 = int(a["video_features"][j]), int(a["video_features"][j + 1])
        clips = np.nonzero((a["clip_frames"][:, 0] >= f0) & (a["clip_frames"][:, 0] < f1))[0]
        target = a["target"][f0:f1].astype(np.int64)
        t = lambda x: torch.from_numpy(np.array(x))  # noqa: E731
        return TargetRecord(points=t(a["points"][f0:f1]), target=t(np.where(target >= 0, target - k0, -1)),
                            frame=t(a["frame"][f0:f1]), features=t(a["features"][k0:k1]),
                            cell=t(a["cell"][k0:k1].astype(np.int64)),
                            clip_frames=t(a["clip_frames"][clips].astype(np.int64) - f0),
                            clip_target=t(a["clip_target"][clips]), start=t(a["start"][clips]),
                            clip=t(a["clip"][clips]), video=int(a["video_ids"][j]),
                            label=int(a["label"][clips[0]]))
