"""Dataset readers: small files written in each real layout (DATA-FORMATS.md) are read back
with exact points (metres), labels, splits and tracks; corrupt files name themselves."""
from __future__ import annotations

import struct

import cv2
import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.data.format import Dataset4D
from cross4d_core.data.readers import SourceFormatError, dt4d, hoi4d, msr, ntu60


def expected_points(depth_mm: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Brute-force reference of the public back-projection (f = 280), in metres, row-major."""
    rows = []
    for v in range(depth_mm.shape[0]):
        for u in range(depth_mm.shape[1]):
            z = float(depth_mm[v, u])
            if z > 0:
                rows.append(((u - cx) * z / 280.0, (v - cy) * z / 280.0, z))
    return np.array(rows, dtype=np.float64).reshape(-1, 3) / 1000.0


def sparse_depth(rng, shape, fill=0.3, low=500, high=4000):
    depth = rng.integers(low, high, size=shape)
    depth[rng.random(shape) > fill] = 0
    return depth


def video_by_id(ds: Dataset4D, video_id: str):
    return ds.video(ds.index_of(video_id))


def frames_of(rec) -> list[np.ndarray]:
    return [np.asarray(rec.frame(t)) for t in range(rec.num_frames)]


# --- MSR-Action3D --------------------------------------------------------------------------


def write_msr_bin(path, depth: np.ndarray) -> None:
    T, H, W = depth.shape
    path.write_bytes(struct.pack("<3I", T, W, H) + depth.astype("<u4").tobytes())


def test_msr_bin_backprojection_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    depth = sparse_depth(rng, (3, 6, 8))
    depth[1] = 0  # an empty frame stays (and stays empty)
    path = tmp_path / "a03_s02_e01_sdepth.bin"
    write_msr_bin(path, depth)
    frames = msr.bin_to_frames(path)
    assert len(frames) == 3 and frames[1].shape == (0, 3)
    for t in (0, 2):
        assert frames[t].dtype == np.float32
        np.testing.assert_allclose(frames[t], expected_points(depth[t], 8 / 2, 6 / 2), rtol=1e-6, atol=1e-7)


def test_msr_convert_labels_splits_units_and_resume(tmp_path):
    rng = np.random.default_rng(1)
    src, out = tmp_path / "Depth", tmp_path / "out"
    src.mkdir()
    depths = {}
    for action, subject in [(1, 1), (2, 5), (20, 6), (7, 10)]:
        name = f"a{action:02d}_s{subject:02d}_e02_sdepth"
        depths[name] = sparse_depth(rng, (2, 4, 5))
        write_msr_bin(src / f"{name}.bin", depths[name])
    summary = msr.convert(src, out, progress=False)
    assert summary["written"] == 4 and summary["skipped_existing"] == 0 and summary["frames"] == 8
    ds = Dataset4D.open(out)
    assert ds.manifest["units"] == "m" and ds.manifest["normalisation"]["scale_to_m"] == 1e-3
    assert len(ds.label_names) == 20 and ds.label_names[0] == "high arm wave"
    expect = {"a01_s01_e02_sdepth": (0, "train", 1), "a02_s05_e02_sdepth": (1, "train", 5),
              "a20_s06_e02_sdepth": (19, "test", 6), "a07_s10_e02_sdepth": (6, "test", 10)}
    for vid, (label, split, subject) in expect.items():
        rec = video_by_id(ds, vid)
        assert (rec.label, rec.split, rec.subject) == (label, split, subject)
        for t, frame in enumerate(frames_of(rec)):
            np.testing.assert_allclose(frame, expected_points(depths[vid][t], 2.5, 2.0), rtol=1e-6, atol=1e-7)
    again = msr.convert(src, out, progress=False)
    assert again["written"] == 0 and again["skipped_existing"] == 4


def test_msr_legacy_npz_millimetres_to_metres(tmp_path):
    frames_mm = [np.array([[100.0, -200.0, 2500.0]]), np.arange(12, dtype=np.float64).reshape(4, 3) * 1000]
    obj = np.empty(2, dtype=object)
    obj[:] = frames_mm
    np.savez(tmp_path / "a05_s07_e03_sdepth.npz", point_clouds=obj)
    summary = msr.convert(tmp_path, tmp_path / "out", progress=False)
    assert summary["written"] == 1
    ds = Dataset4D.open(tmp_path / "out")
    rec = ds.video(0)
    assert (rec.id, rec.label, rec.split) == ("a05_s07_e03_sdepth", 4, "test")
    for got, mm in zip(frames_of(rec), frames_mm):
        np.testing.assert_allclose(got, mm / 1000.0, rtol=1e-6)


def test_msr_legacy_npz_refuses_non_numeric_objects(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[:] = [np.zeros((3, 3)), {"not": "points"}]
    path = tmp_path / "a01_s01_e01_sdepth.npz"
    np.savez(path, point_clouds=obj)
    with pytest.raises(SourceFormatError, match=r"a01_s01_e01_sdepth\.npz: point_clouds\[1\]"):
        msr.read_legacy_npz(path)


class _MakesADirectory:
    """Pickles as a call to ``os.mkdir``: what a hostile legacy file could smuggle in."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.mkdir, (self.path,)


def test_legacy_npz_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    obj = np.empty(2, dtype=object)
    obj[:] = [np.zeros((3, 3)), _MakesADirectory(marker)]
    path = tmp_path / "S001C001P001R001A001.npz"
    np.savez(path, data=obj)
    with pytest.raises(SourceFormatError, match=r"A001\.npz: unreadable .npz: UnpicklingError: global posix.mkdir"):
        ntu60.read_legacy_npz(path)
    assert not marker.exists()


def test_legacy_npz_plain_3d_array_and_missing_key(tmp_path):
    path = tmp_path / "a02_s03_e01_sdepth.npz"
    np.savez(path, point_clouds=np.full((2, 4, 3), 1000.0))
    np.testing.assert_allclose(np.stack(msr.read_legacy_npz(path)), np.ones((2, 4, 3)))
    np.savez(path, other=np.zeros(3))
    with pytest.raises(SourceFormatError, match=r"no key 'point_clouds' \(keys: \['other'\]\)"):
        msr.read_legacy_npz(path)


@pytest.mark.parametrize("cut", [4, 13, 40])
def test_msr_truncated_bin_names_the_file(tmp_path, cut):
    path = tmp_path / "a01_s01_e01_sdepth.bin"
    write_msr_bin(path, np.ones((2, 3, 4), dtype=np.uint32))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(SourceFormatError, match=str(path)):
        msr.read_depth_bin(path)


# --- NTU-RGB+D 60 --------------------------------------------------------------------------

XSUB_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}


