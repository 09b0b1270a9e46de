"""End to end through the CLI on real parts: synthetic dataset on disk (H5) -> target cache
precomputed with a tiny random DINOv2 (H2) -> ``cross4d pretrain`` (dense, tiny POINT4D)
-> ``probe`` / ``transfer`` / ``segment`` / ``finetune`` -> the recognizer directory (``<out>/recognizer``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cross4d_core.cli import main

CLIP = ["--set", "data.frames=4", "--set", "data.num_points=64"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    from cross4d_core.data.clips import ClipDataset
    from cross4d_core.data.synthetic import generate_synthetic_dataset
    from cross4d_core.targets import precompute_targets
    from cross4d_core.teachers import load_teacher

    root = tmp_path_factory.mktemp("cli")
    data = root / "synth"
    generate_synthetic_dataset(data, num_subjects=4, videos_per_class_per_subject=1, frames=10, seed=0, classes=3,
                               with_images=False)
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=42)).save_pretrained(root / "dinov2")
    clips = ClipDataset(data, split="train", frames=4, num_points=64, clip_stride=2)
    precompute_targets(clips, load_teacher("dinov2", str(root / "dinov2")), "render", root / "cache", d_p=16,
                       image_size=42, shard_size=8)
    return root, data


def pretrain_args(root, out, *extra):
    return ["pretrain", "--config", "pretrain_tiny.yaml", "--set", f"out_dir={out}",
            "--set", f"data.path={root / 'cache'}", *extra]


def test_pretrain_dense_then_resume(world, capsys):
    root, _ = world
    out = root / "dense"
    assert main(pretrain_args(root, out, "--set", "max_steps=3", "--set", "checkpoint_every_steps=1")) == 0
    res = json.loads((out / "pretrain_results.json").read_text())
    assert res["objective"] == "dense" and res["steps"] == 3 and res["resumed_from"] is None
    assert res["train_items"] > 0 and (out / "encoder.safetensors").exists()
    assert main(pretrain_args(root, out, "--resume", "--set", "max_steps=5")) == 0
    res = json.loads((out / "pretrain_results.json").read_text())
    assert res["steps"] == 5 and res["resumed_from"].endswith("step_00000003")
    from cross4d_core.training import load_encoder

    _, meta = load_encoder(out)
    assert meta["model_id"] == "point4d-dense-dense" and meta["model_config"]["hidden_size"] == 32
    assert meta["objective"] == "dense" and not (out / "recognizer").exists()  # the probe makes the recognizer


def test_pretrain_none_exports_the_random_encoder(world):
    root, _ = world
    out = root / "random"
    assert main(pretrain_args(root, out, "--set", "objective.name=none", "--set", "data.path=")) == 0
    res = json.loads((out / "pretrain_results.json").read_text())
    assert res["objective"] == "none" and "steps" not in res
    assert not (out / "checkpoints").exists() and (out / "encoder.safetensors").exists()


def test_pretrain_reports_bad_config(world, capsys):
    root, _ = world
    assert main(["pretrain", "--config", "pretrain_tiny.yaml",
                 "--set", f"out_dir={root / 'bad'}"]) == 1
    assert "data.path is empty" in capsys.readouterr().err
    assert main(pretrain_args(root, root / "bad", "--set", "optim.lrr=1")) == 1
    assert "unknown key(s) ['optim.lrr']" in capsys.readouterr().err


def test_pretrain_intra_on_clips_then_probe_transfer_segment_finetune(world, capsys):
    root, data = world
    out = root / "intra"
    assert main(pretrain_args(root, out, "--set", "objective.name=intra", "--set", "data.source=clips",
                              "--set", f"data.path={data}", *CLIP, "--set", "max_steps=2")) == 0
    assert json.loads((out / "pretrain_results.json").read_text())["steps"] == 2

    assert main(["probe", "--checkpoint", str(out), "--dataset", str(data), "--set", "probe.paper.epochs=20",
                 "--set", "device=cpu", "--set", "data.short_video=report", "--set", "data.clip_stride=2"]) == 0
    res = json.loads((out / "probe_results.json").read_text())
    assert 0.0 <= res["test"]["video_accuracy"] <= 1.0
    assert res["test"]["videos"] == res["test_data"]["videos_with_clips"] == 6  # 2 test subjects x 3 classes
    assert res["test_data"]["short_videos"] == [] and res["train_data"]["clips"] > 0
    assert res["probe"]["method"] == "lbfgs" and res["probe"]["l2"] in res["config"]["probe"]["l2_grid"]
    assert res["probe"]["converged"] == (res["probe"]["grad_norm"] <= 1e-5)
    assert res["paper_probe"]["method"] == "paper" and res["paper_probe"]["iterations"] > 0
    assert 0.0 <= res["paper_probe"]["test"]["video_accuracy"] <= 1.0 and "train" in res["paper_probe"]
    out_text = capsys.readouterr().out
    assert "probe (converged L-BFGS): test video accuracy" in out_text and "probe (paper recipe)" in out_text
    # 12-frame clips of 10-frame videos: every video is short, padded, and listed in the results.
    assert main(["probe", "--checkpoint", str(out), "--dataset", str(data), "--set", "probe.paper=null",
                 "--set", "device=cpu", "--set", "data.frames=12", "--out", str(root / "padded")]) == 0
    padded = json.loads((root / "padded" / "probe_results.json").read_text())
    assert padded["test"]["videos"] == 6 and len(padded["test_data"]["short_videos"]) == 6
    assert padded["test_data"]["short_videos"][0]["num_frames"] == 10
    assert padded["test_data"]["short_video_policy"] == "pad" and "paper_probe" not in padded
    from cross4d_core.models import Recognizer

    # The recognizer records the window its head was fitted on (12 frames), not the encoder's 4.
    assert Recognizer.from_pretrained(root / "padded" / "recognizer").config.num_frames == 12
    assert main(["probe", "--checkpoint", str(out), "--dataset", str(data), "--set", "device=cpu",
                 "--set", "data.frames=12", "--set", "data.short_video=report", "--out", str(root / "reported")]) == 1
    assert "split 'train' gives no 12-frame clips (6 videos, 6 short videos with short_video='report'" \
        in capsys.readouterr().err
    from cross4d_core.training import load_encoder

    recognizer = Recognizer.from_pretrained(out / "recognizer")
    config, provenance = recognizer.config, recognizer.config.provenance
    assert res["recognizer"] == str((out / "recognizer").resolve())
    assert config.label_names == res["label_names"] and recognizer.head.out_features == 3
    assert (config.num_frames, config.num_points) == (4, 64) and config.model_id == "point4d-intra-intra"
    assert provenance.normalisation["generator"] == "cross4d synthetic" and provenance.objective == "intra"
    assert (provenance.source_checkpoint, provenance.dataset) == (str(out.resolve()), str(data.resolve()))
    assert provenance.probe_l2 == res["probe"]["l2"]
    assert (provenance.train_accuracy, provenance.test_accuracy) == (res["train"]["video_accuracy"],
                                                                    res["test"]["video_accuracy"])
    encoder, _ = load_encoder(out)
    points = torch.rand(1, 4, 64, 3)
    with torch.no_grad():
        assert torch.equal(recognizer.encoder(points).clip_feature, encoder(points).clip_feature)

    # Transfer writes a recognizer of its own (the checkpoint's stays).
    assert main(["transfer", "--checkpoint", str(out), "--dataset", str(data), "--set", "probe.paper.epochs=5",
                 "--set", "device=cpu"]) == 0
    tdir = out / "transfer_synth"
    assert json.loads((tdir / "transfer_results.json").read_text())["protocol"] == "transfer"
    assert sorted(p.name for p in tdir.iterdir()) == ["recognizer", "transfer_results.json"]
    transferred = Recognizer.from_pretrained(tdir / "recognizer")
    with torch.no_grad():
        assert torch.equal(transferred.encoder(points).clip_feature, encoder(points).clip_feature)
        assert torch.equal(Recognizer.from_pretrained(out / "recognizer")(points).logits, recognizer(points).logits)

    assert main(["segment", "--checkpoint", str(out), "--dataset", str(data), "--set", "device=cpu",
                 "--set", "segment.probe.paper.epochs=3", "--set", "segment.correspondence_gaps=[1, 3]",
                 "--set", "data.clip_stride=3"]) == 0
    seg = json.loads((out / "segment_results.json").read_text())
    assert seg["num_parts"] == 16 and 0.0 <= seg["miou"] <= 1.0 and 0.0 <= seg["overall_accuracy"] <= 1.0
    assert seg["correspondence"]["3"]["total"] > 0
    assert seg["probe"]["method"] == "lbfgs" and seg["probe"]["train_points"] > 0
    assert 0.0 <= seg["paper_probe"]["test"]["miou"] <= 1.0

    assert main(["finetune", "--checkpoint", str(out), "--dataset", str(data), "--set", "device=cpu",
                 "--set", "fractions=[0.5, 1.0]", "--set", "epochs=1", "--set", "batch_size=4",
                 "--set", "augment.rotation_axis=y", "--set", "progress=false", "--set", "data.clip_stride=2"]) == 0
    ft = json.loads((out / "finetune" / "finetune_results.json").read_text())
    assert set(ft["runs"]) == {"pretrained_0.5", "scratch_0.5", "pretrained_1", "scratch_1"}
    assert ft["runs"]["pretrained_0.5"]["train_videos"] == 3  # 1 of 2 train videos per class
    assert ft["runs"]["pretrained_1"]["train_videos"] == 6
    assert all(0.0 <= r["test"]["video_accuracy"] <= 1.0 for r in ft["runs"].values())


def test_pretrain_seeds_then_probe_every_seed(world, capsys):
    root, data = world
    out = root / "seeds"
    assert main(pretrain_args(root, out, "--seeds", "0,3", "--set", "max_steps=1")) == 0
    runs = [out / "seed0", out / "seed3"]
    weights = []
    for seed, run in zip((0, 3), runs):
        res = json.loads((run / "pretrain_results.json").read_text())
        assert res["config"]["seed"] == seed and res["steps"] == 1
        from safetensors.torch import load_file

        weights.append(load_file(run / "encoder.safetensors"))
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # seeds give different runs
    assert main(["probe", "--checkpoint", *map(str, runs), "--dataset", str(data), "--set", "probe.paper=null",
                 "--set", "device=cpu"]) == 0
    assert all((run / "probe_results.json").exists() for run in runs)
    assert main(["probe", "--checkpoint", *map(str, runs), "--dataset", str(data), "--out", str(root / "x")]) == 1
    assert "--out names one output directory; 2 checkpoints" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse rejects repeated seeds
        main(pretrain_args(root, out, "--seeds", "1,1"))


def test_corrupt_inputs_give_one_line_errors_not_tracebacks(world, tmp_path, capsys):
    """A corrupt checkpoint on --resume, a dataset file corrupted in place (same size) and a
    garbled .npy header each end the command with one line naming the file."""
    import shutil

    root, data = world
    out = tmp_path / "dense"
    assert main(pretrain_args(root, out, "--set", "max_steps=2", "--set", "checkpoint_every_steps=1")) == 0
    step = sorted((out / "checkpoints").glob("step_*"))[-1]
    (step / "model.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(pretrain_args(root, out, "--resume", "--set", "max_steps=3")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.safetensors" in err and "Traceback" not in err

    corrupted = tmp_path / "synth"
    shutil.copytree(data, corrupted)
    points = sorted(corrupted.glob("videos/*/points.npy"))[0]
    raw = bytearray(points.read_bytes())
    raw[-8:] = b"\x00" * 8  # corrupted in place: same size, different bytes
    points.write_bytes(bytes(raw))
    probe = ["probe", "--checkpoint", str(root / "random"), "--dataset", str(corrupted), "--set", "device=cpu",
             "--set", "probe.paper=null"]
    assert main(probe) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(points) in err and "sha-256" in err.lower()

    raw[10:20] = b"{{{{{{{{{{"  # a garbled header; with the size check only, np.load meets it
    points.write_bytes(bytes(raw))
    assert main([*probe, "--set", "data.verify=size"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(points) in err and "cannot be read as .npy" in err and "Traceback" not in err


def test_segment_on_hoi4d_semseg_release(world, tmp_path):
    """`cross4d segment` on files in the HOI4D 4D semantic-segmentation layout (train1.h5,
    test1_right.h5; ``pcd [N, T, P, 3]``, ``center [N, T, 3]``, ``semantic [N, T, P]``) written
    here with h5py: per-point labels reach the probe, and mIoU / mAcc / OA come out consistent
    with the confusion matrix they are computed from."""
    import h5py

    root, _ = world
    src = tmp_path / "HOI4D_SemSeg"
    src.mkdir()
    g = np.random.default_rng(0)
    for name, sequences in (("train1.h5", 4), ("test1_right.h5", 2)):
        pcd = g.uniform(-0.5, 0.5, size=(sequences, 6, 96, 3)).astype(np.float32) + [0.0, 0.0, 1.0]
        semantic = (pcd[..., 0] > 0).astype(np.int64) + 2 * (pcd[..., 1] > 0)  # 4 classes, by quadrant
        with h5py.File(src / name, "w") as f:
            f["pcd"], f["center"], f["semantic"] = pcd, pcd.mean(axis=2), semantic
    data = tmp_path / "hoi4d"
    assert main(["data", "convert", "--format", "hoi4d", "--src", str(src), "--out", str(data), "--quiet"]) == 0
    encoder = tmp_path / "random"
    assert main(pretrain_args(root, encoder, "--set", "objective.name=none", "--set", "data.path=")) == 0
    assert main(["segment", "--checkpoint", str(encoder), "--dataset", str(data), "--set", "device=cpu",
                 "--set", "segment.probe.paper=null", "--set", "segment.correspondence_gaps=[1]",
                 "--set", "data.clip_stride=2"]) == 0
    seg = json.loads((encoder / "segment_results.json").read_text())
    cm = np.asarray(seg["confusion"], dtype=np.float64)
    assert cm.shape == (seg["num_parts"], seg["num_parts"]) and cm.sum() > 0
    present = cm.sum(axis=1) > 0
    iou = np.diag(cm) / (cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)).clip(min=1)
    assert seg["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert seg["miou"] == pytest.approx(iou[present].mean())
    assert seg["macc"] == pytest.approx((np.diag(cm)[present] / cm.sum(axis=1)[present]).mean())
