"""DeformingThings4D reader (``.anime`` animations) with exact point tracks.

``.anime`` layout (little-endian, rabbityl/DeformingThings4D README): int32
``nf, nv, nt``; float32 ``[nv, 3]`` frame-0 vertices; int32 ``[nt, 3]`` triangles; float32
``[nf-1, nv, 3]`` displacements of frames 1..nf-1 relative to frame 0.

Points are sampled on the frame-0 surface, area-weighted, as (triangle, barycentric)
pairs fixed for the whole clip (seeded per video), so the same pair evaluated on every
frame's mesh gives exact ground-truth tracks: point ``n`` of every frame has track id ``n``.

Layout: ``humanoids/`` and ``animals/`` hold ``[objectID]_[ActionID]/[objectID]_[ActionID].anime``;
the flat ``[objectID]_[ActionID].anime`` (no per-animation folder) is read too. The
animation name is the file's stem, split at its first ``_``; a stem without one is
refused naming the file and the expected layout. Convert ``animals/`` alone for the
paper's DT4D-Animals task.

Labels (``label_by``): ``category`` (default, the paper's 38-way DT4D-Animals task) is the
object id's leading run of lowercase letters (``bear3EP`` -> ``bear``, ``grizzRSS`` ->
``grizz``, ``duck`` -> ``duck``); over the 59 animal identities of DT4D's ``animals/`` this
gives exactly 38 categories. ``action`` is the ActionID, ``identity`` the objectID.

Split (there is no official one), cross-identity and deterministic: all animations of an
identity share a split. Identities are visited in order of the SHA-1 of their id and
moved to ``test`` while the test split holds fewer than ``test_fraction`` of all
animations, skipping an identity whose category would lose its last training identity
(so every test category is seen in training; categories with one identity stay in
``train``). The split depends on the set of animations converted: convert the whole
folder at once. The test identities are recorded in the manifest.
The meshes declare no unit; coordinates are kept as stored (treated as metres).
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np

from cross4d_core.data.readers.common import ConversionSummary, SourceFormatError, convert_items

#: ``label_by`` choices: the animal category, the ActionID or the objectID.
LABEL_BY = ("category", "action", "identity")
_CATEGORY = re.compile(r"[a-z]+")


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


def category_of(object_id: str) -> str:
    """The animal category of an object id: its leading lowercase letters (``bear3EP`` -> ``bear``)."""
    m = _CATEGORY.match(object_id)
    if not m:
        raise ValueError(f"object id {object_id!r} does not start with a lowercase category name")
    return m.group(0)


def identity_digest(object_id: str) -> str:
    """The SHA-1 hex digest ordering identities for the split."""
    return hashlib.sha1(object_id.encode()).hexdigest()


def identity_split(animations: dict[str, int], test_fraction: float) -> dict[str, str]:
    """``{object_id: "train" | "test"}`` for identities with ``animations[object_id]``
    animations each (the rule of the module docstring)."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"dt4d test_fraction must lie in [0, 1), got {test_fraction}")
    target = test_fraction * sum(animations.values())
    train_left = Counter(category_of(object_id) for object_id in animations)
    split = dict.fromkeys(animations, "train")
    in_test = 0
    for object_id in sorted(animations, key=identity_digest):
        if in_test >= target:
            break
        category = category_of(object_id)
        if train_left[category] > 1:
            split[object_id] = "test"
            train_left[category] -= 1
            in_test += animations[object_id]
    return split


def parse_animation(path: Path) -> tuple[str, str]:
    """``(object_id, action_id)`` of an ``.anime`` file from its stem ``[objectID]_[ActionID]``."""
    object_id, sep, action = Path(path).stem.partition("_")
    if not sep or not object_id or not action:
        raise SourceFormatError(path, "name is not [objectID]_[ActionID].anime; expected "
                                      "[objectID]_[ActionID]/[objectID]_[ActionID].anime or a flat "
                                      "[objectID]_[ActionID].anime")
    return object_id, action