@given(performer=st.integers(1, 40), camera=st.integers(1, 3), action=st.integers(1, 60))
def test_ntu_protocol_splits(performer, camera, action):
    path = ntu60.Path(f"S001C{camera:03d}P{performer:03d}R002A{action:03d}")
    ids = ntu60.parse_name(path)
    assert (ids["performer"], ids["camera"], ids["action"]) == (performer, camera, action)
    assert ntu60.split_of(ids, "xsub") == ("train" if performer in XSUB_TRAIN else "test")
    assert ntu60.split_of(ids, "xview") == ("test" if camera == 1 else "train")


def write_ntu_video(folder, depth: np.ndarray, first_index: int) -> None:
    folder.mkdir(parents=True)
    for t, frame in enumerate(depth):
        assert cv2.imwrite(str(folder / f"MDepth-{first_index + t:08d}.png"), frame.astype(np.uint16))


def test_ntu_masked_depth_pngs(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "nturgb+d_depth_masked"
    depths = {}
    for name in ("S001C001P001R001A010", "S002C002P003R002A060"):
        depth = np.zeros((3, 424, 512), dtype=np.uint16)
        depth[:, 200:206, 250:260] = sparse_depth(rng, (3, 6, 10), fill=0.5)
        depth[2, 0, 0] = 3000  # a corner pixel: far from the principal point
        depths[name] = depth
        write_ntu_video(root / name, depth, first_index=17)  # no assumed start index
    for protocol, splits in (("xsub", ("train", "test")), ("xview", ("test", "train"))):
        out = tmp_path / protocol
        assert ntu60.convert(tmp_path, out, progress=False, protocol=protocol)["written"] == 2
        ds = Dataset4D.open(out)
        assert ds.manifest["normalisation"]["protocol"] == protocol
        for name, split in zip(depths, splits):
            rec = video_by_id(ds, name)
            assert rec.split == split and rec.label == int(name[-3:]) - 1
            for t, frame in enumerate(frames_of(rec)):
                np.testing.assert_allclose(frame, expected_points(depths[name][t], 256, 212), rtol=1e-6, atol=1e-7)


def test_ntu_legacy_npz_unit_is_recorded_and_converted(tmp_path):
    legacy = [np.array([[0.1, -0.2, 1.0]]), np.array([[0.0, 0.0, 2.0], [1.0, 1.0, 3.0]])]
    obj = np.empty(2, dtype=object)
    obj[:] = legacy
    np.savez(tmp_path / "S003C003P007R001A042.npz", data=obj)
    ntu60.convert(tmp_path, tmp_path / "out", progress=False)
    ds = Dataset4D.open(tmp_path / "out")
    assert "65535" in ds.manifest["normalisation"]["source_units"]
    rec = ds.video(0)
    assert (rec.label, rec.split, rec.subject) == (41, "test", 7)
    for got, raw in zip(frames_of(rec), legacy):
        # z = depth_mm / 65535 * 100  ->  1 legacy unit = 655.35 mm
        np.testing.assert_allclose(got, raw * 655.35 / 1000.0, rtol=1e-6)


def test_ntu_corrupt_png_names_the_file(tmp_path):
    folder = tmp_path / "S001C001P001R001A001"
    write_ntu_video(folder, np.full((2, 424, 512), 1000, dtype=np.uint16), first_index=1)
    bad = folder / "MDepth-00000002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(SourceFormatError, match="MDepth-00000002.png"):
        ntu60.pngs_to_frames(folder)


def test_ntu_8bit_png_is_refused(tmp_path):
    folder = tmp_path / "S001C001P001R001A001"
    folder.mkdir()
    cv2.imwrite(str(folder / "MDepth-00000001.png"), np.full((424, 512), 7, np.uint8))
    with pytest.raises(SourceFormatError, match="16-bit"):
        ntu60.read_depth_pngs(folder)


# --- HOI4D ---------------------------------------------------------------------------------


def write_hoi4d(path, pcd, center, label):
    with h5py.File(path, "w") as f:
        f["pcd"], f["center"], f["label"] = pcd, center, label


def test_hoi4d_h5_per_frame_labels_and_centre(tmp_path):
    rng = np.random.default_rng(3)
    data = {}
    for name, n in (("train1.h5", 2), ("test1.h5", 1)):
        pcd = rng.normal(size=(n, 5, 16, 3)).astype(np.float32)
        center = rng.normal(size=(n, 5, 3)).astype(np.float32)
        label = rng.integers(0, 19, size=(n, 5)).astype(np.int64)
        write_hoi4d(tmp_path / name, pcd, center, label)
        data[name.removesuffix(".h5")] = (pcd, center, label)
    summary = hoi4d.convert(tmp_path, tmp_path / "out", progress=False)
    assert summary["written"] == 3 and summary["frames"] == 15
    ds = Dataset4D.open(tmp_path / "out")
    assert ds.manifest["normalisation"]["subtract_center"]
    for stem, (pcd, center, label) in data.items():
        for i in range(len(pcd)):
            rec = video_by_id(ds, f"{stem}_{i:05d}")
            assert rec.split == ("train" if stem.startswith("train") else "test") and rec.label == -1
            assert rec.meta["meta"]["frame_labels"] == label[i].tolist()
            got = np.stack(frames_of(rec))
            np.testing.assert_allclose(got, pcd[i] - center[i, 0], rtol=1e-6, atol=1e-6)


def test_hoi4d_missing_dataset_and_truncation_name_the_file(tmp_path):
    path = tmp_path / "train2.h5"
    with h5py.File(path, "w") as f:
        f["pcd"] = np.zeros((1, 2, 4, 3), np.float32)
        f["label"] = np.zeros((1, 2), np.int64)
    with pytest.raises(SourceFormatError, match=r"train2\.h5: missing datasets \['center'\]"):
        hoi4d.open_file(path)
    good = tmp_path / "test3.h5"
    write_hoi4d(good, np.zeros((4, 8, 64, 3), np.float32), np.zeros((4, 8, 3), np.float32),
                np.zeros((4, 8), np.int64))
    good.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(SourceFormatError, match=r"test3\.h5"):
        hoi4d.convert(good.parent, tmp_path / "out2", progress=False)


# --- DeformingThings4D ---------------------------------------------------------------------


def write_anime(path, v0: np.ndarray, faces: np.ndarray, offsets: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nf, nv, nt = len(offsets) + 1, len(v0), len(faces)
    path.write_bytes(struct.pack("<3i", nf, nv, nt) + v0.astype("<f4").tobytes() + faces.astype("<i4").tobytes()
                     + offsets.astype("<f4").tobytes())


# Two triangles with areas 1 and 3 (z = 0 plane).
V0 = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], dtype=np.float32)
FACES = np.array([[0, 1, 2], [3, 4, 5]])


