"""NTU-RGB+D 60 reader: masked depth PNGs and the legacy ``data`` ``.npz``.

Layouts (the dataset's public releases): ``nturgb+d_depth_masked/SsssCcccPpppRrrrAaaa/MDepth-%08d.png``,
16-bit PNG (depth in millimetres, background 0), back-projected with principal point
(256, 212) and f = 280 as in the public conversion. Frames are ordered by the number in
their file name (no start index is assumed) and stamped by it:
``stamp = (number - first number) / 30 fps``, so a missing frame number (1, 2, 4) leaves a
1/15 s gap in the stamps instead of being closed up silently; every gap is listed in the
video's meta (``missing_frames``) and in the conversion summary (``reported``).

The legacy ``SsssCcccPpppRrrrAaaa.npz`` is what PSTNet's ``scripts/depth2point4ntu.py``
(hehefan/Point-Spatio-Temporal-Convolution, also used by P4Transformer) writes: it reads
each PNG with ``matplotlib.image.imread``, which returns ``uint16 / 65535``, back-projects
those values (``x = (u - 256) z / 280``, ``y = (v - 212) z / 280``) and saves key ``data``
(one ``[N_t, 3]`` array per frame) with no further scaling; the public loaders multiply
by 100 when loading. So one stored unit is 65535 mm: metres = stored x 65.535. That
script lists the PNGs with ``sorted(os.listdir())`` and keeps no frame numbers, so legacy
stamps are ``index / 30 fps`` (a gap in the source cannot be seen there).

Protocols: cross-subject (``xsub``: the 20 training performers below) and cross-view
(``xview``: cameras 2, 3 train, camera 1 test). Label = action - 1; class names are the
60 official action names of the dataset's README (shahroudy/NTURGB-D). Output in metres.
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

#: Masked depth maps are 512 x 424, so the centred principal point is (256, 212).
DEPTH_SIZE = (424, 512)
FPS = 30.0
MM_TO_M = 1e-3
#: metres per legacy ``.npz`` unit: matplotlib stores depth_mm / 65535, saved unscaled.
LEGACY_UNIT_TO_M = 65535.0 * MM_TO_M
#: The official names of actions A1..A60 (README of shahroudy/NTURGB-D); label = action - 1.
ACTION_NAMES = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup", "throw",
    "sitting down", "standing up (from sitting position)", "clapping", "reading", "writing",
    "tear up paper", "wear jacket", "take off jacket", "wear a shoe", "take off a shoe", "wear on glasses",
    "take off glasses", "put on a hat/cap", "take off a hat/cap", "cheer up", "hand waving",
    "kicking something", "put something inside pocket / take out something from pocket",
    "hopping (one foot jumping)", "jump up", "make a phone call/answer phone", "playing with phone/tablet",
    "typing on a keyboard", "pointing to something with finger", "taking a selfie", "check time (from watch)",
    "rub two hands together", "nod head/bow", "shake head", "wipe face", "salute", "put the palms together",
    "cross hands in front (say stop)", "sneeze/cough", "staggering", "falling", "touch head (headache)",
    "touch chest (stomachache/heart pain)", "touch back (backache)", "touch neck (neckache)",
    "nausea or vomiting condition", "use a fan (with hand or paper)/feeling warm",
    "punching/slapping other person", "kicking other person", "pushing other person",
    "pat on back of other person", "point finger at the other person", "hugging other person",
    "giving something to other person", "touch other person's pocket", "handshaking",
    "walking towards each other", "walking apart from each other",
)
NUM_CLASSES = len(ACTION_NAMES)
XSUB_TRAIN_PERFORMERS = frozenset(
    {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
)
XVIEW_TRAIN_CAMERAS = frozenset({2, 3})
PROTOCOLS = ("xsub", "xview")

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_FRAME = re.compile(r"MDepth-(\d+)\.png")


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


def frame_files(folder: Path) -> tuple[list[Path], np.ndarray]:
    """The ``MDepth-<number>.png`` files of a video folder ordered by number, and the ``[T]``
    int64 frame numbers (which need not start at 1 or be contiguous)."""
    numbered = []
    for f in Path(folder).glob("MDepth-*.png"):
        m = _FRAME.fullmatch(f.name)
        if not m:
            raise SourceFormatError(f, "name does not match MDepth-<frame number>.png")
        numbered.append((int(m.group(1)), f))
    if not numbered:
        raise SourceFormatError(folder, "no MDepth-*.png files")
    numbered.sort()
    numbers = np.array([n for n, _ in numbered], np.int64)
    repeated = numbers[1:][numbers[1:] == numbers[:-1]]
    if repeated.size:
        raise SourceFormatError(folder, f"frame number {int(repeated[0])} appears in two file names")
    return [f for _, f in numbered], numbers


def read_depth_pngs(files: list[Path]) -> np.ndarray:
    """``[T, H, W]`` uint16 depth (mm) of 16-bit masked depth PNGs, in the given order."""
    import cv2

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


def missing_numbers(numbers: np.ndarray) -> list[int]:
    """Frame numbers absent between the first and the last of ``numbers`` (sorted, unique)."""
    return np.setdiff1d(np.arange(numbers[0], numbers[-1] + 1), numbers).tolist()


def pngs_to_frames(folder: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-frame ``[n_t, 3]`` float32 points in metres of a masked-depth video folder, and the
    ``[T]`` int64 frame numbers of its files."""
    files, numbers = frame_files(folder)
    return backproject_depth(read_depth_pngs(files), MM_TO_M), numbers


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
        "source_units": ("depth_mm / 65535 (matplotlib imread of the 16-bit PNG), back-projected, unscaled"
                         if legacy else "mm"),
        "scale_to_m": LEGACY_UNIT_TO_M if legacy else MM_TO_M,
        "backprojection": (f"done by the legacy script: f = {MSR_NTU_FOCAL}, principal point (256, 212)" if legacy
                           else {"f": MSR_NTU_FOCAL, "principal_point": [256.0, 212.0]}),
        "stamps": (f"frame index / {FPS} fps (the legacy file keeps no frame numbers)" if legacy else
                   f"(frame number - first frame number) / {FPS} fps; missing numbers listed in meta "
                   "'missing_frames' and in the summary"),
    }
    summary = ConversionSummary(source="ntu60", out=str(out))
    gaps = summary.reported.setdefault("missing_frames", {})

    def write_one(video_id: str, path: Path) -> int:
        ids = parse_name(path)
        meta = {**ids, "file": path.name}
        if legacy:
            frames = read_legacy_npz(path)
            stamps = seconds_to_ns(np.arange(len(frames)) / FPS)
        else:
            frames, numbers = pngs_to_frames(path)
            stamps = seconds_to_ns((numbers - numbers[0]) / FPS)
            meta["frame_numbers"] = [int(numbers[0]), int(numbers[-1])]
            meta["missing_frames"] = missing_numbers(numbers)
            if meta["missing_frames"]:
                gaps[video_id] = meta["missing_frames"]
        writer.add_video(video_id, frames, label=ids["action"] - 1, split=split_of(ids, protocol),
                         subject=ids["performer"], stamps_ns=stamps, meta=meta)
        return len(frames)

    with DatasetWriter(out, source="ntu-rgbd-60", label_names=list(ACTION_NAMES), units="m",
                       normalisation=normalisation) as writer:
        items = [(p.name.removesuffix(".npz"), p) for p in videos]
        convert_items(writer, items, write_one, summary, progress, "ntu60", total=len(items))
    return summary.as_dict()
