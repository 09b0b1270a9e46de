"""``cross4d synth`` / ``cross4d data {convert,from-bag,info}`` end to end (real files, real bag)."""
import json

import numpy as np

from cross4d_core.cli import main
from cross4d_core.data import ClipDataset, Dataset4D
from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_synth_writes_dataset_and_bag_that_reads_back(tmp_path, capsys):
    out, bag = tmp_path / "ds", tmp_path / "bag"
    argv = ["synth", "--out", str(out), "--subjects", "2", "--videos-per-class", "1", "--frames", "4",
            "--classes", "2", "--width", "80", "--height", "60", "--focal", "71.25", "--seed", "3", "--quiet"]
    assert main(argv + ["--bag", str(bag)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[0])["videos"] == 4 and json.loads(lines[1])["frames"] == 16
    ds = Dataset4D.open(out, verify="checksum")
    assert ds.manifest["label_names"] == ["wave_left", "wave_right"]
    want = synthetic_video(3, 1, 0, 0, frames=4, config=SyntheticConfig(width=80, height=60, focal=71.25))
    got = ds.video(ds.index_of("s01_a00_r00"))
    np.testing.assert_array_equal(got.frame(3), want.points[3])
    np.testing.assert_array_equal(got.images, want.images)

    assert main(["data", "from-bag", "--bag", str(bag), "--out", str(tmp_path / "fb"), "--window", "4",
                 "--quiet"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["written"] == 4 and summary["frames"] == 16
    fb = Dataset4D.open(tmp_path / "fb")
    assert fb.manifest["counts"]["points"] == ds.manifest["counts"]["points"]

    assert main(["data", "info", str(out), "--verify", "size"]) == 0
    text = capsys.readouterr().out
    assert "source: synthetic" in text and "split train: 2 videos, 8 frames" in text


def test_synth_resumes_and_convert_synthetic_matches(tmp_path, capsys):
    argv = ["--subjects", "2", "--videos-per-class", "1", "--frames", "3", "--classes", "2", "--width", "64",
            "--height", "48", "--no-images", "--quiet"]
    assert main(["synth", "--out", str(tmp_path / "a")] + argv) == 0
    (tmp_path / "a" / "manifest.json").unlink()  # as if killed before the manifest was finalised
    assert main(["synth", "--out", str(tmp_path / "a")] + argv) == 0
    assert Dataset4D.open(tmp_path / "a").manifest["counts"]["videos"] == 4
    capsys.readouterr()
    assert main(["data", "convert", "--format", "synthetic", "--out", str(tmp_path / "b"), "--quiet",
                 "--set", "subjects=2", "--set", "videos_per_class=1", "--set", "frames=3", "--set", "classes=2",
                 "--set", "width=64", "--set", "height=48", "--set", "no_images=true"]) == 0
    a, b = ClipDataset(tmp_path / "a", frames=3, num_points=64), ClipDataset(tmp_path / "b", frames=3, num_points=64)
    assert len(a) == len(b) == 4
    assert all((a[i]["points"] == b[i]["points"]).all() for i in range(4))


def test_convert_dispatches_to_reader_and_reports_bad_arguments(tmp_path, capsys):
    src = tmp_path / "msr"
    src.mkdir()
    frames = np.zeros((2, 4, 5), np.uint32)
    frames[:, 1, 2] = 1500
    header = np.array([2, 5, 4], "<u4").tobytes()
    (src / "a03_s07_e01_sdepth.bin").write_bytes(header + frames.astype("<u4").tobytes())
    assert main(["data", "convert", "--format", "msr", "--src", str(src), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    ds = Dataset4D.open(tmp_path / "out")
    v = ds.video(0)
    assert (v.label, v.split, v.num_frames) == (2, "test", 2)
    np.testing.assert_allclose(v.frame(0), [[(2 - 2.5) * 1.5 / 280, (1 - 2) * 1.5 / 280, 1.5]], rtol=1e-6)
    # one line on stderr and exit code 1, no traceback
    for argv, message in ((["--format", "msr", "--out", str(tmp_path / "x")], "--src is required"),
                          (["--format", "ntu60", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
                           "does not exist"),
                          (["--format", "synthetic", "--out", str(tmp_path / "x"), "--set", "colour=1"],
                           "unknown synthetic option 'colour'")):
        capsys.readouterr()
        assert main(["data", "convert", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("cross4d data convert: error: ") and message in err and "Traceback" not in err


def test_convert_passes_reader_options_hoi4d_semseg_and_dt4d(tmp_path, capsys):
    import struct

    import h5py

    src = tmp_path / "semseg"
    src.mkdir()
    pcd = np.random.default_rng(0).normal(size=(1, 4, 8, 3)).astype(np.float32)
    with h5py.File(src / "test1_right.h5", "w") as f:
        f["pcd"], f["center"], f["semantic"] = pcd, pcd.mean(axis=2), np.full((1, 4, 8), 7, np.int64)
    assert main(["data", "convert", "--format", "hoi4d", "--src", str(src), "--out", str(tmp_path / "h"), "--quiet",
                 "--set", "subtract_center=true"]) == 0
    assert _last_json(capsys.readouterr().out)["written"] == 1
    v = Dataset4D.open(tmp_path / "h").video(0)
    np.testing.assert_array_equal(v.frame_values("part", 3), np.full(8, 7))
    np.testing.assert_allclose(v.frame(0), pcd[0, 0] - pcd[0, 0].mean(axis=0), atol=1e-6)

    anime = tmp_path / "dt4d" / "bear3EP_Walk.anime"  # the flat layout
    anime.parent.mkdir()
    v0 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4")
    anime.write_bytes(struct.pack("<3i", 2, 3, 1) + v0.tobytes() + np.array([0, 1, 2], "<i4").tobytes()
                      + np.zeros((1, 3, 3), "<f4").tobytes())
    assert main(["data", "convert", "--format", "dt4d", "--src", str(anime.parent), "--out", str(tmp_path / "d"),
                 "--quiet", "--set", "label_by=identity", "--set", "num_points=16"]) == 0
    ds = Dataset4D.open(tmp_path / "d")
    assert ds.label_names == ["bear3EP"] and ds.video(0).id == "bear3EP_Walk"
    assert ds.manifest["counts"]["points"] == 32
