"""Online-teacher training: the teacher runs in the training step and gives the cached targets."""
from __future__ import annotations

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

from cross4d_core.targets import OnlineClips, OnlineTeacher, TargetBatch, TargetCache, gather_point_targets
from cross4d_core.teachers import load_teacher

FRAMES, POINTS, STRIDE = 4, 64, 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from cross4d_core.cli import main
    from cross4d_core.data import ClipDataset, generate_synthetic_dataset

    root = tmp_path_factory.mktemp("online")
    generate_synthetic_dataset(root / "data", num_subjects=2, videos_per_class_per_subject=1, frames=9, classes=3,
                               seed=0, with_images=False)
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=42)).save_pretrained(root / "dinov2")
    assert main(["precompute", "--dataset", str(root / "data"), "--split", "train", "--teacher", "dinov2", "--model",
                 str(root / "dinov2"), "--source", "render", "--out", str(root / "cache"), "--frames", str(FRAMES),
                 "--num-points", str(POINTS), "--clip-stride", str(STRIDE), "--d-p", "16", "--image-size", "42",
                 "--azimuth", "60", "--shard-size", "2"]) == 0
    clips = ClipDataset(root / "data", split="train", frames=FRAMES, num_points=POINTS, clip_stride=STRIDE)
    return root, clips


def test_online_batch_equals_the_cached_batch(world):
    root, clips = world
    cache = TargetCache(root / "cache")
    teacher = load_teacher("dinov2", str(root / "dinov2"))
    from cross4d_core.correspondence import RenderViews

    online = OnlineClips(clips, teacher, "render", 42, views=RenderViews(azimuth_deg=60))
    assert len(online) == len(cache) == len(clips) > 4
    indices = [0, 1, len(clips) - 1]
    got = OnlineTeacher(teacher, cache.projection)(online.collate([online[i] for i in indices]))
    want = TargetBatch.collate([cache[i] for i in indices])
    for name in ("points", "label", "video", "start", "clip"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert torch.equal(got.visible, want.visible) and 0 < float(want.visible.float().mean()) < 1
    vis = want.visible
    torch.testing.assert_close(gather_point_targets(got.features, got.target_index)[vis],
                               gather_point_targets(want.features, want.target_index)[vis], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(got.clip_target, want.clip_target, atol=1e-5, rtol=1e-4)


def _pretrain(root, out, source, objective):
    from cross4d_core.cli.train import pretrain
    from cross4d_core.training import TrainConfig, load_config

    overrides = [f"out_dir={out}", f"data.source={source}", f"objective.name={objective}", "data.batch_size=4",
                 "epochs=3", f"data.frames={FRAMES}", f"data.num_points={POINTS}", f"data.clip_stride={STRIDE}",
                 "teacher.kind=dinov2", f"teacher.model={root / 'dinov2'}", "teacher.d_p=16", "teacher.image_size=42",
                 "teacher.azimuth=60", "tensorboard=false",
                 f"data.path={root / ('cache' if source == 'targets' else 'data')}"]
    return pretrain(load_config(TrainConfig, "pretrain_tiny.yaml", overrides))


@pytest.mark.parametrize("objective", ["dense", "global"])
def test_online_teacher_training_gives_the_cached_loss_curve(world, tmp_path, objective):
    """Same seed, same clips: the loss of every step agrees within the fp16 rounding of the targets."""
    root, _ = world
    cached = _pretrain(root, tmp_path / "cached", "targets", objective)
    online = _pretrain(root, tmp_path / "online", "online", objective)
    assert len(cached["step_losses"]) == len(online["step_losses"]) >= 6
    diff = max(abs(a - b) for a, b in zip(cached["step_losses"], online["step_losses"]))
    assert diff < 1e-3, (diff, cached["step_losses"], online["step_losses"])
    assert online["teacher"] == cached["teacher"] and online["config"]["data"]["source"] == "online"


def test_online_mode_refuses_a_video_teacher(world, tmp_path):
    _, clips = world
    torch.manual_seed(0)
    VJEPA2Model(VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, crop_size=32,
                             patch_size=16, frames_per_clip=8, pred_hidden_size=32, pred_num_hidden_layers=1,
                             pred_num_attention_heads=2, pred_mlp_ratio=2)).save_pretrained(tmp_path / "vjepa2")
    with pytest.raises(ValueError, match="needs an image teacher .tubelet 1.*precompute a target cache"):
        OnlineClips(clips, load_teacher("vjepa2", str(tmp_path / "vjepa2")))
