"""The CUDA path against the CPU: point ops, POINT4D under bf16 autocast, every objective's
step, a trainer run with checkpoint + resume, teachers and correspondence.

Marked ``cuda``: skipped (with the reason) where no GPU is visible. ``make gpu-check`` runs
them on the GPU; its ``--dry`` mode runs them on the CPU (``CROSS4D_CUDA_TESTS_DEVICE=cpu``)
so they cannot rot on CPU-only CI.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from benchmarks.bench_training import synthetic_items
from cross4d_core.correspondence import camera_correspondence, render_clip
from cross4d_core.geometry import ImageTransform, PinholeCamera
from cross4d_core.models import Point4DConfig, Point4DEncoder
from cross4d_core.objectives import OBJECTIVES, build_objective
from cross4d_core.ops import ball_query, farthest_point_sample, gather_points, interpolate_features, knn
from cross4d_core.targets import TargetBatch
from cross4d_core.teachers import load_teacher
from cross4d_core.training import TrainConfig, Trainer, load_config

pytestmark = pytest.mark.cuda

DEVICE_ENV = "CROSS4D_CUDA_TESTS_DEVICE"


@pytest.fixture(scope="module")
def device() -> torch.device:
    if os.environ.get(DEVICE_ENV) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip(f"needs a CUDA device (`make gpu-check` runs these; {DEVICE_ENV}=cpu runs them on the CPU)")
    return torch.device("cuda")


def _cloud(seed: int, sets: int = 6, n: int = 512) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(sets, n, 3, generator=g) * torch.tensor([0.8, 1.8, 0.5])


def _covering_radius(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[S]`` largest distance from a point to its nearest sample (what FPS minimises)."""
    samples = gather_points(points, index)
    return torch.cdist(points.double(), samples.double()).amin(-1).amax(-1)


def test_point_ops_match_cpu(device):
    points = _cloud(0)
    index = farthest_point_sample(points.to(device), 64).cpu()
    ref = farthest_point_sample(points, 64)
    # float rounding may flip a near-tie and change every later sample: compare what FPS achieves
    assert (index == ref).all(-1).float().mean() >= 0.8
    torch.testing.assert_close(_covering_radius(points, index), _covering_radius(points, ref), rtol=0.05, atol=0)
    centres = gather_points(points, ref)
    dist = lambda idx: (gather_points(points, idx) - centres[:, :, None]).norm(dim=-1)  # noqa: E731
    for mode in ("first", "nearest"):
        got = ball_query(points.to(device), centres.to(device), 0.15, 16, mode=mode).cpu()
        expected = ball_query(points, centres, 0.15, 16, mode=mode)
        if mode == "first":  # a point within rounding of the radius may flip (and shift its row)
            assert (got == expected).float().mean() > 0.99
        else:  # equal distances may come in either order
            torch.testing.assert_close(dist(got), dist(expected), rtol=0, atol=1e-6)
    d, i = knn(centres.to(device), points.to(device), 5)
    d_ref, i_ref = knn(centres, points, 5)
    torch.testing.assert_close(d.cpu(), d_ref, rtol=0, atol=1e-5)
    feats = torch.randn(*centres.shape[:-1], 7)
    torch.testing.assert_close(interpolate_features(points.to(device), centres.to(device), feats.to(device)).cpu(),
                               interpolate_features(points, centres, feats), rtol=1e-4, atol=1e-4)


