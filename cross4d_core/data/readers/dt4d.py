"""DeformingThings4D reader (``.anime`` animations) with exact point tracks.

``.anime`` layout (little-endian, DATA-FORMATS.md): int32 ``nf, nv, nt``; float32
``[nv, 3]`` frame-0 vertices; int32 ``[nt, 3]`` triangles; float32 ``[nf-1, nv, 3]``
displacements of frames 1..nf-1 relative to frame 0.

Points are sampled on the frame-0 surface, area-weighted, as (triangle, barycentric)
pairs fixed for the whole clip (seeded per video), so the same pair evaluated on every
frame's mesh gives exact ground-truth tracks: point ``n`` of every frame has track id ``n``.

Folders ``humanoids/`` and ``animals/`` hold ``[objectID]_[ActionID]/[name].anime``.
There is no official split: the split here is cross-identity and deterministic (an
identity goes to test when the first byte of its SHA-1 is below ``test_fraction * 256``).
Labels are action names (``label_by="action"``) or object identities (``"object"``).
The meshes declare no unit; coordinates are kept as stored (treated as metres).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cross4d_core.data.readers.common import ConversionSummary, SourceFormatError, convert_items

def read_anime(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices [nf, nv, 3] float32 absolute positions, faces [nt, 3] int64)`` of a ``.anime`` file."""
    raw = Path(path).read_bytes()
    if len(raw) < 12:
        raise SourceFormatError(path, f"{len(raw)} bytes, shorter than the 12-byte header")
    nf, nv, nt = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    if nf < 1 or nv < 3 or nt < 1:
        raise SourceFormatError(path, f"bad header: nf={nf} nv={nv} nt={nt}")
    need = 12 + 4 * (nv * 3 + nt * 3 + (nf - 1) * nv * 3)
    if len(raw) != need:
        raise SourceFormatError(path, f"{len(raw)} bytes, header nf={nf} nv={nv} nt={nt} needs {need}")
    offset = 12
    v0 = np.frombuffer(raw, dtype="<f4", count=nv * 3, offset=offset).reshape(nv, 3)
    offset += 4 * nv * 3
    faces = np.frombuffer(raw, dtype="<i4", count=nt * 3, offset=offset).reshape(nt, 3).astype(np.int64)
    offset += 4 * nt * 3
    offsets = np.frombuffer(raw, dtype="<f4", count=(nf - 1) * nv * 3, offset=offset).reshape(nf - 1, nv, 3)
    if faces.min() < 0 or faces.max() >= nv:
        raise SourceFormatError(path, f"triangle indices outside 0..{nv - 1}: [{faces.min()}, {faces.max()}]")
    vertices = np.concatenate([v0[None], v0[None] + offsets]).astype(np.float32)
    if not np.isfinite(vertices).all():
        raise SourceFormatError(path, "non-finite vertex positions or offsets")
    return vertices, faces


def sample_surface(vertices0: np.ndarray, faces: np.ndarray, num_points: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples on a triangle mesh.

    Args:
        vertices0: ``[nv, 3]`` vertex positions defining the sampling areas.
        faces: ``[nt, 3]`` triangle vertex indices.

    Returns:
        ``(face_index [num_points] int64, barycentric [num_points, 3] float64)``.
    """
    a, b, c = (vertices0[faces[:, k]].astype(np.float64) for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = area.sum()
    if not total > 0:
        raise ValueError("sample_surface: the mesh has zero surface area")
    face_index = rng.choice(len(faces), size=num_points, p=area / total)
    r1, r2 = rng.random(num_points), rng.random(num_points)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return face_index.astype(np.int64), bary


def evaluate_surface(vertices: np.ndarray, faces: np.ndarray, face_index: np.ndarray,
                     bary: np.ndarray) -> np.ndarray:
    """``[T, P, 3]`` float32 positions of fixed (triangle, barycentric) samples on ``vertices [T, nv, 3]``."""
    corners = vertices[:, faces[face_index]].astype(np.float64)  # [T, P, 3 corners, 3]
    return np.einsum("tpkd,pk->tpd", corners, bary).astype(np.float32)


def video_seed(seed: int, video_id: str) -> int:
    """The per-video sampling seed (stable across runs and machines)."""
    digest = hashlib.sha1(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def identity_split(object_id: str, test_fraction: float) -> str:
    """Deterministic cross-identity split of an object id."""
    return "test" if hashlib.sha1(object_id.encode()).digest()[0] < test_fraction * 256 else "train"


def parse_folder(name: str) -> tuple[str, str]:
    """``(object_id, action_id)`` from ``[objectID]_[ActionID]``."""
    object_id, sep, action = name.partition("_")
    if not sep or not object_id or not action:
        raise ValueError(f"DeformingThings4D folder {name!r} is not [objectID]_[ActionID]")
    return object_id, action


def convert(src: Path, out: Path, progress: bool = True, num_points: int = 2048, seed: int = 0,
            label_by: str = "action", test_fraction: float = 0.2) -> dict:
    """Convert DeformingThings4D ``.anime`` files into the dataset format (points, tracks).

    Args:
        num_points: surface samples per frame.
        seed: base seed of the per-video barycentric sampling.
        label_by: ``action`` (label = ActionID) or ``object`` (label = objectID).
        test_fraction: share of identities in the test split.
    """
    from cross4d_core.data.format import DatasetWriter

    if label_by not in ("action", "object"):
        raise ValueError(f"dt4d label_by must be 'action' or 'object', got {label_by!r}")
    src = Path(src)
    files = sorted(src.rglob("*.anime"))
    if not files:
        raise FileNotFoundError(f"{src}: no .anime files")
    ids = {}
    for f in files:
        try:
            ids[f] = parse_folder(f.parent.name)
        except ValueError as exc:
            raise SourceFormatError(f, str(exc)) from None
    label_names = sorted({obj if label_by == "object" else act for obj, act in ids.values()})
    normalisation = {
        "source_units": "undeclared (mesh units kept, treated as metres)",
        "scale_to_m": 1.0,
        "sampling": {"num_points": num_points, "seed": seed, "method": "area-weighted on frame 0, "
                     "barycentric fixed per video; seed = sha1(f'{seed}:{video_id}')"},
        "split": {"kind": "cross-identity, sha1(objectID)[0] < test_fraction*256", "test_fraction": test_fraction},
        "label_by": label_by,
    }
    summary = ConversionSummary(source="dt4d", out=str(out))

    def write_one(video_id: str, path: Path) -> int:
        object_id, action = ids[path]
        vertices, faces = read_anime(path)
        try:
            face_index, bary = sample_surface(vertices[0], faces, num_points,
                                              np.random.default_rng(video_seed(seed, video_id)))
        except ValueError as exc:
            raise SourceFormatError(path, str(exc)) from None
        points = evaluate_surface(vertices, faces, face_index, bary)
        track = np.broadcast_to(np.arange(num_points, dtype=np.int64), points.shape[:2])
        writer.add_video(
            video_id, points, label=label_names.index(object_id if label_by == "object" else action),
            split=identity_split(object_id, test_fraction),
            track=np.ascontiguousarray(track),
            meta={"file": str(path.relative_to(src)), "object": object_id, "action": action},
        )
        return len(points)

    with DatasetWriter(out, source="deformingthings4d", label_names=label_names, units="m",
                       normalisation=normalisation) as writer:
        items = [(str(f.parent.relative_to(src)).replace("/", "__"), f) for f in files]
        convert_items(writer, items, write_one, summary, progress, "dt4d", total=len(items))
    return summary.as_dict()
