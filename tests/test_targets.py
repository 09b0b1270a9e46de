"""Target cache: projection, gather, precompute round trip, resume, drops, the CLI."""
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

from cross4d_core.correspondence import render_correspondence
from cross4d_core.targets import FeatureProjection, TargetCache, gather_point_targets, precompute_targets
from cross4d_core.teachers import load_teacher
from cross4d_core.types import Clip


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "dinov2"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=42)).save_pretrained(path)
    return load_teacher("dinov2", str(path))


def _clips(n, T=4, N=50, seed=0):
    rng = np.random.default_rng(seed)
    return [Clip(points=(rng.normal(size=(T, N, 3)) + [0, 0, 3]).astype(np.float32), stamps=np.arange(T) / 10.0,
                 label=i % 3) for i in range(n)]


def test_random_projection_is_seeded_and_round_trips(tmp_path):
    a, b, c = FeatureProjection.random(32, 16, seed=3), FeatureProjection.random(32, 16, seed=3), \
        FeatureProjection.random(32, 16, seed=4)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    a.save(tmp_path / "p.safetensors")
    loaded = FeatureProjection.load(tmp_path / "p.safetensors")
    assert torch.equal(loaded.weight, a.weight) and (loaded.kind, loaded.seed) == ("random", 3)
    x = torch.randn(10, 32)
    torch.testing.assert_close(loaded(x), x @ a.weight)
    with pytest.raises(ValueError, match="20 channels, expected 32"):
        a(torch.randn(3, 20))


def test_pca_projection_keeps_the_top_variance_directions():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 12)) * np.linspace(5, 0.1, 12) @ np.linalg.qr(rng.normal(size=(12, 12)))[0] + 2.0
    proj = FeatureProjection.pca(torch.tensor(features, dtype=torch.float32), 4)
    y = proj(torch.tensor(features, dtype=torch.float32)).numpy().astype(np.float64)
    eig = np.sort(np.linalg.eigvalsh(np.cov(features.T, bias=True)))[::-1][:4]
    np.testing.assert_allclose(y.var(0), eig, rtol=1e-3)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-3)
    torch.testing.assert_close(proj.weight.T @ proj.weight, torch.eye(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="d_p=20"):
        FeatureProjection.pca(torch.randn(100, 12), 20)


@given(B=st.integers(1, 3), S=st.integers(1, 4), P=st.integers(1, 9), lead=st.lists(st.integers(1, 4), max_size=2),
       seed=st.integers(0, 1000))
def test_gather_point_targets_matches_loop(B, S, P, lead, seed):
    g = torch.Generator().manual_seed(seed)
    grids = torch.randn(B, S, P, 5, generator=g).half()
    slot = torch.randint(0, S, (B, *lead), generator=g)
    patch = torch.randint(-1, P, (B, *lead), generator=g)
    out = gather_point_targets(grids, slot, patch)
    assert out.shape == (B, *lead, 5) and out.dtype == torch.float16
    for index in np.ndindex(*slot.shape):
        if patch[index] >= 0:
            assert torch.equal(out[index], grids[index[0], slot[index], patch[index]])


def test_precompute_round_trip_render(dinov2, tmp_path):
    clips = _clips(5)
    clips[1].points[2, :7] = np.nan  # kept, invisible, counted
    clips[3].points[:] = np.nan  # no finite point: left out with the reason
    manifest = precompute_targets(clips, dinov2, "render", tmp_path / "cache", d_p=16, seed=7, image_size=42,
                                  shard_size=2)
    assert manifest["counts"]["clips"] == 4 and manifest["counts"]["dropped_clips"] == 1
    assert manifest["counts"]["nonfinite_points"] == 7
    assert manifest["dropped"][0]["clip"] == 3 and "finite" in manifest["dropped"][0]["reason"]
    assert manifest["d_p"] == 16 and manifest["projection"] == {"kind": "random", "seed": 7}
    assert manifest["source"] == "render" and manifest["image_size"] == 42
    assert manifest["teacher"]["name"] == dinov2.name

    cache = TargetCache(tmp_path / "cache")
    assert len(cache) == 4
    proj = cache.projection
    assert torch.equal(proj.weight, FeatureProjection.random(32, 16, 7).weight)
    clip_targets, visible_targets = [], []
    for row, index in enumerate([0, 1, 2, 4]):
        item = cache[row]
        assert int(item["clip"]) == index and int(item["video"]) == index and int(item["label"]) == index % 3
        np.testing.assert_array_equal(item["points"].numpy(), clips[index].points)
        images, corr = render_correspondence(clips[index].points, 42, 14, transform=dinov2.image_transform(42, 42))
        assert torch.equal(item["visible"], corr.visible) and torch.equal(item["patch"], corr.patch)
        assert item["slot"].dtype == torch.int64 and torch.equal(item["slot"], corr.slot)
        feats, _ = dinov2.grid_features(images)
        assert item["grids"].dtype == torch.float16 and item["grids"].shape == (4, 9, 16)
        torch.testing.assert_close(item["grids"], proj(feats).reshape(4, 9, 16).half())
        # the global target: mean over the distinct (slot, patch) cells holding a visible point
        cells = {(int(corr.slot[t, n]), int(corr.patch[t, n])) for t, n in zip(*np.nonzero(corr.visible.numpy()))}
        subject = torch.stack([feats[s].reshape(9, -1)[p] for s, p in sorted(cells)]).mean(0)
        torch.testing.assert_close(item["clip_target"], proj(subject))
        clip_targets.append(item["clip_target"])
        visible_targets.append(item["grids"].float()[item["slot"], item["patch"]][item["visible"]])
    means = manifest["target_means"]
    torch.testing.assert_close(torch.tensor(means["clip_target"]), torch.stack(clip_targets).mean(0))
    torch.testing.assert_close(torch.tensor(means["point_target"]), torch.cat(visible_targets).mean(0),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache.target_mean("clip_target"), torch.tensor(means["clip_target"]))
    stats = manifest["target_statistics"]
    assert stats["clip_target"]["effective_rank"] > 1 and -1 <= stats["clip_target_centred"]["mean_pairwise_cosine"] < 0
    assert not cache[1]["visible"][2, :7].any()
    # a collated batch gathers its point targets in one op
    batch = torch.utils.data.default_collate([cache[0], cache[1]])
    targets = gather_point_targets(batch["grids"], batch["slot"], batch["patch"])
    assert targets.shape == (2, 4, 50, 16)
    t, n = [int(i) for i in torch.nonzero(batch["visible"][1])[0]]
    assert torch.equal(targets[1, t, n], batch["grids"][1, t, batch["patch"][1, t, n]])


def test_precompute_resumes_and_refuses_other_settings(dinov2, tmp_path):
    clips = _clips(5, seed=1)
    out = tmp_path / "cache"
    precompute_targets(clips, dinov2, "render", out, d_p=8, image_size=42, shard_size=2)
    first = {i: TargetCache(out)[i] for i in range(5)}
    kept = os.stat(out / "shards" / "shard-000000" / "grids.npy").st_mtime_ns
    import shutil

    shutil.rmtree(out / "shards" / "shard-000002")  # as if killed before the last shard
    (out / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="unfinished"):
        TargetCache(out)
    precompute_targets(clips, dinov2, "render", out, d_p=8, image_size=42, shard_size=2)
    assert os.stat(out / "shards" / "shard-000000" / "grids.npy").st_mtime_ns == kept
    again = TargetCache(out)
    for i in range(5):
        for key, value in first[i].items():
            assert torch.equal(again[i][key], value), key
    with pytest.raises(ValueError, match="d_p: 8 != 16"):
        precompute_targets(clips, dinov2, "render", out, d_p=16, image_size=42, shard_size=2)
    (out / "shards" / "shard-000001" / "patch.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="patch.npy: unreadable"):
        TargetCache(out)[2]
    np.save(out / "shards" / "shard-000001" / "patch.npy", np.zeros((1, 4, 50), np.int32))  # truncated shard
    with pytest.raises(ValueError, match=r"patch.npy: holds \(1,\) clips, the manifest says 2"):
        TargetCache(out)[2]
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"][0]["clips"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest.json: 'shards' must be a list.*KeyError: 'clips'"):
        TargetCache(out)


def test_precompute_pca_and_video_teacher(tmp_path):
    path = tmp_path / "vjepa2"
    torch.manual_seed(0)
    VJEPA2Model(VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, crop_size=32,
                             patch_size=16, frames_per_clip=8, pred_hidden_size=32, pred_num_hidden_layers=1,
                             pred_num_attention_heads=2, pred_mlp_ratio=2)).save_pretrained(path)
    teacher = load_teacher("vjepa2", str(path))
    clips = _clips(3, T=5)
    manifest = precompute_targets(clips, teacher, "render", tmp_path / "cache", d_p=6, projection="pca",
                                  image_size=42, pca_clips=2)
    assert manifest["projection"]["kind"] == "pca"
    item = TargetCache(tmp_path / "cache")[0]
    assert item["grids"].shape == (3, 4, 6)  # ceil(5 / 2) slots of a 2 x 2 grid
    assert item["slot"][:, 0].tolist() == [0, 0, 1, 1, 2]
    # render -> resize to the 32 px square crop -> 2 x 2 patches of 16 px: patch from the transform
    assert item["patch"][item["visible"]].max() <= 3