def video_id_of(path: Path, src: Path) -> str:
    """``animals/bear3EP_Walk/bear3EP_Walk.anime`` -> ``animals__bear3EP_Walk``; the flat
    ``bear3EP_Walk.anime`` -> ``bear3EP_Walk``."""
    parts = list(path.relative_to(src).parent.parts)
    if parts and parts[-1] == path.stem:
        parts.pop()
    return "__".join(parts + [path.stem])


def convert(src: Path, out: Path, progress: bool = True, num_points: int = 2048, seed: int = 0,
            label_by: str = "category", test_fraction: float = 0.2) -> dict:
    """Convert DeformingThings4D ``.anime`` files into the dataset format (points, tracks).

    Args:
        num_points: surface samples per frame.
        seed: base seed of the per-video barycentric sampling.
        label_by: ``category`` (object id's lowercase prefix), ``action`` (ActionID) or
            ``identity`` (objectID).
        test_fraction: share of the animations the cross-identity split aims to put in ``test``
            (the paper's 359 of 1,772 is 0.203).
    """
    from cross4d_core.data.format import DatasetWriter

    if label_by not in LABEL_BY:
        raise ValueError(f"dt4d label_by must be one of {LABEL_BY}, got {label_by!r}")
    src = Path(src)
    files = sorted(src.rglob("*.anime"))
    if not files:
        raise FileNotFoundError(f"{src}: no .anime files")
    animations: dict[str, dict] = {}
    for f in files:
        object_id, action = parse_animation(f)
        try:
            category = category_of(object_id)
        except ValueError as exc:
            raise SourceFormatError(f, str(exc)) from None
        video_id = video_id_of(f, src)
        if video_id in animations:
            raise SourceFormatError(f, f"same animation as {animations[video_id]['path']} (video id {video_id!r})")
        animations[video_id] = {"path": f, "identity": object_id, "action": action, "category": category}
    split = identity_split(Counter(a["identity"] for a in animations.values()), test_fraction)
    label_names = sorted({a[label_by] for a in animations.values()})
    normalisation = {
        "source_units": "undeclared (mesh units kept, treated as metres)",
        "scale_to_m": 1.0,
        "sampling": {"num_points": num_points, "seed": seed, "method": "area-weighted on frame 0, "
                     "barycentric fixed per video; seed = sha1(f'{seed}:{video_id}')"},
        "label_by": label_by,
        "category": "object id's leading lowercase letters (bear3EP -> bear)",
        "split": {"kind": "cross-identity: identities in sha1(objectID) order go to test while test holds < "
                          "test_fraction of the animations, never a category's last training identity",
                  "test_fraction": test_fraction,
                  "test_identities": sorted(i for i, s in split.items() if s == "test")},
    }
    summary = ConversionSummary(source="dt4d", out=str(out))

    def write_one(video_id: str, a: dict) -> int:
        path = a["path"]
        vertices, faces = read_anime(path)
        try:
            face_index, bary = sample_surface(vertices[0], faces, num_points,
                                              np.random.default_rng(video_seed(seed, video_id)))
        except ValueError as exc:
            raise SourceFormatError(path, str(exc)) from None
        points = evaluate_surface(vertices, faces, face_index, bary)
        track = np.broadcast_to(np.arange(num_points, dtype=np.int64), points.shape[:2])
        writer.add_video(
            video_id, points, label=label_names.index(a[label_by]), split=split[a["identity"]],
            track=np.ascontiguousarray(track),
            meta={"file": str(path.relative_to(src)), "object": a["identity"], "action": a["action"],
                  "category": a["category"]},
        )
        return len(points)

    with DatasetWriter(out, source="deformingthings4d", label_names=label_names, units="m",
                       normalisation=normalisation) as writer:
        convert_items(writer, list(animations.items()), write_one, summary, progress, "dt4d", total=len(animations))
    return summary.as_dict()
