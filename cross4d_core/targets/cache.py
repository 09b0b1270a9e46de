"""The fp16 teacher-target cache written once by ``cross4d precompute`` and read by training.

Layout of a cache directory::

    cache_config.json         settings the cache was started with (checked on resume)
    projection.safetensors    the fixed C -> d_p projection (weight, mean; kind, seed)
    shards/shard-000000/      one directory per ``shard_size`` dataset clips, written
        points.npy   [n, T, N, 3] f32   atomically (temp dir + rename): a killed run
        slot.npy     [n, T, N]    i16   resumes at the first missing shard
        patch.npy    [n, T, N]    i32   (-1 = invisible)
        visible.npy  [n, T, N]    bool
        grids.npy    [n, S, P, d_p] f16 (P = grid_h * grid_w, row-major)
        clip_target.npy [n, d_p]  f32   projection of the mean feature of the (slot, patch)
                                        cells that hold a visible point (the subject's)
        label.npy video.npy start.npy clip.npy  [n] i64 (clip = index in the clip dataset)
        report.json               clips of this shard left out (with the reason), the
                                  number of non-finite points (kept, invisible) and the
                                  shard's sums of clip targets and visible-point targets
    manifest.json             written last: format "cross4d-target-cache", teacher, image
                              size, d_p, projection, source, counts, the mean clip target and mean point target (the
                              objectives' optional centring) and their spread statistics

Reads are memory-mapped (``np.load(mmap_mode="r")``), opened lazily per process.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import torch

from cross4d_core.fileio import atomic_directory, write_json_atomic
from cross4d_core.manifests import TARGET_CACHE_FORMAT
from cross4d_core.targets.projection import FeatureProjection

CACHE_FORMAT_VERSION = 1
ARRAY_FIELDS = ("points", "slot", "patch", "visible", "grids", "clip_target", "label", "video", "start", "clip")
_STORED_DTYPES = {
    "points": np.float32, "slot": np.int16, "patch": np.int32, "visible": np.bool_, "grids": np.float16,
    "clip_target": np.float32, "label": np.int64, "video": np.int64, "start": np.int64, "clip": np.int64,
}


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}"


class TargetCacheWriter:
    """Writes a cache shard by shard; reopening an unfinished cache with the same settings resumes it.

    Args:
        root: cache directory.
        config: settings that define the cache (teacher, source, d_p, ...); must match on resume.
        overwrite: start afresh even if ``root`` holds a cache with other settings.
    """

    def __init__(self, root: str | Path, config: dict, overwrite: bool = False):
        self.root = Path(root)
        self.config = json.loads(json.dumps(config))  # normalise tuples etc. for comparison
        config_path = self.root / "cache_config.json"
        if config_path.exists() and not overwrite:
            old = json.loads(config_path.read_text())
            diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
            if diff:
                changes = ", ".join(f"{k}: {old.get(k)!r} != {self.config.get(k)!r}" for k in diff)
                raise ValueError(f"{self.root}: holds a cache made with other settings ({changes}); "
                                 "choose another --out or pass overwrite")
        elif overwrite and self.root.exists():
            import shutil

            shutil.rmtree(self.root)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        if not config_path.exists():
            write_json_atomic(config_path, self.config)

    @property
    def projection_path(self) -> Path:
        return self.root / "projection.safetensors"

    def shard_done(self, shard: int) -> bool:
        return (self.root / "shards" / shard_name(shard)).is_dir()

    def write_shard(self, shard: int, records: list[dict], dropped: list[dict], nonfinite_points: int) -> None:
        """Write one shard atomically; ``records`` are per-clip dicts of :data:`ARRAY_FIELDS`,
        ``dropped`` one ``{"clip", "reason"}`` per clip left out."""
        with atomic_directory(self.root / "shards" / shard_name(shard)) as tmp:
            for name in ARRAY_FIELDS:
                dtype = _STORED_DTYPES[name]
                if records:
                    array = np.stack([np.asarray(r[name]) for r in records]).astype(dtype, copy=False)
                else:
                    array = np.zeros((0,), dtype=dtype)
                np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            report = {"dropped": dropped, "nonfinite_points": nonfinite_points, **_target_sums(records)}
            (tmp / "report.json").write_text(json.dumps(report))

    def finalize(self) -> dict:
        """Count what the shards hold and write ``manifest.json``; returns the manifest."""
        shards = sorted(p for p in (self.root / "shards").iterdir() if p.is_dir() and not p.name.startswith("."))
        counts, dropped, nonfinite, visible_sum, point_sum = [], [], 0, 0, 0
        clip_sum, point_target_sum, clip_targets = None, None, []
        for shard in shards:
            visible = np.load(shard / "visible.npy", mmap_mode="r", allow_pickle=False)
            counts.append(int(visible.shape[0]))
            visible_sum += int(np.count_nonzero(visible))
            point_sum += int(visible.size) if visible.ndim > 1 else 0
            report = json.loads((shard / "report.json").read_text())
            dropped.extend(report["dropped"])
            nonfinite += report["nonfinite_points"]
            if report.get("clip_target_sum") is not None:
                clip_sum = np.add(clip_sum if clip_sum is not None else 0.0, report["clip_target_sum"])
                point_target_sum = np.add(point_target_sum if point_target_sum is not None else 0.0,
                                          report["point_target_sum"])
                clip_targets.append(np.load(shard / "clip_target.npy", allow_pickle=False))
        manifest = {
            "format": TARGET_CACHE_FORMAT,
            "format_version": CACHE_FORMAT_VERSION,
            **self.config,
            "shards": [{"name": s.name, "clips": c} for s, c in zip(shards, counts)],
            "counts": {
                "clips": sum(counts),
                "dropped_clips": len(dropped),
                "nonfinite_points": nonfinite,
                "coverage": visible_sum / point_sum if point_sum else 0.0,
            },
            "dropped": dropped,
            "clip_target": "projection of the mean teacher feature over the (slot, patch) cells holding a "
                           "visible point of the clip",
            "target_means": {
                "clip_target": (clip_sum / sum(counts)).tolist() if clip_sum is not None else None,
                "point_target": (point_target_sum / visible_sum).tolist() if visible_sum else None,
            },
            "target_statistics": _clip_target_statistics(clip_targets),
        }
        write_json_atomic(self.root / "manifest.json", manifest)
        return manifest


def _target_sums(records: list[dict]) -> dict:
    """Sums of the records' clip targets and of their visible points' targets (float64)."""
    if not records:
        return {"clip_target_sum": None, "point_target_sum": None}
    clip_sum = np.sum([np.asarray(r["clip_target"], np.float64) for r in records], axis=0)
    point_sum = np.zeros_like(clip_sum)
    for r in records:
        grids = np.asarray(r["grids"], np.float32)  # [S, P, d_p]
        visible = np.asarray(r["visible"], bool)
        cells = np.asarray(r["slot"])[visible].astype(np.int64) * grids.shape[1] + np.asarray(r["patch"])[visible]
        weight = np.bincount(cells, minlength=grids.shape[0] * grids.shape[1]).astype(np.float64)
        point_sum += weight @ grids.reshape(-1, grids.shape[-1])
    return {"clip_target_sum": clip_sum.tolist(), "point_target_sum": point_sum.tolist()}


def _clip_target_statistics(shards: list[np.ndarray]) -> dict | None:
    """Spread of the clip targets, as stored and centred (is the global target near-constant?)."""
    if not shards or sum(len(s) for s in shards) < 2:
        return None
    from cross4d_core.statistics import embedding_statistics

    targets = torch.from_numpy(np.concatenate(shards))
    return {"clip_target": embedding_statistics(targets),
            "clip_target_centred": embedding_statistics(targets, centre=True)}


class TargetCache(torch.utils.data.Dataset):
    """Memory-mapped reader of a finished cache; items are dicts of tensors:
    ``points [T,N,3] f32, slot [T,N] i64, patch [T,N] i64, visible [T,N] bool,
    grids [S,P,d_p] f16, clip_target [d_p] f32, label i64, video i64`` (plus ``start``, ``clip``).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path}: no manifest, the cache is missing or unfinished "
                                    "(rerun `cross4d precompute` with the same --out to resume)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{manifest_path}: corrupt manifest ({err})") from err
        try:
            self._shards = [str(entry["name"]) for entry in self.manifest["shards"]]
            self._clips = [int(entry["clips"]) for entry in self.manifest["shards"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{manifest_path}: 'shards' must be a list of {{'name', 'clips'}} entries "
                             f"({type(err).__name__}: {err})") from err
        self._offsets = np.cumsum([0] + self._clips).tolist()
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def target_mean(self, name: str) -> torch.Tensor | None:
        """``[d_p]`` mean ``clip_target`` or visible ``point_target`` of the cache (None for a
        cache written before the means were recorded)."""
        value = (self.manifest.get("target_means") or {}).get(name)
        return None if value is None else torch.tensor(value, dtype=torch.float32)

    @property
    def projection(self) -> FeatureProjection:
        return FeatureProjection.load(self.root / "projection.safetensors")

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._arrays:
            folder = self.root / "shards" / self._shards[shard]
            arrays = {}
            for name in ARRAY_FIELDS:
                try:
                    arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as err:
                    raise ValueError(f"{folder / name}.npy: unreadable cache file ({err})") from err
                if arrays[name].shape[:1] != (self._clips[shard],):
                    raise ValueError(f"{folder / name}.npy: holds {arrays[name].shape[:1]} clips, the manifest "
                                     f"says {self._clips[shard]}")
            self._arrays[shard] = arrays
        return self._arrays[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"TargetCache: index {index} out of range for {len(self)} clips")
        index %= len(self)
        shard = bisect.bisect_right(self._offsets, index) - 1
        row = index - self._offsets[shard]
        arrays = self._shard(shard)
        item = {name: torch.from_numpy(np.array(arrays[name][row])) for name in ARRAY_FIELDS}
        for name in ("slot", "patch", "label", "video", "start", "clip"):
            item[name] = item[name].long()
        return item


def gather_point_targets(grids: torch.Tensor, slot: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Per-point targets in one advanced-indexing op.

    Args:
        grids: ``[B, S, P, d]`` cached grids.
        slot, patch: ``[B, ...]`` int64 slot and flat patch index (patch -1 = invisible).

    Returns:
        ``[B, ..., d]``; rows of invisible points are arbitrary (patch 0) and must be masked.
    """
    B = grids.shape[0]
    batch = torch.arange(B, device=grids.device).reshape(B, *([1] * (slot.dim() - 1)))
    return grids[batch, slot, patch.clamp_min(0)]
