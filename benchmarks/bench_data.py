"""Synthetic world generation (frames/s) and clip loading from the on-disk format (clips/s).

Clip loading is measured three ways on the same dataset:
- ``cold``: every file of the dataset evicted from the page cache first (per-file
  ``posix_fadvise(DONTNEED)`` on our own files only; nothing global is dropped), a fresh
  :class:`ClipDataset` (manifest parse, first open + size check of each video, mmap);
- ``first-open``: a fresh :class:`ClipDataset` with the files in the page cache;
- ``warm``: the same clips again from an already opened :class:`ClipDataset`.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cross4d_core.data import ClipDataset, generate_synthetic_dataset
from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video


def _evict(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run(report) -> None:
    frames = 32
    report.time("synthetic render 320x240 (one video)", lambda: synthetic_video(0, 1, 6, 0, frames=frames),
                repeats=5, warmup=1, items=frames, item_unit="frames",
                note=f"ray cast + RGB + tracks + noise, {frames} frames/video")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        start = time.perf_counter()
        summary = generate_synthetic_dataset(root, num_subjects=2, videos_per_class_per_subject=1, frames=frames,
                                             seed=0, config=SyntheticConfig())
        elapsed = time.perf_counter() - start
        report.value("synthetic dataset write 320x240 with RGB", summary["frames"] / elapsed, "frames/s",
                     note=f"{summary['videos']} videos incl. .npy + SHA-256 + manifest; "
                          f"{summary['points'] / summary['frames']:.0f} points/frame")

        L, N = 24, 2048
        probe = ClipDataset(root, frames=L, num_points=N)
        per_video = [int(np.nonzero(probe.clip_videos == v)[0][0]) for v in np.unique(probe.clip_videos)]
        items = len(per_video)

        def load(clips):
            for i in per_video:
                clips[i]

        def cold():
            _evict(root)
            load(ClipDataset(root, frames=L, num_points=N))

        report.time(f"clip load cold ({L}x{N}, evicted)", cold, repeats=3, warmup=1, items=items, item_unit="clips",
                    note="one clip per video, page cache of the dataset files dropped per file")
        report.time(f"clip load first-open ({L}x{N})", lambda: load(ClipDataset(root, frames=L, num_points=N)),
                    repeats=3, warmup=1, items=items, item_unit="clips", note="fresh dataset object, files cached")
        warm = ClipDataset(root, frames=L, num_points=N)
        report.time(f"clip load warm ({L}x{N})", lambda: load(warm), repeats=5, warmup=1, items=items,
                    item_unit="clips", note="same clips, opened dataset")
        with_images = ClipDataset(root, frames=L, num_points=N, with_images=True)
        report.time(f"clip load warm with RGB ({L}x{N}, 320x240)", lambda: load(with_images), repeats=5, warmup=1,
                    items=items, item_unit="clips", note="adds images [24,240,320,3] + cameras")