def test_point4d_forward_backward_bf16_autocast(device):
    torch.manual_seed(0)
    config = Point4DConfig(num_frames=4, num_points=512, hidden_size=64, num_layers=2, num_heads=4)
    reference = Point4DEncoder(config)
    model = Point4DEncoder(config).to(device)
    model.load_state_dict(reference.state_dict())
    points = _cloud(1, sets=8).reshape(2, 4, 512, 3)
    weights = torch.randn(2, 4, config.sa2_centroids, config.hidden_size)  # a non-degenerate loss
    ref = reference(points).token_features
    (ref * weights).mean().backward()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = model(points.to(device)).token_features
    (out.float() * weights.to(device)).mean().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert F.cosine_similarity(out.float().cpu(), ref.detach(), dim=-1).min() > 0.97
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert F.cosine_similarity(p.grad.cpu().flatten(), q.grad.flatten(), dim=0) > 0.9, name
    # the fused set abstraction equals its definition on this device too
    eager = Point4DEncoder(Point4DConfig.from_dict({**config.to_dict(), "sa_implementation": "eager"})).to(device)
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(points.to(device)).token_features, eager(points.to(device)).token_features,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [name for name in OBJECTIVES if name != "none"])  # none: nothing to train
def test_objective_step_matches_cpu(device, name):
    config = Point4DConfig.tiny()
    batch = TargetBatch.collate(synthetic_items(config, 4, d_p=32, grid=9, first=2))
    losses, moved = [], []
    for dev, amp in ((torch.device("cpu"), False), (device, device.type == "cuda")):
        torch.manual_seed(0)
        objective = build_objective(name, Point4DEncoder(config), {"target_dim": 32}).to(dev)
        params = [p for p in objective.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        optimiser = torch.optim.AdamW(params, lr=1e-3)
        torch.manual_seed(1)  # the intra objective's masks
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = objective(batch.to(dev))
        assert torch.isfinite(out.loss), name
        out.loss.backward()
        optimiser.step()
        objective.after_step()
        losses.append(float(out.loss.detach()))
        moved.append(all(not torch.equal(p.detach(), b) for p, b in zip(params, before) if p.grad is not None))
    # intra draws its masks from the device's generator: other masks on CUDA than on the CPU
    assert losses[1] == pytest.approx(losses[0], rel=0.25 if name == "intra" and device.type == "cuda" else 0.05,
                                      abs=1e-3)
    assert moved == [True, True]


def test_trainer_checkpoint_and_resume(device, tmp_path):
    """Checkpoint mid-run, resume: the resumed losses continue the uninterrupted run's (on CUDA to
    float tolerance: its scatter-add kernels sum in a nondeterministic order)."""
    config = Point4DConfig.tiny()
    items = synthetic_items(config, 16, d_p=32, grid=9, first=10)

    def run(resume=None):
        cfg = load_config(TrainConfig, None, [f"out_dir={tmp_path}", f"device={device.type}", "data.batch_size=4",
                                              "max_steps=6", "checkpoint_every_steps=2", "epochs=2",
                                              "keep_checkpoints=10",
                                              "progress=false", "tensorboard=false"])
        torch.manual_seed(0)
        objective = build_objective("dense", Point4DEncoder(config), {"target_dim": 32})
        return Trainer(cfg, objective, items, collate_fn=TargetBatch.collate).fit(resume=resume or False)

    first = run()
    second = run(tmp_path / "checkpoints" / "step_00000002")
    assert second.resumed_from.endswith("step_00000002") and len(second.step_losses) == 4
    if device.type == "cpu":
        assert second.step_losses == first.step_losses[2:]
    else:
        assert second.step_losses == pytest.approx(first.step_losses[2:], rel=1e-3, abs=1e-4)


def test_teacher_and_correspondence_match_cpu(device, tmp_path):
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                             patch_size=14, image_size=126)).save_pretrained(tmp_path / "dinov2")
    cpu = load_teacher("dinov2", str(tmp_path / "dinov2"))
    dev = load_teacher("dinov2", str(tmp_path / "dinov2"), device=device, dtype=torch.bfloat16)
    images = np.random.default_rng(0).integers(0, 256, (4, 126, 126, 3), dtype=np.uint8)
    feats, _ = dev.grid_features(images)
    ref, _ = cpu.grid_features(images)
    assert feats.device.type == device.type and feats.shape == ref.shape == (4, 9, 9, 64)
    assert F.cosine_similarity(feats.cpu(), ref, dim=-1).min() > 0.98

    points = _cloud(3, sets=4, n=1024) + torch.tensor([0.0, 0.0, 3.0])
    out, ref_out = render_clip(points.to(device)), render_clip(points)
    # the same float math up to the last bit of a fused multiply-add: a depth tie or a grey
    # level exactly half-way may flip, nothing more
    assert (out.correspondence.visible.cpu() == ref_out.correspondence.visible).float().mean() > 0.999
    assert (out.correspondence.patch.cpu() == ref_out.correspondence.patch).float().mean() > 0.999
    grey_diff = (out.images.cpu().int() - ref_out.images.int()).abs()
    assert (grey_diff > 0).float().mean() < 1e-3 and ref_out.correspondence.coverage > 0.1
    camera = PinholeCamera(K=[[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]], width=320, height=240,
                           distortion_model="plumb_bob", D=[0.05, -0.1, 1e-3, -1e-3, 0.02])
    transform = ImageTransform.create(240, 320, 14, resize_shortest_edge=224, crop=224)
    corr = camera_correspondence(points.to(device), None, [camera] * 4, transform)
    ref_corr = camera_correspondence(points, None, [camera] * 4, transform)
    assert (corr.visible.cpu() == ref_corr.visible).float().mean() > 0.999
    assert corr.coverage == pytest.approx(ref_corr.coverage, abs=1e-3) and ref_corr.coverage > 0.1
