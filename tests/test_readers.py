"""Dataset readers: small files written in each real layout (from the datasets' public format
descriptions) are read back
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
    assert ds.label_names[19] == "pick up & throw"
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
NTU_W, NTU_H, NTU_FOCAL = 512, 424, 280


@given(performer=st.integers(1, 40), camera=st.integers(1, 3), action=st.integers(1, 60))
def test_ntu_protocol_splits(performer, camera, action):
    path = ntu60.Path(f"S001C{camera:03d}P{performer:03d}R002A{action:03d}")
    ids = ntu60.parse_name(path)
    assert (ids["performer"], ids["camera"], ids["action"]) == (performer, camera, action)
    assert ntu60.split_of(ids, "xsub") == ("train" if performer in XSUB_TRAIN else "test")
    assert ntu60.split_of(ids, "xview") == ("test" if camera == 1 else "train")


def ntu_reference_points(depth_mm: np.ndarray) -> np.ndarray:
    """The public back-projection (f = 280, centre (W/2, H/2) = (256, 212)) of one 512x424
    depth map in millimetres, in metres, pixels row-major (numpy, as the public script)."""
    xx, yy = np.meshgrid(np.arange(NTU_W), np.arange(NTU_H))
    valid = depth_mm > 0
    z = depth_mm[valid].astype(np.float64) / 1000.0
    return np.stack([(xx[valid] - NTU_W / 2) / NTU_FOCAL * z, (yy[valid] - NTU_H / 2) / NTU_FOCAL * z, z], axis=-1)


def write_ntu_video(folder, depth: np.ndarray, numbers) -> None:
    """16-bit masked depth PNGs ``MDepth-%08d.png`` (millimetres), one per frame number."""
    folder.mkdir(parents=True)
    for number, frame in zip(numbers, depth):
        assert cv2.imwrite(str(folder / f"MDepth-{number:08d}.png"), frame.astype(np.uint16))


def ntu_depth(rng, frames: int) -> np.ndarray:
    depth = np.zeros((frames, NTU_H, NTU_W), dtype=np.uint16)
    depth[:, 200:206, 250:260] = sparse_depth(rng, (frames, 6, 10), fill=0.5)
    depth[:, 0, 0] = 3000  # a corner pixel: far from the principal point
    depth[:, 423, 511] = 4500
    return depth


def test_ntu_official_class_names():
    ds_names = ntu60.ACTION_NAMES
    assert len(ds_names) == 60 and len(set(ds_names)) == 60
    assert ds_names[0] == "drink water" and ds_names[59] == "walking apart from each other"
    assert ds_names[24] == "put something inside pocket / take out something from pocket"
    assert ds_names[48] == "use a fan (with hand or paper)/feeling warm"
    assert ds_names[49] == "punching/slapping other person"


def test_ntu_masked_depth_pngs(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "nturgb+d_depth_masked"
    depths = {}
    for name in ("S001C001P001R001A010", "S002C002P003R002A060"):
        depths[name] = ntu_depth(rng, 3)
        write_ntu_video(root / name, depths[name], numbers=[17, 18, 19])  # no assumed start index
    for protocol, splits in (("xsub", ("train", "test")), ("xview", ("test", "train"))):
        out = tmp_path / protocol
        summary = ntu60.convert(tmp_path, out, progress=False, protocol=protocol)
        assert summary["written"] == 2 and summary["reported"]["missing_frames"] == {}
        ds = Dataset4D.open(out)
        assert ds.manifest["normalisation"]["protocol"] == protocol
        assert ds.label_names[9] == "clapping" and ds.label_names[59] == "walking apart from each other"
        for name, split in zip(depths, splits):
            rec = video_by_id(ds, name)
            assert rec.split == split and rec.label == int(name[-3:]) - 1
            np.testing.assert_array_equal(rec.stamps_ns, [0, 33_333_333, 66_666_667])
            for t, frame in enumerate(frames_of(rec)):
                np.testing.assert_allclose(frame, ntu_reference_points(depths[name][t]), rtol=1e-6, atol=1e-7)
            assert frames_of(rec)[0][-1, 2] == pytest.approx(4.5)  # 4500 mm -> 4.5 m


def test_ntu_missing_frame_number_keeps_its_time_gap_and_is_reported(tmp_path):
    depth = ntu_depth(np.random.default_rng(5), 3)
    write_ntu_video(tmp_path / "S001C001P002R001A005", depth, numbers=[1, 2, 4])
    summary = ntu60.convert(tmp_path, tmp_path / "out", progress=False)
    assert summary["reported"]["missing_frames"] == {"S001C001P002R001A005": [3]}
    rec = Dataset4D.open(tmp_path / "out").video(0)
    np.testing.assert_array_equal(rec.stamps_ns, [0, 33_333_333, 100_000_000])  # not 3 evenly spaced frames
    assert rec.meta["meta"]["missing_frames"] == [3] and rec.meta["meta"]["frame_numbers"] == [1, 4]
    np.testing.assert_allclose(frames_of(rec)[2], ntu_reference_points(depth[2]), rtol=1e-6, atol=1e-7)


@given(numbers=st.sets(st.integers(0, 400), min_size=1, max_size=30))
def test_ntu_frames_follow_their_numbers(numbers):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for n in numbers:  # frame_files reads names only
            (Path(tmp) / f"MDepth-{n:08d}.png").touch()
        files, got = ntu60.frame_files(Path(tmp))
    expected = sorted(numbers)
    assert got.tolist() == expected and [int(f.stem[7:]) for f in files] == expected
    assert ntu60.missing_numbers(got) == sorted(set(range(expected[0], expected[-1] + 1)) - numbers)


def test_ntu_frame_names_are_checked(tmp_path):
    folder = tmp_path / "S001C001P001R001A001"
    folder.mkdir()
    (folder / "MDepth-00000001.png").touch()
    (folder / "MDepth-1.png").touch()
    with pytest.raises(SourceFormatError, match=r"A001: frame number 1 appears in two file names"):
        ntu60.frame_files(folder)
    (folder / "MDepth-1.png").unlink()
    (folder / "MDepth-final.png").touch()
    with pytest.raises(SourceFormatError, match=r"MDepth-final\.png: name does not match"):
        ntu60.frame_files(folder)


def write_pstnet_legacy_npz(video_folder, out_dir) -> None:
    """What PSTNet's scripts/depth2point4ntu.py does to one video folder: matplotlib reads the
    16-bit PNG as uint16 / 65535, back-projects it with f = 280 and centre (W/2, H/2), and
    saves the per-frame arrays under ``data`` with no further scaling."""
    import os

    from matplotlib.image import imread

    xx, yy = np.meshgrid(np.arange(NTU_W), np.arange(NTU_H))
    point_clouds = []
    for img_name in sorted(os.listdir(video_folder)):
        depth_map = imread(os.path.join(video_folder, img_name))
        x, y, z = xx[depth_map > 0], yy[depth_map > 0], depth_map[depth_map > 0]
        x = (x - NTU_W / 2) / NTU_FOCAL * z
        y = (y - NTU_H / 2) / NTU_FOCAL * z
        point_clouds.append(np.stack([x, y, z], axis=-1))
    data = np.empty(len(point_clouds), dtype=object)
    data[:] = point_clouds
    np.savez_compressed(os.path.join(out_dir, video_folder.name + ".npz"), data=data)


def test_ntu_legacy_npz_of_the_public_script_is_metres(tmp_path):
    depth = ntu_depth(np.random.default_rng(6), 2)
    write_ntu_video(tmp_path / "png" / "S003C003P007R001A042", depth, numbers=[1, 2])
    (tmp_path / "npz").mkdir()
    write_pstnet_legacy_npz(tmp_path / "png" / "S003C003P007R001A042", tmp_path / "npz")
    ntu60.convert(tmp_path / "npz", tmp_path / "out", progress=False)
    ds = Dataset4D.open(tmp_path / "out")
    assert ds.manifest["normalisation"]["scale_to_m"] == pytest.approx(65.535)
    rec = ds.video(0)
    assert (rec.label, rec.split, rec.subject) == (41, "test", 7)
    assert ds.label_names[41] == "staggering"
    for got, mm in zip(frames_of(rec), depth):
        np.testing.assert_allclose(got, ntu_reference_points(mm), rtol=2e-6, atol=1e-6)
    assert frames_of(rec)[1][0, 2] == pytest.approx(3.0, rel=1e-6)  # a 3000 mm pixel is 3 m, not 0.03 m


def test_ntu_corrupt_png_names_the_file(tmp_path):
    folder = tmp_path / "S001C001P001R001A001"
    write_ntu_video(folder, np.full((2, 424, 512), 1000, dtype=np.uint16), numbers=[1, 2])
    bad = folder / "MDepth-00000002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(SourceFormatError, match="MDepth-00000002.png"):
        ntu60.pngs_to_frames(folder)


def test_ntu_8bit_png_is_refused(tmp_path):
    folder = tmp_path / "S001C001P001R001A001"
    folder.mkdir()
    cv2.imwrite(str(folder / "MDepth-00000001.png"), np.full((424, 512), 7, np.uint8))
    with pytest.raises(SourceFormatError, match="16-bit"):
        ntu60.pngs_to_frames(folder)


# --- HOI4D ---------------------------------------------------------------------------------


def write_h5(path, **datasets) -> None:
    """An HDF5 file with the given datasets (the benchmark files' layout)."""
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value


def hoi4d_sequences(rng, n: int, frames: int = 5, points: int = 16):
    """``pcd [n, T, P, 3]`` (metres, away from the origin) and its per-frame centroids."""
    pcd = (rng.normal(size=(n, frames, points, 3)) * 0.2 + [0.1, -0.3, 0.8]).astype(np.float32)
    return pcd, pcd.mean(axis=2)


def test_hoi4d_action_segmentation_points_as_stored(tmp_path):
    rng = np.random.default_rng(3)
    data = {}
    for name, n in (("train1.h5", 2), ("test1.h5", 1)):
        pcd, center = hoi4d_sequences(rng, n)
        label = rng.integers(0, 19, size=(n, 5)).astype(np.int64)
        write_h5(tmp_path / name, pcd=pcd, center=center, label=label)
        data[name.removesuffix(".h5")] = (pcd, center, label)
    pcd_wolabel, center_wolabel = hoi4d_sequences(rng, 2)
    write_h5(tmp_path / "test_wolabel.h5", pcd=pcd_wolabel, center=center_wolabel)
    summary = hoi4d.convert(tmp_path, tmp_path / "out", progress=False)
    assert summary["written"] == 5 and summary["frames"] == 25 and "skipped_files" not in summary["reported"]
    ds = Dataset4D.open(tmp_path / "out")
    assert ds.manifest["source"] == "hoi4d" and ds.manifest["normalisation"]["subtract_center"] is None
    assert len(ds.label_names) == 19 and ds.manifest["splits"] == ["test", "test_wolabel", "train"]
    for stem, (pcd, _center, label) in data.items():
        for i in range(len(pcd)):
            rec = video_by_id(ds, f"{stem}_{i:05d}")
            assert rec.split == ("train" if stem.startswith("train") else "test") and rec.label == -1
            assert rec.meta["meta"]["frame_labels"] == label[i].tolist()
            np.testing.assert_array_equal(np.stack(frames_of(rec)), pcd[i])  # as the public loader returns it
            np.testing.assert_array_equal(rec.stamps_ns, [0, 66_666_667, 133_333_333, 200_000_000, 266_666_667])
    for i in range(2):
        rec = video_by_id(ds, f"test_wolabel_{i:05d}")
        assert rec.split == "test_wolabel" and rec.label == -1 and "frame_labels" not in rec.meta["meta"]
        np.testing.assert_array_equal(np.stack(frames_of(rec)), pcd_wolabel[i])

    hoi4d.convert(tmp_path, tmp_path / "centred", progress=False, subtract_center=True)
    rec = video_by_id(Dataset4D.open(tmp_path / "centred"), "train1_00001")
    pcd, center, _ = data["train1"]
    np.testing.assert_allclose(np.stack(frames_of(rec)), pcd[1] - center[1, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value, dtype, match", [
    (1.5, np.float64, r"train2\.h5: dataset 'label', sequence 1: non-integral label 1\.5 at \(3,\)"),
    (np.nan, np.float32, r"train2\.h5: dataset 'label', sequence 1: non-integral label nan"),
    (19, np.int64, r"train2\.h5: dataset 'label', sequence 1: labels outside 0\.\.18: \[0, 19\]"),
    (-1, np.int16, r"labels outside 0\.\.18: \[-1, 0\]"),
])
def test_hoi4d_bad_labels_name_file_and_dataset(tmp_path, value, dtype, match):
    pcd, center = hoi4d_sequences(np.random.default_rng(4), 2)
    label = np.zeros((2, 5), dtype)
    label[1, 3] = value
    write_h5(tmp_path / "train2.h5", pcd=pcd, center=center, label=label)
    with pytest.raises(SourceFormatError, match=match):
        hoi4d.convert(tmp_path, tmp_path / "out", progress=False)


def test_hoi4d_integral_float_labels_are_accepted(tmp_path):
    pcd, center = hoi4d_sequences(np.random.default_rng(5), 1)
    write_h5(tmp_path / "test2.h5", pcd=pcd, center=center, label=np.array([[0.0, 18.0, 2.0, 2.0, 7.0]]))
    hoi4d.convert(tmp_path, tmp_path / "out", progress=False)
    assert Dataset4D.open(tmp_path / "out").video(0).meta["meta"]["frame_labels"] == [0, 18, 2, 2, 7]


def semantic_of(points: np.ndarray) -> np.ndarray:
    """Per-point labels that are a function of the point (so a sampled clip can be checked)."""
    return (np.floor((points[..., 0] + 2.0) * 7.0).astype(np.int64) % 49)


def test_hoi4d_semantic_segmentation_per_point_labels(tmp_path):
    from cross4d_core.data.clips import ClipDataset

    rng = np.random.default_rng(6)
    semantic = {}
    for name, n, dtype in (("train1.h5", 2, np.int32), ("test1_right.h5", 1, np.float64), ("test2_right.h5", 1,
                                                                                            np.uint8)):
        pcd, center = hoi4d_sequences(rng, n, frames=30, points=64)
        semantic[name.removesuffix(".h5")] = (pcd, semantic_of(pcd))
        write_h5(tmp_path / name, pcd=pcd, center=center, semantic=semantic_of(pcd).astype(dtype))
    (tmp_path / "notes.h5").write_bytes(b"")
    summary = hoi4d.convert(tmp_path, tmp_path / "out", progress=False)
    assert summary["written"] == 4 and summary["reported"]["skipped_files"] == [str(tmp_path / "notes.h5")]
    ds = Dataset4D.open(tmp_path / "out")
    m = ds.manifest
    assert m["source"] == "hoi4d-semseg" and m["label_names"] == []
    assert m["part_names"] == [f"semantic_{k:02d}" for k in range(49)]
    for stem, (pcd, labels) in semantic.items():
        for i in range(len(pcd)):
            rec = video_by_id(ds, f"{stem}_{i:05d}")
            assert rec.split == ("train" if stem == "train1" else "test") and rec.label == -1
            np.testing.assert_array_equal(np.stack(frames_of(rec)), pcd[i])
            np.testing.assert_array_equal(np.stack([rec.frame_values("part", t) for t in range(30)]), labels[i])
    clips = ClipDataset(tmp_path / "out", split="test", frames=24, num_points=48)
    assert len(clips) == 2 * 7
    for i in (0, 13):
        clip = clips.get_clip(i)
        assert clip.part.shape == (24, 48)
        np.testing.assert_array_equal(clip.part, semantic_of(clip.points))


def test_hoi4d_non_integral_semantic_label_names_the_dataset(tmp_path):
    pcd, center = hoi4d_sequences(np.random.default_rng(7), 1)
    semantic = semantic_of(pcd).astype(np.float64)
    semantic[0, 2, 9] = 3.25
    write_h5(tmp_path / "test1_right.h5", pcd=pcd, center=center, semantic=semantic)
    with pytest.raises(SourceFormatError, match=r"test1_right\.h5: dataset 'semantic', sequence 0: non-integral "
                                                r"label 3\.25 at \(2, 9\)"):
        hoi4d.convert(tmp_path, tmp_path / "out", progress=False)


def test_hoi4d_release_must_be_one_and_known(tmp_path):
    rng = np.random.default_rng(8)
    pcd, center = hoi4d_sequences(rng, 1)
    write_h5(tmp_path / "test_wolabel.h5", pcd=pcd, center=center)
    with pytest.raises(ValueError, match="cannot tell the release .only unlabelled"):
        hoi4d.convert(tmp_path, tmp_path / "out", progress=False)
    hoi4d.convert(tmp_path, tmp_path / "out", progress=False, release="semantic")
    m = Dataset4D.open(tmp_path / "out").manifest
    assert m["source"] == "hoi4d-semseg" and m["splits"] == ["test_wolabel"] and len(m["part_names"]) == 49
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_h5(tmp_path / "a" / "train1.h5", pcd=pcd, center=center, label=np.zeros((1, 5), np.int64))
    write_h5(tmp_path / "b" / "train1.h5", pcd=pcd, center=center, semantic=np.zeros((1, 5, 16), np.int64))
    with pytest.raises(ValueError, match="cannot tell the release .mixed"):
        hoi4d.convert(tmp_path, tmp_path / "out2", progress=False)
    with pytest.raises(ValueError, match=r"release='action', but the files are \['action', 'semantic'\]"):
        hoi4d.convert(tmp_path, tmp_path / "out3", progress=False, release="action")


def test_hoi4d_missing_dataset_and_truncation_name_the_file(tmp_path):
    path = tmp_path / "train2.h5"
    write_h5(path, pcd=np.zeros((1, 2, 4, 3), np.float32), label=np.zeros((1, 2), np.int64))
    with pytest.raises(SourceFormatError, match=r"train2\.h5: missing datasets \['center'\]"):
        hoi4d.open_file(path)
    write_h5(path, pcd=np.zeros((1, 2, 4, 3), np.float32), center=np.zeros((1, 2, 3), np.float32))
    with pytest.raises(SourceFormatError, match=r"train2\.h5: missing datasets \['label \(action segmentation\) or "
                                                r"semantic"):
        hoi4d.open_file(path)
    write_h5(path, pcd=np.zeros((1, 2, 4, 3), np.float32), center=np.zeros((1, 2, 3), np.float32),
             semantic=np.zeros((1, 2, 5), np.int64))
    with pytest.raises(SourceFormatError, match=r"semantic shape \(1, 2, 5\) != pcd's \[N, T, P\] = \(1, 2, 4\)"):
        hoi4d.open_file(path)
    good = tmp_path / "truncated" / "test3.h5"
    good.parent.mkdir()
    write_h5(good, pcd=np.zeros((4, 8, 64, 3), np.float32), center=np.zeros((4, 8, 3), np.float32),
             label=np.zeros((4, 8), np.int64))
    good.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(SourceFormatError, match=r"test3\.h5"):
        hoi4d.convert(good.parent, tmp_path / "out2", progress=False)


# --- DeformingThings4D ---------------------------------------------------------------------


def write_anime(path, v0: np.ndarray, faces: np.ndarray, offsets: np.ndarray) -> None:
    """An ``.anime`` file as the DT4D README lays it out (little-endian)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nf, nv, nt = len(offsets) + 1, len(v0), len(faces)
    path.write_bytes(struct.pack("<3i", nf, nv, nt) + v0.astype("<f4").tobytes() + faces.astype("<i4").tobytes()
                     + offsets.astype("<f4").tobytes())


# Two triangles with areas 1 and 3 (z = 0 plane).
V0 = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], dtype=np.float32)
FACES = np.array([[0, 1, 2], [3, 4, 5]])
STILL = np.zeros((1, 6, 3), np.float32)

#: The 59 object ids of DT4D's animals/ (a public listing of the release's animal identities).
DT4D_ANIMALS = """bear3EP bear84Q bear9AK bearPDD bearVGG bucksYJL bullMJ6 bunnyQ canieLTT catBG cattleAFK cetaceaUW
chickenDC crocodileOPW deer2MB deerA4K deerFEL deerK5L deerLO1 deerOMG deerSPL deerVMW dinoBDK dinoET doggieMN5
dragonOF2 dragonOLO dragonQKS duck elephantLN0 elkML foxWDFS foxXAT foxYSY foxZED goatS4J6Y grizzRSS hippoDG hogRD
huskydog3T leopardSLM lionessHTR42 milkcow10L moose1DOG moose45D moose6OK9 pigSTK69 procySTEM pumaRW rabbit7L6
rabbitFKP rabbitJM6
raccoonVGG ravenOL rhinoDJ7S seabirdKK sheepYZR10 tigerD8H zebraBM""".split()


def test_dt4d_categories_of_the_animal_identities():
    categories = {dt4d.category_of(i) for i in DT4D_ANIMALS}
    assert len(DT4D_ANIMALS) == 59 and len(categories) == 38  # the paper's 38-way DT4D-Animals task
    assert [dt4d.category_of(i) for i in ("bear3EP", "grizzRSS", "duck", "lionessHTR42", "moose6OK9")] == [
        "bear", "grizz", "duck", "lioness", "moose"]
    with pytest.raises(ValueError, match="'3EPbear' does not start with a lowercase category name"):
        dt4d.category_of("3EPbear")


@given(counts=st.lists(st.integers(1, 60), min_size=59, max_size=59), fraction=st.floats(0.0, 0.5))
def test_dt4d_split_is_cross_identity_and_keeps_every_category_in_train(counts, fraction):
    animations = dict(zip(DT4D_ANIMALS, counts))
    split = dt4d.identity_split(animations, fraction)
    assert split == dt4d.identity_split(dict(reversed(list(animations.items()))), fraction)  # order-free
    by_category: dict[str, list[str]] = {}
    for identity in DT4D_ANIMALS:
        by_category.setdefault(dt4d.category_of(identity), []).append(split[identity])
    assert all("train" in splits for splits in by_category.values())
    in_test = sum(n for i, n in animations.items() if split[i] == "test")
    target = fraction * sum(counts)
    eligible = [i for i in DT4D_ANIMALS if split[i] == "train"
                and by_category[dt4d.category_of(i)].count("train") > 1]
    # below the target only when no identity could still move; above it by less than the last one moved
    assert in_test >= target or not eligible
    if in_test:
        assert in_test - max(n for i, n in animations.items() if split[i] == "test") < target


def test_dt4d_category_labels_split_and_both_layouts(tmp_path):
    src = tmp_path / "animals"
    nested = ["bear3EP_Walk", "bear3EP_Run", "bear84Q_Walk", "foxZED_Jump", "foxXAT_Jump"]
    for name in nested:
        write_anime(src / name / f"{name}.anime", V0, FACES, STILL)
    write_anime(src / "duck_Swim.anime", V0, FACES, STILL)  # the flat layout
    summary = dt4d.convert(src, tmp_path / "out", progress=False, num_points=8, test_fraction=0.3)
    assert summary["written"] == 6
    ds = Dataset4D.open(tmp_path / "out")
    assert ds.label_names == ["bear", "duck", "fox"]
    expected_split = dt4d.identity_split({"bear3EP": 2, "bear84Q": 1, "foxZED": 1, "foxXAT": 1, "duck": 1}, 0.3)
    assert sorted(ds.manifest["normalisation"]["split"]["test_identities"]) == sorted(
        i for i, s in expected_split.items() if s == "test")
    assert expected_split["duck"] == "train" and "train" in (expected_split["foxZED"], expected_split["foxXAT"])
    for name in nested + ["duck_Swim"]:
        rec = video_by_id(ds, name)
        identity = name.split("_")[0]
        assert ds.label_names[rec.label] == dt4d.category_of(identity)
        assert rec.split == expected_split[identity] and rec.meta["meta"]["object"] == identity
    for label_by, names in (("action", ["Jump", "Run", "Swim", "Walk"]),
                            ("identity", ["bear3EP", "bear84Q", "duck", "foxXAT", "foxZED"])):
        dt4d.convert(src, tmp_path / label_by, progress=False, num_points=8, label_by=label_by)
        assert Dataset4D.open(tmp_path / label_by).label_names == names
    with pytest.raises(ValueError, match=r"label_by must be one of \('category', 'action', 'identity'\)"):
        dt4d.convert(src, tmp_path / "bad", progress=False, label_by="object")


def test_dt4d_names_outside_the_layout_are_refused(tmp_path):
    write_anime(tmp_path / "bear.anime", V0, FACES, STILL)
    expected = (r"bear\.anime: name is not \[objectID\]_\[ActionID\]\.anime; expected "
                r"\[objectID\]_\[ActionID\]/\[objectID\]_\[ActionID\]\.anime or a flat")
    with pytest.raises(SourceFormatError, match=expected):
        dt4d.convert(tmp_path, tmp_path / "out", progress=False)
    (tmp_path / "bear.anime").unlink()
    write_anime(tmp_path / "bear3EP_Walk.anime", V0, FACES, STILL)
    write_anime(tmp_path / "bear3EP_Walk" / "bear3EP_Walk.anime", V0, FACES, STILL)
    with pytest.raises(SourceFormatError, match=r"same animation as .*bear3EP_Walk\.anime \(video id 'bear3EP_Walk'\)"):
        dt4d.convert(tmp_path, tmp_path / "out", progress=False)


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
    summary = dt4d.convert(tmp_path, tmp_path / "out", progress=False, num_points=64, seed=7, label_by="action")
    assert summary["written"] == 2
    ds = Dataset4D.open(tmp_path / "out")
    assert ds.label_names == ["Jump", "Walk"]
    rec = video_by_id(ds, "humanoids__girl_Jump")
    assert rec.label == 0 and rec.split == "train"  # girl and bear are their categories' only identities
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
