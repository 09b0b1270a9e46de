"""Target cache: projection, typed batches and gather, the token-granularity record, precompute
round trips (frames stored once per video), incremental manifest, resume, drops, the CLI."""
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

from cross4d_core.correspondence import render_correspondence
from cross4d_core.errors import TargetCacheError
from cross4d_core.targets import (
    ClipTargets,
    FeatureProjection,
    TargetBatch,
    TargetCache,
    TargetCacheWriter,
    compact_targets,
    gather_point_targets,
    precompute_targets,
)
from cross4d_core.targets.precompute import target_record
from cross4d_core.teachers import load_teacher
from cross4d_core.types import Clip, Correspondence


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "dinov2"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=42)).save_pretrained(path)
    return load_teacher("dinov2", str(path))


def _clips(n, T=4, N=50, seed=0):
    rng = np.random.default_rng(seed)
    return [Clip(points=(rng.normal(size=(T, N, 3)) + [0, 0, 3]).astype(np.float32),
                 stamps_ns=np.arange(T) * 100_000_000, label=i % 3) for i in range(n)]


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




@given(B=st.integers(1, 3), K=st.integers(1, 9), lead=st.lists(st.integers(1, 4), max_size=2),
       seed=st.integers(0, 1000))
def test_gather_point_targets_matches_loop(B, K, lead, seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(B, K, 5, generator=g).half()
    index = torch.randint(-1, K, (B, *lead), generator=g)
    out = gather_point_targets(features, index)
    assert out.shape == (B, *lead, 5) and out.dtype == torch.float16
    for i in np.ndindex(*index.shape):
        if index[i] >= 0:
            assert torch.equal(out[i], features[i[0], index[i]])


@given(rows=st.lists(st.integers(-1, 30), max_size=40))
def test_compact_targets_renumbers_densely(rows):
    rows = torch.tensor(rows, dtype=torch.int64)
    used, index = compact_targets(rows)
    assert used.tolist() == sorted({r for r in rows.tolist() if r >= 0})
    assert index.shape == rows.shape and bool((index[rows < 0] == -1).all())
    assert torch.equal(used[index[rows >= 0]], rows[rows >= 0])


def _item(K, T=2, N=3, d=4, clip=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClipTargets(points=torch.randn(T, N, 3, generator=g), target_index=torch.randint(-1, K, (T, N), generator=g),
                       features=torch.randn(K, d, generator=g).half(), clip_target=torch.randn(d, generator=g),
                       label=torch.tensor(1), video=torch.tensor(0), start=torch.tensor(0), clip=torch.tensor(clip))


def test_target_batch_collate_pads_tables_and_checks_rows_and_shapes():
    items = [_item(3, seed=1), _item(5, seed=2), _item(0, seed=3)]
    items[2].target_index[:] = -1  # a clip with no visible point: an empty table
    batch = TargetBatch.collate(items)
    assert batch.features.shape == (3, 5, 4) and batch.target_index.shape == (3, 2, 3)
    assert torch.equal(batch.features[0, :3], items[0].features) and not batch.features[0, 3:].any()
    assert torch.equal(batch.visible, batch.target_index >= 0) and not batch.visible[2].any()
    targets = gather_point_targets(batch.features, batch.target_index)
    for b, item in enumerate(items):
        vis = item.target_index >= 0
        assert torch.equal(targets[b][vis], item.features[item.target_index[vis]])
    bad = _item(2, clip=7)
    bad.target_index[0, 0] = 2
    with pytest.raises(ValueError, match="clip 7 has target rows up to 2 but a table of 2 rows"):
        TargetBatch.collate([bad])
    with pytest.raises(ValueError, match=r"target_index must be \[B, T, N\]"):
        TargetBatch(**{**vars(batch), "target_index": batch.target_index[:, :1]})
    with pytest.raises(ValueError, match=r"clip_target must be \[B, d_p\]"):
        TargetBatch(**{**vars(batch), "clip_target": batch.clip_target[:, :2]})


@given(F=st.integers(1, 4), N=st.integers(1, 6), views=st.integers(1, 2), clips=st.integers(1, 3),
       seed=st.integers(0, 10_000))
def test_target_record_against_brute_force(F, N, views, clips, seed):
    """Only used cells are kept; every visible point's row holds its (slot, patch) feature;
    the clip target is the mean over the distinct cells of the clip's visible points."""
    g = torch.Generator().manual_seed(seed)
    hp, wp, C, d = 2, 2, 6, 3
    slot = torch.randint(0, views * F, (F, N), generator=g)
    visible = torch.rand(F, N, generator=g) < 0.6
    patch = torch.where(visible, torch.randint(0, hp * wp, (F, N), generator=g), -1)
    feats = torch.randn(views * F, hp, wp, C, generator=g)
    proj = FeatureProjection.random(C, d, seed=1)
    clip_frames = torch.randint(0, F, (clips, 2), generator=g)
    points = torch.randn(F, N, 3, generator=g)
    rec = target_record(points, Correspondence(slot, patch, visible, (hp, wp)), feats, proj, clip_frames,
                        video=5, label=2, starts=torch.arange(clips), clips=torch.arange(clips) + 10)
    cells = sorted({int(slot[f, n]) * 4 + int(patch[f, n]) for f, n in zip(*np.nonzero(visible.numpy()))})
    assert rec.cell.tolist() == cells and rec.features.dtype == torch.float16
    flat = feats.reshape(-1, C)
    for f, n in np.ndindex(F, N):
        if visible[f, n]:
            assert int(rec.cell[rec.target[f, n]]) == int(slot[f, n]) * 4 + int(patch[f, n])
        else:
            assert rec.target[f, n] == -1
    torch.testing.assert_close(rec.features, proj(flat[cells]).half() if cells else proj(flat[:0]).half())
    for c in range(clips):
        sub = {int(slot[f, n]) * 4 + int(patch[f, n]) for f in clip_frames[c].tolist() for n in range(N)
               if visible[f, n]}
        expected = flat[sorted(sub)].mean(0) if sub else flat.mean(0)
        torch.testing.assert_close(rec.clip_target[c], proj(expected), atol=1e-5, rtol=1e-5)
        item = rec.clip_targets(c)
        assert torch.equal(item.points, points[clip_frames[c]]) and int(item.clip) == c + 10 and item.video == 5
        vis = item.target_index >= 0
        assert torch.equal(vis, visible[clip_frames[c]]) and len(item.features) == len({
            int(r) for r in rec.target[clip_frames[c]][visible[clip_frames[c]]]})
        assert torch.equal(item.features[item.target_index[vis]], rec.features[rec.target[clip_frames[c]][vis]])


def test_precompute_round_trip_render(dinov2, tmp_path):
    clips = _clips(5)
    clips[1].points[2, :7] = np.nan  # kept, invisible, counted
    clips[3].points[:] = np.nan  # no finite point: left out with the reason
    manifest = precompute_targets(clips, dinov2, "render", tmp_path / "cache", d_p=16, seed=7, image_size=42,
                                  shard_size=2)
    assert manifest["format"] == "cross4d-target-cache" and manifest["num_shards"] == 3
    assert manifest["counts"]["clips"] == 4 and manifest["counts"]["dropped_clips"] == 1
    assert manifest["counts"]["nonfinite_points"] == 7 and manifest["counts"]["frames"] == 16
    assert manifest["dropped"][0]["clip"] == 3 and "finite" in manifest["dropped"][0]["reason"]
    assert manifest["d_p"] == 16 and manifest["projection"] == {"kind": "random", "seed": 7}
    assert manifest["source"] == "render" and manifest["image_size"] == 42
    assert manifest["teacher"]["name"] == dinov2.name

    cache = TargetCache(tmp_path / "cache")
    assert len(cache) == 4
    proj = cache.projection
    assert torch.equal(proj.weight, FeatureProjection.random(32, 16, 7).weight)
    clip_targets, visible_targets, visible, points = [], [], 0, 0
    for row, index in enumerate([0, 1, 2, 4]):
        item = cache[row]
        assert int(item.clip) == index and int(item.video) == index and int(item.label) == index % 3
        np.testing.assert_array_equal(item.points.numpy(), clips[index].points)
        images, corr = render_correspondence(clips[index].points, 42, 14, transform=dinov2.image_transform(42, 42))
        assert torch.equal(item.target_index >= 0, corr.visible)
        feats, _ = dinov2.grid_features(images)
        grid = proj(feats).reshape(-1, 16).half()  # the dense [S * P, d_p] grid the old cache stored
        expected = grid[corr.slot * 9 + corr.patch.clamp_min(0)]
        assert item.features.dtype == torch.float16
        torch.testing.assert_close(item.features[item.target_index[corr.visible]], expected[corr.visible])
        assert len(item.features) == len(torch.unique((corr.slot * 9 + corr.patch)[corr.visible]))
        # the global target: mean over the distinct (slot, patch) cells holding a visible point
        cells = {(int(corr.slot[t, n]), int(corr.patch[t, n])) for t, n in zip(*np.nonzero(corr.visible.numpy()))}
        subject = torch.stack([feats[s].reshape(9, -1)[p] for s, p in sorted(cells)]).mean(0)
        torch.testing.assert_close(item.clip_target, proj(subject))
        clip_targets.append(item.clip_target)
        visible_targets.append(item.features.float()[item.target_index[corr.visible]])
        visible, points = visible + int(corr.visible.sum()), points + corr.visible.numel()
    means = manifest["target_means"]
    torch.testing.assert_close(torch.tensor(means["clip_target"]), torch.stack(clip_targets).mean(0))
    torch.testing.assert_close(torch.tensor(means["point_target"]), torch.cat(visible_targets).mean(0),
                               atol=1e-4, rtol=1e-4)
    assert manifest["counts"]["coverage"] == pytest.approx(visible / points)
    torch.testing.assert_close(cache.target_mean("clip_target"), torch.tensor(means["clip_target"]))
    stats = manifest["target_statistics"]
    assert stats["clip_target"]["effective_rank"] > 1 and -1 <= stats["clip_target_centred"]["mean_pairwise_cosine"] < 0
    assert (cache[1].target_index[2, :7] == -1).all()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from cross4d_core.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("world")
    generate_synthetic_dataset(root, num_subjects=2, videos_per_class_per_subject=1, frames=7, classes=2,
                               with_images=False)
    return root


def test_clip_dataset_cache_stores_each_frame_once_and_clips_index_into_it(dinov2, world, tmp_path):
    """Overlapping clips (stride 1) of a video share its frames; every item equals the brute-force
    targets of its frames rendered from the video's camera (fitted to all its stored frames)."""
    from cross4d_core.data import ClipDataset

    clips = ClipDataset(world, frames=4, num_points=48, clip_stride=1)
    manifest = precompute_targets(clips, dinov2, "render", tmp_path / "cache", d_p=16, image_size=42, shard_size=3)
    cache = TargetCache(tmp_path / "cache")
    videos = np.unique(clips.clip_videos)
    assert len(cache) == len(clips) == 4 * len(videos)  # 7 frames, 4-frame clips at stride 1
    assert manifest["counts"]["videos"] == len(videos) and manifest["counts"]["frames"] == 7 * len(videos)
    proj = cache.projection
    for i in (0, 1, 3, 5, len(clips) - 1):
        video, frame_idx = clips.frame_indices(i)
        v = int(clips.clip_videos[i])
        stored = np.arange(7)  # every frame of the video is used by some clip
        frames = clips.video_frames(v, stored)
        images, corr = render_correspondence(frames.points, 42, 14, transform=dinov2.image_transform(42, 42))
        feats, _ = dinov2.grid_features(images)
        grid = proj(feats).reshape(-1, 16).half()
        item = cache[i]
        assert torch.equal(item.points, torch.from_numpy(frames.points[frame_idx]))
        vis = corr.visible[frame_idx]
        assert torch.equal(item.target_index >= 0, vis)
        cells = (corr.slot * 9 + corr.patch.clamp_min(0))[frame_idx]
        torch.testing.assert_close(item.features[item.target_index[vis]], grid[cells[vis]])
        assert (int(item.video), int(item.start), int(item.label)) == (v, int(clips.clip_starts[i]), video.label)
        subject = sorted({int(c) for c in cells[vis]})  # the clip's own subject cells, not the video's
        torch.testing.assert_close(item.clip_target, proj(feats.reshape(-1, feats.shape[-1])[subject].mean(0)))
    # a frame holds the same points in every clip that uses it (frame 3 of video 0: clips 0..3)
    for i in range(1, 4):
        assert torch.equal(cache[i].points[3 - i], cache[0].points[3])
    record = cache.video_record(2)
    assert record.video == int(clips.clip_videos[2]) and record.clip_frames.tolist() == [
        [s + t for t in range(4)] for s in range(4)] and record.frame.tolist() == list(range(7))
    for c in range(4):  # the record's own item builder agrees with the memory-mapped reader
        for name, value in vars(record.clip_targets(c)).items():
            assert torch.equal(value, getattr(cache[c], name)), name


def test_manifest_commit_is_constant_per_shard_and_folds_on_reopen(dinov2, tmp_path, monkeypatch):
    """A recording commits shard k without reading shards < k; reopening folds the shard reports."""
    import cross4d_core.targets.cache as cache_module

    clips = _clips(4)
    proj = FeatureProjection.random(32, 16, 0)
    records = []
    for i, clip in enumerate(clips):
        images, corr = render_correspondence(clip.points, 42, 14, transform=dinov2.image_transform(42, 42))
        records.append(target_record(clip.points, corr, dinov2.grid_features(images)[0], proj, video=i, label=0))
    writer = TargetCacheWriter(tmp_path, {"teacher": {"name": "t"}, "d_p": 16})
    writer.write_shard(0, records[:2])
    writer.commit()
    first_bytes = sum(p.stat().st_size for p in (tmp_path / "shards" / "shard-000000").glob("*.npy"))
    (tmp_path / "shards" / "shard-000000" / "features.npy").write_bytes(b"garbage")  # never read again

    def no_load(*args, **kwargs):
        raise AssertionError("np.load during a commit")

    monkeypatch.setattr(cache_module.np, "load", no_load)
    writer.write_shard(1, records[2:])
    manifest = writer.commit()
    monkeypatch.undo()
    assert manifest["num_shards"] == 2 and manifest["counts"]["clips"] == 4
    targets = [r.features.float()[r.target[r.target >= 0]] for r in records]
    torch.testing.assert_close(torch.tensor(manifest["target_means"]["point_target"]), torch.cat(targets).mean(0),
                               atol=1e-4, rtol=1e-4)
    second_bytes = sum(p.stat().st_size for p in (tmp_path / "shards" / "shard-000001").glob("*.npy"))
    assert manifest["counts"]["bytes"] == first_bytes + second_bytes  # the arrays' bytes
    (tmp_path / "shards" / ".shard-000002.abc.tmp").mkdir()  # a killed writer's temporary
    reopened = TargetCacheWriter(tmp_path, {"teacher": {"name": "t"}, "d_p": 16})
    assert reopened.num_shards == 2 and reopened.commit()["counts"] == manifest["counts"]
    assert not (tmp_path / "shards" / ".shard-000002.abc.tmp").exists()
    with pytest.raises(ValueError, match="out of order"):
        reopened.write_shard(3, records[:1])


def test_readers_tell_the_two_manifests_apart_by_format(tmp_path, world):
    with pytest.raises(ValueError, match="not a cross4d-target-cache manifest .format='cross4d-dataset'"):
        TargetCache(world)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "teacher": {"name": "t"}}))
    with pytest.raises(ValueError, match="format 1 .per-clip grids"):
        TargetCache(tmp_path)


