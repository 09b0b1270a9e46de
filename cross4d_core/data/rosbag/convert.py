"""rosbag2 -> the dataset format: one video per window of :func:`iter_bag_windows`."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from cross4d_core.data.rosbag.read import BagStats, iter_bag_windows
from cross4d_core.preprocess import FLOAT32_MM_LIMIT
from cross4d_core.windowing import DEFAULT_MAX_FRAME_GAP_S


def window_origin(frames: list[np.ndarray]) -> np.ndarray | None:
    """The ``[3]`` float64 origin (whole metres: the rounded centroid of the first frame)
    subtracted from a window's points before they are stored as float32, or None when every
    coordinate is within :data:`FLOAT32_MM_LIMIT` (then points are stored as they are).

    Clouds in UTM-scale coordinates (x ~ 5e5, y ~ 5.4e6 m) would lose up to 0.25 m in a
    float32 cast; relative to the origin they keep their millimetres. ``frames`` are
    ``[n_t, 3]`` (non-empty; float64 for FLOAT64 clouds)."""
    if max(float(np.abs(f).max()) for f in frames) <= FLOAT32_MM_LIMIT:
        return None
    return np.round(frames[0].astype(np.float64).mean(axis=0))


def convert_bag(
    bag: Path | str,
    out: Path | str,
    *,
    label: int = -1,
    label_names: list[str] | None = None,
    split: str = "train",
    window_length: int = 24,
    stride: int | None = None,
    max_frame_gap: float = DEFAULT_MAX_FRAME_GAP_S,
    progress: bool = True,
    **frame_options,
) -> dict:
    """Convert a bag into the dataset format: one video per window.

    Points are stored in the cloud frame, float32; a window with a coordinate beyond
    :data:`FLOAT32_MM_LIMIT` is stored relative to the float64 origin of :func:`window_origin`
    (meta ``origin``; its camera extrinsics include the shift), so no precision is lost.

    Args:
        label: action label of every window (-1: unlabelled).
        label_names: class names for the manifest.
        split: split of every window.
        window_length: frames per window (video).
        stride: frames between window starts; default ``window_length`` (no overlap).
        max_frame_gap: a longer step between frames (s) restarts the window (0 = never).
        **frame_options: topics, ``sync_tolerance``, ``extrinsic`` (see :func:`iter_bag_frames`).

    Returns:
        summary dict: counts of windows written / already present, frames, and the bag stats.
    """
    from tqdm import tqdm

    from cross4d_core.data.format import DatasetWriter

    bag = Path(bag)
    if not bag.exists():  # before the writer creates an empty dataset at ``out``
        raise FileNotFoundError(f"{bag}: no such bag")
    stride = window_length if stride is None else stride
    stats = BagStats()
    written = skipped = 0
    normalisation = {
        "source_units": "m (PointCloud2)",
        "scale_to_m": 1.0,
        "windows": {"length": window_length, "stride": stride, "max_frame_gap": max_frame_gap,
                    "sync_tolerance": frame_options.get("sync_tolerance", 0.05)},
        "extrinsic": "parameter" if frame_options.get("extrinsic") is not None else "/tf_static",
        "origin": f"a window with a coordinate beyond {FLOAT32_MM_LIMIT:g} m is stored relative to a float64 "
                  "origin (whole metres, the first frame's centroid) recorded in the video meta 'origin' "
                  "(cloud frame = stored + origin; camera extrinsics include it); otherwise none",
    }
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", bag.name.removesuffix(".mcap").removesuffix(".db3"))
    with DatasetWriter(out, source=f"rosbag2:{bag.name}", label_names=list(label_names or []), units="m",
                       normalisation=normalisation) as writer:
        windows = iter_bag_windows(bag, window_length=window_length, stride=stride, max_frame_gap=max_frame_gap,
                                   stats=stats, **frame_options)
        for window in tqdm(windows, desc=f"bag {bag.name}", disable=not progress, unit="window"):
            video_id = f"{name}_w{window.index:06d}"
            if writer.has_video(video_id):
                skipped += 1
                continue
            with_images = all(f.image is not None and f.camera is not None for f in window.frames)
            frames = [f.points for f in window.frames]
            # (the `is not None` filters narrow the types: with_images means every frame has both)
            cameras = [f.camera for f in window.frames if f.camera is not None] if with_images else None
            origin = window_origin(frames)
            if origin is not None:  # subtract in float64, before add_video's float32 cast
                frames = [f - origin for f in frames]
                shift = np.eye(4)
                shift[:3, 3] = origin  # cloud frame <- stored points
                if cameras is not None:
                    cameras = [dataclasses.replace(c, T_cam_from_points=c.T_cam_from_points @ shift) for c in cameras]
            writer.add_video(
                video_id, frames, label=label, split=split,
                stamps_ns=window.stamps_ns,
                images=np.stack([f.image for f in window.frames if f.image is not None]) if with_images else None,
                cameras=cameras,
                meta={"bag": bag.name, "window": window.index, "sequence": window.sequence,
                      "frame_id": window.frames[-1].frame_id,
                      "origin": None if origin is None else origin.tolist()},
            )
            written += 1
    return {
        "source": str(bag), "out": str(out), "written": written, "skipped_existing": skipped,
        "frames": stats.frames, "windows": stats.windows, "resets": stats.resets, "gaps": stats.gaps,
        "paired_frames": stats.paired_frames, "rejected": dict(stats.rejected), "messages": stats.messages,
    }
