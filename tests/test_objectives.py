"""Objectives: each learns a tiny fixed problem; the dense loss ignores invisible targets."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from cross4d_core.models import Point4DConfig, Point4DEncoder
from cross4d_core.objectives import ObjectiveConfig, build_objective, cosine_distillation_loss, variance_penalty
from cross4d_core.targets import ClipTargets, TargetBatch

D_P = 16


def tiny_batch(seed: int = 0, batch: int = 2, frames: int = 4, n: int = 64, rows: int = 9) -> TargetBatch:
    """Per-clip target tables of ``rows`` rows; visible points use rows 1.. (row 0 is unused)."""
    g = torch.Generator().manual_seed(seed)
    visible = torch.rand(batch, frames, n, generator=g) < 0.5
    target_index = torch.randint(1, rows, (batch, frames, n), generator=g)
    return TargetBatch(
        points=torch.randn(batch, frames, n, 3, generator=g),
        label=torch.zeros(batch, dtype=torch.long),
        video=torch.arange(batch),
        start=torch.zeros(batch, dtype=torch.long),
        target_index=torch.where(visible, target_index, -1),
        features=torch.randn(batch, rows, D_P, generator=g).half(),
        clip_target=torch.randn(batch, D_P, generator=g),
        clip=torch.arange(batch),
    )


def make(name: str, seed: int = 0, **config):
    torch.manual_seed(seed)
    return build_objective(name, Point4DEncoder(Point4DConfig.tiny()), ObjectiveConfig(target_dim=D_P, **config))


def train_losses(objective, batch, steps: int = 25, lr: float = 3e-3) -> list[float]:
    optimiser = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=lr)
    losses = []
    torch.manual_seed(1)
    for _ in range(steps):
        out = objective(batch)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        objective.after_step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("name", ["dense", "global", "intra"])
def test_objective_decreases_loss_on_fixed_problem(name):
    objective = make(name, ema_momentum=0.9)
    losses = train_losses(objective, tiny_batch())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3, losses
    assert isinstance(objective.encoder, Point4DEncoder) and objective.requires_training


def test_dense_metrics_and_supervision_uses_token_centre_points():
    objective = make("dense")
    batch = tiny_batch(3)
    out = objective(batch)
    encoded = objective.encoder(batch.points)
    token_visible = batch.visible.gather(2, encoded.token_point_index)
    assert out.metrics["supervised"].item() == token_visible.sum().item()
    assert out.metrics["coverage"].item() == pytest.approx(token_visible.float().mean().item())
    assert out.metrics["point_coverage"].item() == pytest.approx(batch.visible.float().mean().item())
    # cosine = mean over visible token centres of cos(head(token feature), the centre's row of its clip's table)
    predictions = objective.head(encoded.token_features)
    cosines = []
    for b, t, m in torch.nonzero(token_visible).tolist():
        n = int(encoded.token_point_index[b, t, m])
        target = batch.features[b, batch.target_index[b, t, n]].float()
        cosines.append(F.cosine_similarity(predictions[b, t, m], target, dim=0).item())
    assert out.metrics["cosine"].item() == pytest.approx(sum(cosines) / len(cosines), abs=1e-5)


def test_dense_loss_ignores_invisible_targets_even_nan():
    objective = make("dense")
    batch = tiny_batch(4)
    reference = objective(batch).loss
    # Invisible points fall back to row 0, which no visible point uses: poison it.
    batch.features[:, 0] = float("nan")
    poisoned = objective(batch).loss
    assert torch.isfinite(poisoned) and poisoned.item() == reference.item()


def test_cosine_loss_masks_rows_and_gradients():
    torch.manual_seed(5)
    pred = torch.randn(6, 4, requires_grad=True)
    target = torch.randn(6, 4)
    supervised = torch.tensor([True, False, True, True, False, True])
    target[~supervised] = float("nan")
    loss, metrics = cosine_distillation_loss(pred, target, supervised, variance_weight=0.5)
    loss.backward()
    assert torch.equal(pred.grad[~supervised], torch.zeros(2, 4))
    assert (pred.grad[supervised].abs().sum(dim=1) > 0).all()
    p, t = pred.detach()[supervised].double(), target[supervised].double()
    cos = ((p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1))).mean()
    std = torch.sqrt(p.var(dim=0) + 1e-4)
    expected = 1 - cos + 0.5 * torch.clamp(1 - std, min=0).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["supervised"].item() == 4
    none = torch.zeros(6, dtype=torch.bool)
    empty_loss, _ = cosine_distillation_loss(pred, target, none)
    assert empty_loss.item() == 0.0 and empty_loss.requires_grad


def test_variance_penalty_known_values():
    assert variance_penalty(torch.tensor([[0.0], [2.0]])).item() == 0.0  # std sqrt(2) > 1
    got = variance_penalty(torch.tensor([[0.0, 0.0], [0.5, 0.0]]), eps=1e-4).item()
    assert got == pytest.approx(((1 - math.sqrt(0.125 + 1e-4)) + (1 - math.sqrt(1e-4))) / 2)
    assert variance_penalty(torch.ones(1, 3)).item() == 0.0


def test_dense_rejects_inconsistent_batches():
    objective = make("dense")
    batch = tiny_batch()
    items = [ClipTargets(points=batch.points[b], target_index=batch.target_index[b].clamp_min(0) + 100,
                         features=batch.features[b], clip_target=batch.clip_target[b], label=batch.label[b],
                         video=batch.video[b], start=batch.start[b], clip=batch.clip[b]) for b in range(2)]
    with pytest.raises(ValueError, match="target rows up to 108 but a table of 9 rows"):
        TargetBatch.collate(items)  # visible points outside their clip's table
    with pytest.raises(TypeError, match="batch must be a TargetBatch, got dict"):
        objective({"points": batch.points})
    with pytest.raises(TypeError, match="global objective: batch must be a TargetBatch"):
        make("global")(batch.points)
    with pytest.raises(ValueError, match="d_p=16"):
        objective(dataclasses.replace(batch, features=batch.features[..., :8], clip_target=batch.clip_target[:, :8]))


def test_intra_ema_update_and_frozen_target():
    objective = make("intra", ema_momentum=0.75)
    student = next(objective.encoder.parameters())
    target = next(objective.target_encoder.parameters())
    assert not target.requires_grad and torch.equal(student, target)
    with torch.no_grad():
        student.add_(1.0)
    before = target.clone()
    objective.after_step()
    torch.testing.assert_close(target, 0.75 * before + 0.25 * student)
    objective.train()
    assert objective.encoder.training and not objective.target_encoder.training


def test_none_objective_and_unknown_name():
    objective = make("none")
    assert not objective.requires_training and isinstance(objective.encoder, Point4DEncoder)
    with pytest.raises(RuntimeError, match="random-init baseline"):
        objective(tiny_batch())
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("contrastive", objective.encoder)
    with pytest.raises(ValueError, match="mask_ratio"):
        build_objective("intra", objective.encoder, {"mask_ratio": 1.5})


@pytest.mark.parametrize("name", ["dense", "global", "intra"])
def test_every_trainable_parameter_gets_a_gradient(name):
    objective = make(name)
    objective(tiny_batch(6)).loss.backward()
    missing = [n for n, p in objective.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_dense_under_bf16_autocast_is_finite_and_close():
    objective = make("dense")
    batch = tiny_batch(7)
    reference = objective(batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(batch)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(reference.item(), abs=0.05)


@pytest.mark.parametrize("name,key", [("global", "clip_target"), ("dense", "features")])
def test_centred_targets_equal_the_loss_on_mean_subtracted_targets(name, key):
    """``centre_targets`` with mean m == the plain objective on targets minus m."""
    batch = tiny_batch(5)
    mean = torch.randn(D_P)
    centred = make(name, centre_targets=True)
    centred.target_mean = mean
    plain = make(name)
    shifted = dataclasses.replace(batch, **{key: getattr(batch, key).float() - mean})
    torch.testing.assert_close(centred(batch).loss, plain(shifted).loss)
    with pytest.raises(ValueError, match="centre_targets needs the training set's mean target"):
        make(name, centre_targets=True)(batch)


def test_intra_block_mask_is_spatial_spans_frames_and_has_the_ratio():
    objective = make("intra", mask_ratio=0.5, mask_blocks=1)
    g = torch.Generator().manual_seed(0)
    # the same 8 token positions in each of 4 frames: a spatial block masks a position in every frame
    frame = torch.rand(1, 1, 8, 3, generator=g)
    centres = frame.expand(1, 4, 8, 3)
    torch.manual_seed(3)
    masked, context = objective._block_mask(centres)
    assert masked.shape == (1, 16) and context.shape == (1, 16)
    assert set(masked[0].tolist()).isdisjoint(context[0].tolist())
    positions = (masked[0] % 8).tolist()
    assert all(positions.count(p) == 4 for p in set(positions))  # each masked place masked in all 4 frames
    # the masked places are the 4 nearest to one of them (the seed)
    d = torch.cdist(frame[0, 0], frame[0, 0])
    assert any(set(d[p].argsort()[:4].tolist()) == set(positions) for p in set(positions))
