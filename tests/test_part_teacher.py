"""The synthetic part teacher (brute-force patch means) and the embedding statistics."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cross4d_core.statistics import embedding_statistics
from cross4d_core.teachers import PartTeacher
from cross4d_core.types import Clip


@given(seed=st.integers(0, 2**16), size=st.sampled_from([(14, 14), (28, 42), (30, 45)]))
@settings(max_examples=25, deadline=None)
def test_part_teacher_patch_feature_is_the_mean_code_of_its_pixels(seed, size):
    rng = np.random.default_rng(seed)
    teacher = PartTeacher(num_parts=4, pose_bins=1, feature_dim=8, seed=3)
    labels = rng.integers(-1, 4, size=(2, *size))
    feats, transform = teacher.grid_features(labels)
    gh, gw = size[0] // 14, size[1] // 14
    assert feats.shape == (2, gh, gw, 8) and transform.grid_size == (gh, gw)
    codes = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))  # row 4: background
    top, left = (size[0] - gh * 14) // 2, (size[1] - gw * 14) // 2
    for t in range(2):
        for r in range(gh):
            for c in range(gw):
                block = labels[t, top + 14 * r: top + 14 * (r + 1), left + 14 * c: left + 14 * (c + 1)]
                expected = codes[np.where(block < 0, 4, block).reshape(-1)].mean(0)
                torch.testing.assert_close(feats[t, r, c], expected, atol=1e-5, rtol=1e-5)


def test_part_teacher_rejects_bad_labels_and_is_deterministic():
    teacher = PartTeacher(num_parts=3)
    with pytest.raises(ValueError, match="outside"):
        teacher.grid_features(np.full((1, 14, 14), 9))  # 3 parts x 3 pose bins = labels 0..8
    with pytest.raises(ValueError, match="integers"):
        teacher.grid_features(np.zeros((1, 14, 14), np.float32))
    assert torch.equal(teacher.codes, PartTeacher(num_parts=3).codes)
    assert not torch.equal(teacher.codes, PartTeacher(num_parts=3, seed=1).codes)
    assert "synthetic-part-teacher" in teacher.name


def test_correspond_clip_with_the_part_teacher_renders_part_labels():
    from cross4d_core.correspondence import render_index_map
    from cross4d_core.targets.precompute import correspond_clip

    rng = np.random.default_rng(1)
    points = (rng.normal(size=(3, 50, 3)) * 0.3 + [0, 0, 3]).astype(np.float32)
    part = rng.integers(0, 4, size=(3, 50))
    clip = Clip(points=points, stamps_ns=np.arange(3), part=part)
    teacher = PartTeacher(num_parts=4)
    labels, corr = correspond_clip(clip, teacher, "render", image_size=28)
    index = render_index_map(points, 28).numpy()
    point_labels = teacher.point_labels(points, part)
    expected = np.where(index >= 0, np.take_along_axis(point_labels, np.maximum(index, 0).reshape(3, -1),
                                                       1).reshape(index.shape), -1)
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert corr.grid_size == (2, 2)
    from cross4d_core.correspondence import CorrespondenceError

    with pytest.raises(CorrespondenceError, match="part labels"):
        correspond_clip(Clip(points=points, stamps_ns=np.arange(3)), PartTeacher(num_parts=4), "render", 28)
    with pytest.raises(CorrespondenceError, match="RGB teacher"):
        correspond_clip(clip, PartTeacher(num_parts=4), "camera")


@given(seed=st.integers(0, 2**16), m=st.integers(2, 12), d=st.integers(1, 6))
def test_embedding_statistics_match_brute_force(seed, m, d):
    x = torch.tensor(np.random.default_rng(seed).normal(size=(m, d)) + 0.5)
    stats = embedding_statistics(x)
    unit = x / x.norm(dim=1, keepdim=True)
    pairs = [float(unit[i] @ unit[j]) for i in range(m) for j in range(m) if i != j]
    assert stats["mean_pairwise_cosine"] == pytest.approx(np.mean(pairs), abs=1e-9)
    s = np.linalg.svd(x.numpy(), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    assert stats["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert stats["varying_energy"] == pytest.approx(float(((x - x.mean(0)) ** 2).sum() / (x ** 2).sum()), rel=1e-9)


def test_embedding_statistics_of_constant_and_isotropic_sets():
    constant = embedding_statistics(torch.ones(5, 4))
    assert constant["mean_pairwise_cosine"] == pytest.approx(1.0) and constant["effective_rank"] == pytest.approx(1.0)
    assert constant["varying_energy"] == 0.0
    assert embedding_statistics(torch.eye(4))["effective_rank"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="M >= 2"):
        embedding_statistics(torch.ones(1, 3))


@given(seed=st.integers(0, 2**16), bins=st.integers(1, 4))
@settings(max_examples=25, deadline=None)
def test_point_labels_bin_each_parts_axis_against_the_vertical(seed, bins):
    rng = np.random.default_rng(seed)
    T, N, P = 2, 60, 3
    points = rng.normal(size=(T, N, 3)) * rng.uniform(0.05, 1.0, size=(T, 1, 3))
    part = rng.integers(0, P, size=(T, N))
    part[0, :2] = P - 1  # keep at least 2 points of a part ...
    points[1, 5] = np.nan  # ... and a non-finite point (bin 0)
    teacher = PartTeacher(num_parts=P, pose_bins=bins)
    labels = teacher.point_labels(points, part)
    for t in range(T):
        for p in range(P):
            members = (part[t] == p) & np.isfinite(points[t]).all(-1)
            if members.sum() < 3:
                expected = 0
            else:
                q = points[t][members] - points[t][members].mean(0)
                axis = np.linalg.eigh(q.T @ q)[1][:, -1]
                angle = np.degrees(np.arccos(min(1.0, abs(axis[1]))))
                expected = min(int(angle * bins / 90), bins - 1)
            assert (labels[t][members] == p * bins + expected).all()
    assert labels[1, 5] == part[1, 5] * bins


def test_point_labels_known_geometry():
    """A vertical stick is bin 0, a horizontal one the last bin."""
    t = np.linspace(-1, 1, 20)
    vertical = np.stack([0 * t, t, 0 * t], 1)
    horizontal = np.stack([t, 0 * t, 0.01 * t ** 2], 1)
    points = np.concatenate([vertical, horizontal])[None]
    part = np.array([[0] * 20 + [1] * 20])
    labels = PartTeacher(num_parts=2, pose_bins=3).point_labels(points, part)
    assert (labels[0, :20] == 0).all() and (labels[0, 20:] == 1 * 3 + 2).all()
