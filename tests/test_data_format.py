"""The on-disk dataset format: round trip, manifest, atomic + resumable writing, corruption."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cross4d_core.data import Dataset4D, DatasetFormatError, DatasetWriter
from cross4d_core.geometry.camera import PinholeCamera

LABELS = ["a", "b", "c"]


def _video(rng, counts, with_images=False):
    frames = [rng.normal(size=(n, 3)).astype(np.float32) for n in counts]
    out = {"frames": frames, "part": [rng.integers(0, 5, n) for n in counts],
           "track": [rng.integers(0, 70_000, n) for n in counts],
           "stamps_ns": 100_000_000 * np.arange(len(counts)) + 5_000_000_000}
    if with_images:
        out["images"] = rng.integers(0, 256, (len(counts), 6, 8, 3), dtype=np.uint8)
        out["cameras"] = [PinholeCamera.from_focal(4.0 + t, 8, 6, distortion_model="plumb_bob",
                                                   D=[0.1 * t, 0, 0, 0, 0]) for t in range(len(counts))]
    return out


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    va = _video(rng, [5, 0, 7, 3], with_images=True)
    vb = _video(rng, [4, 4])
    with DatasetWriter(tmp_path / "ds", source="unit", label_names=LABELS, normalisation={"scale": 0.001},
                       part_names=["p0", "p1", "p2", "p3", "p4"]) as w:
        entry = w.add_video("vid_b", np.stack(vb["frames"]), label=2, split="test", subject=9,
                            part=np.stack(vb["part"]))
        w.add_video("vid_a", va["frames"], label=None, split="train", stamps_ns=va["stamps_ns"],
                    images=va["images"], cameras=va["cameras"], part=va["part"], track=va["track"],
                    meta={"file": "x.bin"})
    assert entry["num_points"] == 8 and entry["empty_frames"] == []
    ds = Dataset4D.open(tmp_path / "ds", verify="checksum")
    m = ds.manifest
    assert (m["source"], m["units"], m["normalisation"], m["label_names"]) == ("unit", "m", {"scale": 0.001}, LABELS)
    assert m["counts"]["videos"] == 2 and m["counts"]["frames"] == 6 and m["counts"]["points"] == 23
    assert m["counts"]["empty_frames"] == 1 and m["counts"]["unlabelled_videos"] == 1
    assert m["counts"]["by_split"] == {"test": {"videos": 1, "frames": 2}, "train": {"videos": 1, "frames": 4}}
    assert m["splits"] == ["test", "train"] and m["complete"]
    assert [e["id"] for e in ds.entries] == ["vid_a", "vid_b"]  # ordered by id, not by write order
    assert (ds.index_of("vid_a"), ds.index_of("vid_b")) == (0, 1)
    with pytest.raises(KeyError, match="no video 'vid_c' \\(2 videos\\)"):
        ds.index_of("vid_c")
    a, b = ds.video(0), ds.video(1)
    assert (a.label, a.split, a.subject, b.label, b.split, b.subject) == (-1, "train", None, 2, "test", 9)
    for t in range(4):
        np.testing.assert_array_equal(a.frame(t), va["frames"][t])
        np.testing.assert_array_equal(a.frame_values("part", t), va["part"][t])
        np.testing.assert_array_equal(a.frame_values("track", t), va["track"][t])
    assert a.frame(1).shape == (0, 3) and a.array("track").dtype == np.int32 and a.array("part").dtype == np.int16
    np.testing.assert_array_equal(a.stamps_ns, va["stamps_ns"])
    assert a.stamps_ns.dtype == np.int64
    np.testing.assert_array_equal(a.images, va["images"])
    for got, want in zip(a.cameras(), va["cameras"]):
        np.testing.assert_array_equal(got.K, want.K)
        np.testing.assert_array_equal(got.D, want.D)
        assert (got.width, got.height, got.distortion_model) == (8, 6, "plumb_bob")
    np.testing.assert_array_equal(b.frame(1), vb["frames"][1])
    assert b.images is None and b.cameras() is None and not b.has("track")
    np.testing.assert_array_equal(b.stamps_ns, [0, 1_000_000_000])
    assert a.meta["meta"] == {"file": "x.bin"}
    assert isinstance(a.array("points"), np.memmap)
    assert ds.verify("checksum") == 9 + 4


@pytest.mark.parametrize("bad, match", [
    (dict(video_id="../x"), "video id"),
    (dict(label=3), "label 3"),
    (dict(frames=[np.zeros((2, 3)), np.full((1, 3), np.nan)]), "frame 1 has NaN"),
    (dict(frames=[np.zeros((2, 2))]), r"frame 0 has shape \(2, 2\)"),
    (dict(part=[np.zeros(2, int)]), r"part\[0\] has 2 values for 3 points"),
    (dict(part=[np.zeros(3)]), "part must be integers"),
    (dict(images=np.zeros((1, 4, 4, 3), np.uint8)), "images need cameras"),
    (dict(images=np.zeros((1, 4, 4, 3), np.uint8), cameras=PinholeCamera.from_focal(1, 5, 4)), "images are 4x4"),
    (dict(stamps_ns=[0, 1]), "stamps_ns must be 1 integer nanoseconds"),
    (dict(stamps_ns=[0.5]), r"stamps_ns must be 1 integer nanoseconds, got float64\[1\]"),
    (dict(split=""), "split"),
])
def test_bad_video_is_rejected_with_the_field_named(tmp_path, bad, match):
    args = dict(video_id="v", frames=[np.zeros((3, 3), np.float32)], label=0, split="train")
    args.update(bad)
    with DatasetWriter(tmp_path, source="unit", label_names=LABELS) as w:
        with pytest.raises(ValueError, match=match):
            w.add_video(**args)
        assert not w.has_video("v") and not list((tmp_path / "videos").iterdir())


def test_duplicate_video_and_mismatched_reopen_are_refused(tmp_path):
    with DatasetWriter(tmp_path, source="unit", label_names=LABELS) as w:
        w.add_video("v", [np.zeros((1, 3))], label=0, split="train")
        with pytest.raises(ValueError, match="already exists"):
            w.add_video("v", [np.zeros((1, 3))], label=0, split="train")
    with pytest.raises(ValueError, match="label_names"):
        DatasetWriter(tmp_path, source="unit", label_names=["x"])


_KILLED_WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np
    import cross4d_core.data.format as fmt
    w = fmt.DatasetWriter(sys.argv[1], source="unit", label_names=["a", "b", "c"])
    for i in range(2):
        w.add_video(f"v{i}", [np.full((3, 3), i, np.float32)], label=i, split="train")
    fmt.write_json_atomic = lambda path, obj: os._exit(9)  # killed while finishing the third video
    w.add_video("v2", [np.full((3, 3), 2, np.float32)], label=2, split="train")
""")


