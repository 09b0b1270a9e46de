"""NTU-RGB+D 60 reader: masked depth PNGs and the legacy ``data`` ``.npz``.

Layouts (DATA-FORMATS.md): ``nturgb+d_depth_masked/SsssCcccPpppRrrrAaaa/MDepth-%08d.png``,
16-bit PNG (depth in millimetres, background 0), files sorted (no assumed start
index); back-projection with principal point (256, 212) and f = 280 as in the public
conversion. The legacy ``SsssCcccPpppRrrrAaaa.npz`` holds key ``data`` = object array of
per-frame ``[N_t, 3]`` arrays in the legacy scripts' unit: matplotlib read the PNG as
``depth_mm / 65535`` and the scripts multiplied by 100, and x, y were back-projected from
that z, so one legacy unit = 655.35 mm = 0.65535 m.

Protocols: cross-subject (``xsub``: the 20 training performers below) and cross-view
(``xview``: cameras 2, 3 train, camera 1 test). Label = action - 1. Output in metres.
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

#: Masked depth maps are 512 x 424, so the centred principal point is (256, 212).
DEPTH_SIZE = (424, 512)
FPS = 30.0
MM_TO_M = 1e-3
#: metres per legacy ``.npz`` unit: depth_mm / 65535 * 100 -> mm = value * 655.35.
LEGACY_UNIT_TO_M = 65535.0 / 100.0 * MM_TO_M
NUM_CLASSES = 60
XSUB_TRAIN_PERFORMERS = frozenset(
    {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
)
XVIEW_TRAIN_CAMERAS = frozenset({2, 3})
PROTOCOLS = ("xsub", "xview")

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


def parse_name(path: Path) -> dict[str, int]:
    """``{setup, camera, performer, replication, action}`` (1-based) from ``SsssCcccPpppRrrrAaaa``."""
    m = _NAME.fullmatch(Path(path).name.removesuffix(".npz"))
    if not m:
        raise SourceFormatError(path, "name does not match SsssCcccPpppRrrrAaaa")
    setup, camera, performer, replication, action = (int(g) for g in m.groups())
    if not 1 <= action <= NUM_CLASSES:
        raise SourceFormatError(path, f"action {action} outside 1..{NUM_CLASSES} (NTU-60)")
    return {"setup": setup, "camera": camera, "performer": performer, "replication": replication, "action": action}


def split_of(ids: dict[str, int], protocol: str) -> str:
    """``train`` / ``test`` of a video under the ``xsub`` or ``xview`` protocol."""
    if protocol == "xsub":
        return "train" if ids["performer"] in XSUB_TRAIN_PERFORMERS else "test"
    if protocol == "xview":
        return "train" if ids["camera"] in XVIEW_TRAIN_CAMERAS else "test"
    raise ValueError(f"ntu60 protocol must be one of {PROTOCOLS}, got {protocol!r}")


def read_depth_pngs(folder: Path) -> np.ndarray:
    """``[T, H, W]`` uint16 depth (mm) from the sorted ``MDepth-*.png`` files of a video folder."""
    import cv2

    files = sorted(Path(folder).glob("MDepth-*.png"))
    if not files:
        raise SourceFormatError(folder, "no MDepth-*.png files")
    frames = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise SourceFormatError(f, "not a readable PNG (corrupt or truncated)")
        if img.dtype != np.uint16 or img.ndim != 2:
            raise SourceFormatError(f, f"expected a 16-bit single-channel depth PNG, got {img.dtype} {img.shape}")
        if img.shape != DEPTH_SIZE:
            raise SourceFormatError(f, f"depth map is {img.shape[1]}x{img.shape[0]}, NTU-60 masked depth is 512x424")
        frames.append(img)
    return np.stack(frames)


def pngs_to_frames(folder: Path) -> list[np.ndarray]:
    """Per-frame ``[n_t, 3]`` float32 points in metres from a masked-depth video folder."""
    return backproject_depth(read_depth_pngs(folder), MM_TO_M)


def read_legacy_npz(path: Path) -> list[np.ndarray]:
    """Per-frame ``[n_t, 3]`` float32 points in metres from a legacy ``data`` ``.npz``."""
    return load_object_frames(path, "data", LEGACY_UNIT_TO_M)


def find_videos(src: Path) -> list[Path]:
    """Sorted masked-depth video folders under ``src``, else legacy ``.npz`` files."""
    src = Path(src)
    folders = sorted(p for p in src.rglob("S*C*P*R*A*") if p.is_dir() and _NAME.fullmatch(p.name))
    if folders:
        return folders
    return sorted(p for p in src.rglob("S*C*P*R*A*.npz") if _NAME.fullmatch(p.stem))


def convert(src: Path, out: Path, progress: bool = True, protocol: str = "xsub") -> dict:
    """Convert NTU-RGB+D 60 (masked depth PNG folders or legacy ``.npz``) into the dataset format.

    Args:
        protocol: ``xsub`` (cross-subject) or ``xview`` (cross-view) split.
    """
    from cross4d_core.data.format import DatasetWriter

    if protocol not in PROTOCOLS:
        raise ValueError(f"ntu60 protocol must be one of {PROTOCOLS}, got {protocol!r}")
    videos = find_videos(Path(src))
    if not videos:
        raise FileNotFoundError(f"{src}: no NTU-60 video folders (SsssCcccPpppRrrrAaaa/) or legacy .npz files")
    legacy = videos[0].suffix == ".npz"
    normalisation = {
        "protocol": protocol,
        "input": "legacy data .npz" if legacy else "masked depth PNG",
        "source_units": "legacy unit = depth_mm / 65535 * 100" if legacy else "mm",
        "scale_to_m": LEGACY_UNIT_TO_M if legacy else MM_TO_M,
        "backprojection": None if legacy else {"f": MSR_NTU_FOCAL, "principal_point": [256.0, 212.0]},
    }
    summary = ConversionSummary(source="ntu60", out=str(out))

    def write_one(video_id: str, path: Path) -> int:
        ids = parse_name(path)
        frames = read_legacy_npz(path) if legacy else pngs_to_frames(path)
        writer.add_video(
            video_id, frames, label=ids["action"] - 1, split=split_of(ids, protocol),
            subject=ids["performer"], stamps=np.arange(len(frames)) / FPS, meta={**ids, "file": path.name},
        )
        return len(frames)

    label_names = [f"A{a:03d}" for a in range(1, NUM_CLASSES + 1)]
    with DatasetWriter(out, source="ntu-rgbd-60", label_names=label_names, units="m",
                       normalisation=normalisation) as writer:
        items = [(p.name.removesuffix(".npz"), p) for p in videos]
        convert_items(writer, items, write_one, summary, progress, "ntu60", total=len(items))
    return summary.as_dict()
