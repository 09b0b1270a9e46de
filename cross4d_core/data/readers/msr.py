"""MSR-Action3D reader: raw depth ``.bin`` files and the legacy ``point_clouds`` ``.npz``.

Layouts (the dataset's public releases): ``aXX_sYY_eZZ_sdepth.bin`` = three little-endian uint32
``num_frames, width, height`` then ``num_frames*height*width`` little-endian uint32
depths in millimetres, frame-major then row-major. Pixels with depth > 0 are
back-projected with f = 280 and the principal point at the image centre. The legacy
``<basename>.npz`` (MeteorNet / P4Transformer family) holds key ``point_clouds``: an
object array of per-frame ``[N_t, 3]`` arrays in millimetres.

Split: subjects 1-5 train, 6-10 test. Label = action number - 1. Output in metres.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cross4d_core.data.readers.common import (
    ConversionSummary,
    SourceFormatError,
    backproject_depth,
    convert_items,
    load_object_frames,
)
from cross4d_core.geometry.projection import MSR_NTU_FOCAL
from cross4d_core.msgconv.stamp import seconds_to_ns

ACTION_NAMES = (
    "high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch",
    "high throw", "draw x", "draw tick", "draw circle", "hand clap", "two hand wave",
    "side-boxing", "bend", "forward kick", "side kick", "jogging", "tennis swing",
    "tennis serve", "golf swing", "pick up & throw",
)
TRAIN_SUBJECTS = frozenset(range(1, 6))
#: The recording rate of the Kinect v1 sequences (frame stamps = index / FPS).
FPS = 15.0
MM_TO_M = 1e-3

_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)")


def parse_name(path: Path) -> tuple[int, int, int]:
    """``(action, subject, repetition)`` (1-based) from ``aXX_sYY_eZZ...``."""
    m = _NAME.match(path.name)
    if not m:
        raise SourceFormatError(path, "file name does not match aXX_sYY_eZZ_*")
    action, subject, rep = (int(g) for g in m.groups())
    if not 1 <= action <= len(ACTION_NAMES):
        raise SourceFormatError(path, f"action {action} outside 1..{len(ACTION_NAMES)}")
    return action, subject, rep


def read_depth_bin(path: Path) -> np.ndarray:
    """``[T, H, W]`` uint32 depth in millimetres from a raw ``.bin`` file."""
    raw = Path(path).read_bytes()
    if len(raw) < 12:
        raise SourceFormatError(path, f"{len(raw)} bytes, shorter than the 12-byte header")
    num_frames, width, height = (int(v) for v in np.frombuffer(raw, dtype="<u4", count=3))
    need = 4 * num_frames * width * height
    if num_frames == 0 or width == 0 or height == 0:
        raise SourceFormatError(path, f"empty header: frames={num_frames} width={width} height={height}")
    if len(raw) - 12 != need:
        raise SourceFormatError(
            path, f"body has {len(raw) - 12} bytes, header needs 4 x {num_frames} x {height} x {width} = {need}"
        )
    return np.frombuffer(raw, dtype="<u4", offset=12).reshape(num_frames, height, width)


def bin_to_frames(path: Path) -> list[np.ndarray]:
    """Per-frame ``[n_t, 3]`` float32 points in metres from a raw ``.bin`` file."""
    return backproject_depth(read_depth_bin(path), MM_TO_M)


def read_legacy_npz(path: Path) -> list[np.ndarray]:
    """Per-frame ``[n_t, 3]`` float32 points in metres from a legacy ``point_clouds`` ``.npz``."""
    return load_object_frames(path, "point_clouds", MM_TO_M)


def find_videos(src: Path) -> list[Path]:
    """Sorted ``*_sdepth.bin`` files under ``src``, else ``a*_s*_e*.npz`` files."""
    src = Path(src)
    bins = sorted(src.rglob("a*_s*_e*_sdepth.bin"))
    return bins if bins else sorted(src.rglob("a*_s*_e*.npz"))


def convert(src: Path, out: Path, progress: bool = True) -> dict:
    """Convert an MSR-Action3D folder (raw ``.bin`` or legacy ``.npz``) into the dataset format.

    Returns the conversion summary (counts of written / already present videos, frames).
    """
    from cross4d_core.data.format import DatasetWriter

    videos = find_videos(Path(src))
    if not videos:
        raise FileNotFoundError(f"{src}: no MSR-Action3D files (aXX_sYY_eZZ_sdepth.bin or aXX_sYY_eZZ*.npz)")
    legacy = videos[0].suffix == ".npz"
    normalisation = {
        "source_units": "mm",
        "scale_to_m": MM_TO_M,
        "input": "legacy point_clouds .npz" if legacy else "raw depth .bin",
        "backprojection": None if legacy else {"f": MSR_NTU_FOCAL, "principal_point": "image centre (W/2, H/2)"},
        "note": "no further scaling (public loaders divide by 300; we keep metres)",
    }
    summary = ConversionSummary(source="msr", out=str(out))

    def write_one(video_id: str, path: Path) -> int:
        action, subject, _ = parse_name(path)
        frames = read_legacy_npz(path) if legacy else bin_to_frames(path)
        writer.add_video(
            video_id, frames, label=action - 1, split="train" if subject in TRAIN_SUBJECTS else "test",
            subject=subject, stamps_ns=seconds_to_ns(np.arange(len(frames)) / FPS), meta={"file": path.name},
        )
        return len(frames)

    with DatasetWriter(out, source="msr-action3d", label_names=list(ACTION_NAMES), units="m",
                       normalisation=normalisation) as writer:
        items = [(_video_id(p), p) for p in videos]
        convert_items(writer, items, write_one, summary, progress, "msr", total=len(items))
    return summary.as_dict()


def _video_id(path: Path) -> str:
    return path.name.removesuffix(".npz").removesuffix(".bin")