def test_killed_conversion_resumes(tmp_path):
    root = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(root)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    half_written = [p.name for p in (root / "videos").iterdir() if p.name.startswith(".v2.")]
    assert len(half_written) == 1 and half_written[0].endswith(".tmp"), half_written
    with pytest.raises(DatasetFormatError, match="incomplete"):
        Dataset4D.open(root)
    with DatasetWriter(root, source="unit", label_names=LABELS) as w:
        assert w.has_video("v0") and w.has_video("v1") and not w.has_video("v2")
        assert w.num_videos == 2
        w.add_video("v2", [np.full((3, 3), 2, np.float32)], label=2, split="train")
    assert sorted(p.name for p in (root / "videos").iterdir()) == ["v0", "v1", "v2"]
    ds = Dataset4D.open(root)
    assert [ds.video(i).frame(0)[0, 0] for i in range(3)] == [0, 1, 2]
    assert ds.manifest["counts"]["videos_per_label"] == [1, 1, 1]


def test_exception_inside_writer_leaves_an_incomplete_manifest(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path, source="unit", label_names=LABELS) as w:
            w.add_video("v0", [np.zeros((1, 3))], label=0, split="train")
            raise RuntimeError("reader crashed")
    ds = Dataset4D.open(tmp_path, allow_incomplete=True)
    assert not ds.manifest["complete"] and len(ds) == 1


