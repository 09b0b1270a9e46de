"""Target-cache size: bytes per video today (format 2: each frame once per video, only the used
patches) against format 1 (per-clip fp16 grids), and the MSR-Action3D / NTU-60 estimates.

Measured on synthetic videos at the paper size (2048 points per frame, 126 px renders ->
9 x 9 patches, d_p 384, clips of 24 frames at stride 1), written by ``precompute_targets``
with the part teacher (the patches a frame uses depend on the render, not on the teacher).
The measured bytes per stored frame and per clip then give the estimates:

- MSR-Action3D: 567 videos of 40.2 frames on average, clips of 24 at stride 1 -> 17.2 clips
  per video (videos shorter than 24 frames give one padded clip; ignored here);
- NTU-60: 56,880 videos of 70.3 frames on average (the dataset paper's ~4 million frames),
  clips of 24 frames at frame step 2 (span 47) and stride 1 -> 24.3 clips per video; and one
  clip per video (the sampling behind the ~138 GB format-1 figure).

Format 1 stored per clip ``points [T,N,3] f32, slot i16, patch i32, visible bool [T,N],
grids [S,P,d_p] f16, clip_target [d_p] f32`` and four int64 scalars (npy headers aside).
Also times reading a cache item against building an online-teacher item (CPU side).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

T, N, D_P, PATCHES = 24, 2048, 384, 81
FRAME_FILES = ("points", "target", "frame", "features", "cell")
CLIP_FILES = ("clip_frames", "clip_target", "label", "video", "start", "clip")


def format1_clip_bytes(frames: int = T, points: int = N, slots: int = T, patches: int = PATCHES, d_p: int = D_P) -> int:
    """Bytes of one clip in the per-clip-grid cache of format 1."""
    return frames * points * (12 + 2 + 4 + 1) + slots * patches * d_p * 2 + d_p * 4 + 4 * 8


def run(report) -> None:
    import torch

    from cross4d_core.data import ClipDataset, generate_synthetic_dataset
    from cross4d_core.targets import OnlineClips, TargetCache, precompute_targets
    from cross4d_core.teachers import PartTeacher

    report.bench = "cache"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_synthetic_dataset(root / "data", num_subjects=2, videos_per_class_per_subject=1, frames=41,
                                   classes=1, with_images=False, seed=0)
        clips = ClipDataset(root / "data", frames=T, num_points=N, clip_stride=1)
        teacher = PartTeacher(len(clips.dataset.manifest["part_names"]), feature_dim=256)
        manifest = precompute_targets(clips, teacher, "render", root / "cache", d_p=D_P, image_size=126)
        counts = manifest["counts"]
        size = {name: sum(p.stat().st_size for p in (root / "cache" / "shards").glob(f"*/{name}.npy"))
                for name in FRAME_FILES + CLIP_FILES}
        per_frame = sum(size[n] for n in FRAME_FILES) / counts["frames"]
        per_clip = sum(size[n] for n in CLIP_FILES) / counts["clips"]
        videos, frames = counts["videos"], counts["frames"] / counts["videos"]
        per_video_clips = counts["clips"] / videos
        old_clip = format1_clip_bytes()
        measured = counts["bytes"] / videos
        report.value("format 1 bytes per clip (24x2048, 9x9 patches, d_p 384)", old_clip, "B",
                     note="per-clip fp16 grids [24, 81, 384] + points + correspondence")
        report.value("used patches per stored frame", counts["features"] / counts["frames"], "patches",
                     note=f"of {PATCHES}; render 126 px, sensor view, coverage {counts['coverage']:.2f}")
        report.value("format 2 bytes per stored frame", per_frame, "B",
                     note="points f32 + target row i32 + used patches f16 [K, 384] + cell ids")
        report.value("format 2 bytes per clip", per_clip, "B", note="frame rows i32 [24] + clip target f32 [384] + ids")
        synthetic = f"synthetic video ({frames:.0f} frames, {per_video_clips:.0f} clips)"
        report.value(f"{synthetic}: format 1 bytes", per_video_clips * old_clip, "B")
        report.value(f"{synthetic}: format 2 bytes", measured, "B",
                     note=f"measured; {measured / (per_video_clips * old_clip):.3f} of format 1")
        for name, n_videos, mean_frames, stored_frames, clips_per_video in (
                ("MSR-Action3D", 567, 40.2, 40.2, 40.2 - T + 1),
                ("NTU-60 (step 2, stride 1)", 56_880, 70.3, 70.3, 70.3 - (2 * (T - 1) + 1) + 1),
                ("NTU-60 (one clip per video)", 56_880, 70.3, T, 1.0)):
            before = clips_per_video * old_clip
            after = stored_frames * per_frame + clips_per_video * per_clip
            report.value(f"{name} bytes per video: format 1", before, "B",
                         note=f"{mean_frames} frames, {clips_per_video:.1f} clips of 24")
            report.value(f"{name} bytes per video: format 2", after, "B",
                         note=f"{stored_frames:g} stored frames; {after / before:.3f} of format 1")
            report.value(f"{name} cache: format 1", n_videos * before / 1e9, "GB", note=f"{n_videos} videos")
            report.value(f"{name} cache: format 2", n_videos * after / 1e9, "GB",
                         note=f"{after / before:.3f} of format 1")

        cache = TargetCache(root / "cache")
        picks = np.random.default_rng(0).permutation(len(cache))[:8].tolist()
        cached = report.time("cache item read (24x2048, memory-mapped, compact table)",
                             lambda: [cache[i] for i in picks], repeats=5, warmup=1, items=len(picks),
                             item_unit="clips")
        online = OnlineClips(clips, teacher, "render", 126)
        built = report.time("online-teacher item, CPU side (video render + correspondence)",
                            lambda: [online[i] for i in picks[:4]], repeats=3, warmup=1, items=4, item_unit="clips",
                            note=f"renders the clip's {frames:.0f}-frame video; the teacher runs in the step")
        report.value("online item / cache item time", (built["median_ms"] / 4) / (cached["median_ms"] / len(picks)),
                     "x", note=f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    from benchmarks.common import Report

    run(Report())