def test_camera_mode_without_images_is_counted(dinov2, tmp_path):
    manifest = precompute_targets(_clips(2), dinov2, "camera", tmp_path / "cache", d_p=8)
    assert manifest["counts"]["clips"] == 0 and manifest["counts"]["dropped_clips"] == 2
    assert "camera mode needs both" in manifest["dropped"][0]["reason"]
    with pytest.raises(ValueError, match="source 'lidar'"):
        precompute_targets(_clips(1), dinov2, "lidar", tmp_path / "other")


def test_cli_precompute_camera_mode_end_to_end(tmp_path):
    data = pytest.importorskip("cross4d_core.data")
    from cross4d_core.cli import main
    from cross4d_core.data.synthetic import SyntheticConfig

    data.generate_synthetic_dataset(tmp_path / "data", num_subjects=2, videos_per_class_per_subject=1, frames=6,
                                    classes=2, config=SyntheticConfig(width=64, height=48, focal=60.0))
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14)).save_pretrained(tmp_path / "teacher")
    out = tmp_path / "cache"
    code = main(["precompute", "--dataset", str(tmp_path / "data"), "--teacher", "dinov2", "--model",
                 str(tmp_path / "teacher"), "--source", "camera", "--out", str(out), "--frames", "4",
                 "--num-points", "64", "--clip-stride", "2", "--d-p", "8", "--resize", "42", "--crop", "42"])
    assert code == 0
    clips = data.ClipDataset(tmp_path / "data", frames=4, num_points=64, clip_stride=2, with_images=True)
    cache = TargetCache(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(cache) == len(clips) == manifest["counts"]["clips"] and manifest["source"] == "camera"
    assert 0 < manifest["counts"]["coverage"] <= 1
    for i in (0, len(clips) - 1):
        item, ref = cache[i], clips[i]
        assert torch.equal(item["points"], ref["points"]) and item["video"] == ref["video"]
        assert item["label"] == ref["label"] and item["grids"].shape == (4, 9, 8)