def _small_dataset(root):
    with DatasetWriter(root, source="unit", label_names=LABELS) as w:
        w.add_video("v0", [np.arange(30, dtype=np.float32).reshape(10, 3)] * 2, label=1, split="train")
    return root / "videos" / "v0"


def test_truncated_file_is_named(tmp_path):
    vdir = _small_dataset(tmp_path)
    points = vdir / "points.npy"
    with open(points, "r+b") as f:
        f.truncate(points.stat().st_size - 12)
    ds = Dataset4D.open(tmp_path)
    with pytest.raises(DatasetFormatError, match=rf"{points}: has \d+ bytes, expected \d+"):
        ds.video(0).frame(0)


def test_corrupt_bytes_are_found_by_checksum(tmp_path):
    vdir = _small_dataset(tmp_path)
    points = vdir / "points.npy"
    data = bytearray(points.read_bytes())
    data[-1] ^= 0xFF
    points.write_bytes(bytes(data))
    Dataset4D.open(tmp_path).video(0).frame(0)  # sizes still match
    with pytest.raises(DatasetFormatError, match=f"{points}: SHA-256"):
        Dataset4D.open(tmp_path).verify()
    with pytest.raises(DatasetFormatError, match=f"{points}: SHA-256"):
        Dataset4D.open(tmp_path, verify="checksum").video(0).frame(0)


def test_missing_and_garbled_metadata_are_named(tmp_path):
    vdir = _small_dataset(tmp_path)
    (vdir / "offsets.npy").unlink()
    with pytest.raises(DatasetFormatError, match=f"{vdir / 'offsets.npy'}: missing"):
        Dataset4D.open(tmp_path).video(0).frame(0)
    (vdir / "meta.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match=f"{vdir / 'meta.json'}: not valid JSON"):
        Dataset4D.open(tmp_path).video(0)
    manifest = tmp_path / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "version": 99}))
    with pytest.raises(DatasetFormatError, match=f"{manifest}: format version 99"):
        Dataset4D.open(tmp_path)
    manifest.write_bytes(b"\x00\x01")
    with pytest.raises(DatasetFormatError, match=str(manifest)):
        Dataset4D.open(tmp_path)


def test_header_mismatch_is_named(tmp_path):
    vdir = _small_dataset(tmp_path)
    offsets = vdir / "offsets.npy"
    np.save(offsets, np.array([0, 10, 20], np.int32))  # same byte count, wrong dtype
    meta = json.loads((vdir / "meta.json").read_text())
    meta["files"]["offsets"]["bytes"] = offsets.stat().st_size
    (vdir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match=f"{offsets}: holds int32"):
        Dataset4D.open(tmp_path).video(0).frame(0)
    assert os.path.exists(offsets)


def test_version_1_datasets_with_float_seconds_are_still_read(tmp_path):
    """Format 1 stored stamps as float64 seconds: they read as the nearest nanosecond."""
    from cross4d_core.data import ClipDataset
    from cross4d_core.data.format import _sha256

    vdir = _small_dataset(tmp_path)
    stamps = vdir / "stamps.npy"
    np.save(stamps, np.array([1700000000.1, 1700000000.2]))  # what format 1 wrote
    meta = json.loads((vdir / "meta.json").read_text())
    meta["files"]["stamps"] = {"bytes": stamps.stat().st_size, "sha256": _sha256(stamps), "dtype": "float64",
                               "shape": [2]}
    (vdir / "meta.json").write_text(json.dumps(meta))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 1}))
    video = Dataset4D.open(tmp_path, verify="checksum").video(0)
    np.testing.assert_array_equal(video.stamps_ns, [1_700_000_000_100_000_000, 1_700_000_000_200_000_000])
    assert video.sequence().stamps_ns.dtype == np.int64
    assert ClipDataset(tmp_path, frames=2, num_points=4).get_clip(0).stamps_ns.tolist() == video.stamps_ns.tolist()