def test_anime_offsets_are_relative_to_frame_0(tmp_path):
    offsets = np.stack([np.full((6, 3), 1.0), np.full((6, 3), 0.5)]).astype(np.float32)
    path = tmp_path / "bear_Walk" / "bear_Walk.anime"
    write_anime(path, V0, FACES, offsets)
    vertices, faces = dt4d.read_anime(path)
    np.testing.assert_array_equal(faces, FACES)
    np.testing.assert_array_equal(vertices[0], V0)
    np.testing.assert_array_equal(vertices[2], V0 + 0.5)  # not V0 + 1.5 (offsets do not accumulate)


def test_surface_sampling_is_area_weighted_and_on_the_mesh():
    face, bary = dt4d.sample_surface(V0, FACES, 40_000, np.random.default_rng(0))
    assert abs((face == 1).mean() - 0.75) < 0.01
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1)
    points = dt4d.evaluate_surface(V0[None], FACES, face, bary)[0]
    second = points[face == 1]
    # inside triangle (10,0)-(13,0)-(10,2): x >= 10, y >= 0, x/3 + y/2 <= 1 relative to the corner
    assert (second[:, 0] >= 10 - 1e-5).all() and (second[:, 1] >= -1e-6).all()
    assert ((second[:, 0] - 10) / 3 + second[:, 1] / 2 <= 1 + 1e-5).all()