def test_precompute_resumes_and_refuses_other_settings(dinov2, tmp_path):
    clips = _clips(5, seed=1)
    out = tmp_path / "cache"
    precompute_targets(clips, dinov2, "render", out, d_p=8, image_size=42, shard_size=2)
    first = [TargetCache(out)[i] for i in range(5)]
    kept = os.stat(out / "shards" / "shard-000000" / "features.npy").st_mtime_ns
    import shutil

    shutil.rmtree(out / "shards" / "shard-000002")  # as if killed before the last shard
    (out / "manifest.json").unlink()
    with pytest.raises(TargetCacheError, match="unfinished"):
        TargetCache(out)
    precompute_targets(clips, dinov2, "render", out, d_p=8, image_size=42, shard_size=2)
    assert os.stat(out / "shards" / "shard-000000" / "features.npy").st_mtime_ns == kept
    again = TargetCache(out)
    for i in range(5):
        for key, value in vars(first[i]).items():
            assert torch.equal(getattr(again[i], key), value), key
    with pytest.raises(ValueError, match="d_p: 8 != 16"):
        precompute_targets(clips, dinov2, "render", out, d_p=16, image_size=42, shard_size=2)
    (out / "shards" / "shard-000001" / "target.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="target.npy: unreadable"):
        TargetCache(out)[2]
    np.save(out / "shards" / "shard-000001" / "target.npy", np.zeros((1, 50), np.int32))  # truncated shard
    with pytest.raises(ValueError, match=r"target.npy: holds \(1,\) rows, report.json says 8 frames"):
        TargetCache(out)[2]
    (out / "shards" / "shard-000001" / "report.json").write_text("{")
    with pytest.raises(ValueError, match=r"shard-000001/report.json: corrupt shard report"):
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
                                  image_size=42, pca_videos=2)
    assert manifest["projection"]["kind"] == "pca"
    record = TargetCache(tmp_path / "cache").video_record(0)
    slot = record.cell[record.target] // 4  # 2 x 2 grid of 16 px patches on the 32 px crop
    visible = record.target >= 0
    for t in range(5):  # ceil(5 / 2) slots: frame t reads tubelet slot t // 2
        assert bool((slot[t][visible[t]] == t // 2).all())
    assert int(record.cell.max()) < 3 * 4


def test_camera_mode_without_images_is_counted(dinov2, tmp_path):
    manifest = precompute_targets(_clips(2), dinov2, "camera", tmp_path / "cache", d_p=8)
    assert manifest["counts"]["clips"] == 0 and manifest["counts"]["dropped_clips"] == 2
    assert "camera mode needs both" in manifest["dropped"][0]["reason"]
    assert len(TargetCache(tmp_path / "cache")) == 0
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
    assert manifest["dataset"]["normalisation"] == clips.dataset.manifest["normalisation"]
    for i in (0, len(clips) - 1):
        item, ref = cache[i], clips[i]
        _, frame_idx = clips.frame_indices(i)
        assert torch.equal(item.points, torch.from_numpy(clips.video_frames(int(ref["video"]), frame_idx).points))
        assert item.video == ref["video"] and item.label == ref["label"] and item.features.shape[-1] == 8


def test_demo_overlay_re_renders_the_cached_correspondence(dinov2, world, tmp_path):
    from cross4d_core.data import ClipDataset
    from examples.demo.figures import correspondence_overlay

    clips = ClipDataset(world, frames=4, num_points=48, clip_stride=3)
    precompute_targets(clips, dinov2, "render", tmp_path / "cache", d_p=16, image_size=42)
    png = correspondence_overlay(tmp_path / "cache", tmp_path / "overlay.png")
    assert png.stat().st_size > 0
    target = tmp_path / "cache" / "shards" / "shard-000000" / "target.npy"
    rows = np.load(target)
    np.save(target, np.where(rows >= 0, -1, rows))  # a cache whose cells no longer match the render
    with pytest.raises(RuntimeError, match="differs from the cached one"):
        correspondence_overlay(tmp_path / "cache", tmp_path / "bad.png")