def test_dt4d_convert_tracks_follow_the_surface_exactly(tmp_path):
    rng = np.random.default_rng(4)
    # Every frame is an affine map of frame 0, so a surface point at fixed barycentric
    # coordinates moves by the same map: points_t = A_t points_0 + b_t, exactly.
    maps = [(np.eye(3), np.zeros(3))] + [(rng.normal(size=(3, 3)), rng.normal(size=3)) for _ in range(3)]
    frames = np.stack([V0 @ A.T + b for A, b in maps]).astype(np.float32)
    write_anime(tmp_path / "humanoids" / "girl_Jump" / "girl_Jump.anime", V0, FACES, frames[1:] - frames[0])
    write_anime(tmp_path / "animals" / "bear3EP_Walk" / "bear3EP_Walk.anime", V0, FACES,
                np.zeros((1, 6, 3), np.float32))
    summary = dt4d.convert(tmp_path, tmp_path / "out", progress=False, num_points=64, seed=7)
    assert summary["written"] == 2
    ds = Dataset4D.open(tmp_path / "out")
    assert ds.label_names == ["Jump", "Walk"]
    rec = video_by_id(ds, "humanoids__girl_Jump")
    assert rec.label == 0 and rec.split == dt4d.identity_split("girl", 0.2)
    got = np.stack(frames_of(rec))
    assert got.shape == (4, 64, 3)
    for t, (A, b) in enumerate(maps):
        np.testing.assert_allclose(got[t], got[0] @ A.T + b, atol=1e-4)
        np.testing.assert_array_equal(rec.frame_values("track", t), np.arange(64))
    # the stored samples are the seeded (triangle, barycentric) pairs of this video
    face, bary = dt4d.sample_surface(V0, FACES, 64, np.random.default_rng(dt4d.video_seed(7, rec.id)))
    np.testing.assert_allclose(got, dt4d.evaluate_surface(frames, FACES, face, bary), atol=1e-5)


@pytest.mark.parametrize("cut", [1, 20])
def test_truncated_anime_names_the_file(tmp_path, cut):
    path = tmp_path / "fox_Run" / "fox_Run.anime"
    write_anime(path, V0, FACES, np.zeros((2, 6, 3), np.float32))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(SourceFormatError, match=r"fox_Run\.anime: .* bytes"):
        dt4d.convert(tmp_path, tmp_path / "out", progress=False)


def test_anime_bad_triangle_index_names_the_file(tmp_path):
    path = tmp_path / "fox_Run" / "fox_Run.anime"
    write_anime(path, V0, np.array([[0, 1, 9]]), np.zeros((1, 6, 3), np.float32))
    with pytest.raises(SourceFormatError, match=r"fox_Run\.anime: triangle indices"):
        dt4d.read_anime(path)
