"""Evaluation protocols: probe, video-level accuracy, label subsets, augmentation,
segmentation metrics and temporal correspondence accuracy against brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.evaluation import (
    AugmentConfig,
    PaperProbeConfig,
    ProbeConfig,
    augment_clips,
    confusion_matrix,
    correspondence_accuracy,
    evaluate_classifier,
    fit_linear_probe,
    fit_paper_probe,
    segmentation_metrics,
    stratified_video_subset,
    video_level_accuracy,
)
from cross4d_core.evaluation.probe import FeatureScaling, fit_logistic_regression, grouped_folds


def _clustered(seed: int, K: int = 5, C: int = 24, videos_per_class: int = 8, clips_per_video: int = 5,
               spread: float = 0.3):
    """Class-clustered features with an offset and scale, grouped in videos of one class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, C, generator=g) * 4.0
    video = torch.arange(K * videos_per_class).repeat_interleave(clips_per_video)
    labels = video % K
    feats = 50.0 + 20.0 * (centres[labels] + spread * torch.randn(len(labels), C, generator=g))
    return feats, labels, video


def test_linear_probe_fits_separable_features_to_convergence():
    feats, labels, video = _clustered(0)
    train, test = video < 25, video >= 25
    fit = fit_linear_probe(feats[train], labels[train], 5, groups=video[train])
    assert fit.converged and fit.grad_norm <= ProbeConfig().tolerance and fit.iterations >= 1
    assert fit.train_accuracy == 1.0
    assert fit.l2 in ProbeConfig().l2_grid and len(fit.cv) == len(ProbeConfig().l2_grid)
    acc = evaluate_classifier(fit.head, feats[test], labels[test], video[test])
    assert acc.clip_accuracy == 1.0 and acc.video_accuracy == 1.0
    with pytest.raises(ValueError, match="outside"):
        fit_linear_probe(feats[:4], torch.tensor([0, 1, -1, 2]), 5)
    with pytest.raises(ValueError, match="0 training rows"):
        fit_linear_probe(feats[:0], labels[:0], 5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_linear_probe(torch.full((4, 3), float("nan")), labels[:4], 5)


@pytest.mark.parametrize("factor", [0.01, 100.0])
def test_converged_probe_is_independent_of_feature_scale(factor):
    """Overlapping classes (so the L2 choice matters); a global feature scale cancels exactly."""
    feats, labels, video = _clustered(1, spread=12.0)
    train, test = video < 25, video >= 25
    base = fit_linear_probe(feats[train], labels[train], 5, groups=video[train])
    scaled = fit_linear_probe(feats[train] * factor, labels[train], 5, groups=video[train])
    assert 0.3 < base.train_accuracy < 1.0  # a non-trivial problem
    assert scaled.l2 == base.l2 and scaled.train_accuracy == base.train_accuracy
    a = evaluate_classifier(base.head, feats[test], labels[test], video[test])
    b = evaluate_classifier(scaled.head, feats[test] * factor, labels[test], video[test])
    assert a.clip_accuracy == b.clip_accuracy and a.video_accuracy == b.video_accuracy
    # the paper's fixed-budget recipe does depend on the scale: it under-fits small features
    paper = fit_paper_probe(feats[train] * 0.01, labels[train], 5, PaperProbeConfig(epochs=20))
    assert paper.train_accuracy < base.train_accuracy and not paper.converged


def test_logistic_regression_matches_scikit_learn():
    """Same objective as sklearn's multinomial LogisticRegression with C = 1 / (l2 M)."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    feats, labels, _ = _clustered(2, K=4, C=10, spread=2.0)
    x = FeatureScaling.fit(feats.double())(feats.double())
    for l2 in (1e-3, 1e-1):
        w, b, info = fit_logistic_regression(x, labels, 4, l2, tolerance=1e-8)
        ref = sklearn.LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-12, max_iter=10_000).fit(x.numpy(),
                                                                                              labels.numpy())
        def objective(weight, bias):
            weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
            loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, labels)
            return float(loss + 0.5 * l2 * weight.pow(2).sum())
        assert info["converged"]
        assert objective(w, b) == pytest.approx(objective(ref.coef_, ref.intercept_), abs=1e-4)
        assert torch.allclose(w, torch.as_tensor(ref.coef_), atol=1e-3)


def test_probe_head_on_raw_features_equals_the_scaled_fit():
    feats, labels, video = _clustered(3)
    for standardize in (False, True):
        scaling = FeatureScaling.fit(feats.double(), standardize)
        w, b, _ = fit_logistic_regression(scaling(feats.double()), labels, 5, 1e-2)
        head = scaling.raw_head(w, b)
        expected = scaling(feats.double()) @ w.T + b
        assert torch.allclose(head(feats).double(), expected, atol=1e-3 * float(expected.abs().max()))
        back_w, back_b = scaling.scaled_params(head)
        assert torch.allclose(back_w, w, atol=1e-5) and torch.allclose(back_b, b, atol=1e-4)


def test_non_converged_probe_says_so(caplog):
    feats, labels, video = _clustered(4, spread=12.0)
    fit = fit_linear_probe(feats, labels, 5, ProbeConfig(max_iter=2, l2_grid=(1e-5,)), groups=video)
    assert not fit.converged and fit.iterations <= 2 and fit.grad_norm > ProbeConfig().tolerance
    assert "did not converge" in caplog.text


@given(st.integers(0, 2**16), st.integers(2, 6), st.integers(2, 7))
def test_grouped_folds_keep_videos_together_and_balance_classes(seed, folds, classes):
    g = torch.Generator().manual_seed(seed)
    videos_per_class = 1 + seed % 6
    video = torch.arange(classes * videos_per_class).repeat_interleave(1 + seed % 3)
    labels = video % classes
    perm = torch.randperm(len(video), generator=g)
    video, labels = video[perm], labels[perm]
    fold = grouped_folds(labels, video, folds, seed)
    k = min(folds, classes * videos_per_class)
    assert int(fold.max()) + 1 == k
    for v in torch.unique(video):  # a video never straddles folds
        assert len(torch.unique(fold[video == v])) == 1
    # round-robin dealing: fold sizes (in videos) differ by at most one
    sizes = torch.bincount(torch.stack([fold[video == v][0] for v in torch.unique(video)]), minlength=k)
    assert int(sizes.max() - sizes.min()) <= 1


def test_video_level_accuracy_hand_computed():
    probs = torch.tensor([[0.4, 0.6], [0.9, 0.1],                 # video 10, label 0: sum (1.3, 0.7) -> 0 ok
                          [0.3, 0.7],                              # video 11, label 1 -> 1 ok
                          [0.45, 0.55], [0.45, 0.55], [0.8, 0.2],  # video 12, label 0: (1.7, 1.3) -> 0 ok
                          [0.6, 0.4]])                             # video 13, label 1 -> 0 wrong
    videos = torch.tensor([10, 10, 11, 12, 12, 12, 13])
    labels = torch.tensor([0, 0, 1, 0, 0, 0, 1])
    acc = video_level_accuracy(probs, videos, labels)
    assert acc.clip_accuracy == pytest.approx(3 / 7)  # clips right: 2nd, 3rd, 6th
    assert acc.video_accuracy == pytest.approx(3 / 4)
    assert acc.video_ids.tolist() == [10, 11, 12, 13]
    assert acc.video_predictions.tolist() == [0, 1, 0, 0] and acc.video_labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"videos \[12\] have clips with different labels"):
        video_level_accuracy(probs, videos, torch.tensor([0, 0, 1, 0, 1, 0, 1]))


@given(seed=st.integers(0, 10_000), num_videos=st.integers(1, 60), classes=st.integers(1, 6))
def test_label_fraction_subsets_are_stratified_nested_and_deterministic(seed, num_videos, classes):
    rng = np.random.default_rng(seed)
    video_label = rng.integers(0, classes, num_videos)
    clips_per_video = rng.integers(1, 4, num_videos)
    videos = torch.from_numpy(np.repeat(np.arange(num_videos) * 7, clips_per_video))  # non-contiguous ids
    labels = torch.from_numpy(np.repeat(video_label, clips_per_video))
    previous = set()
    for fraction in (0.1, 0.25, 0.5, 1.0):
        idx = stratified_video_subset(labels, videos, fraction, seed=3)
        assert torch.equal(idx, stratified_video_subset(labels, videos, fraction, seed=3))
        assert idx.tolist() == sorted(set(idx.tolist()))
        kept = set(videos[idx].tolist())
        # whole videos: every clip of a kept video is in the subset
        assert len(idx) == int(sum(clips_per_video[v // 7] for v in kept))
        for cls in np.unique(video_label):
            n = int((video_label == cls).sum())
            got = sum(1 for v in kept if video_label[v // 7] == cls)
            assert got == max(1, math.floor(fraction * n + 0.5))
        assert previous <= kept  # smaller fractions are subsets of larger ones
        previous = kept
    assert len(previous) == num_videos
    with pytest.raises(ValueError, match="fraction"):
        stratified_video_subset(labels, videos, 0.0)


def test_augmentation_is_a_scaled_rotation_about_the_vertical_axis_plus_jitter():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(3, 4, 50, 3, generator=g)
    cfg = AugmentConfig(scale=(0.8, 1.2), max_rotation_deg=30.0, jitter_sigma=0.0, rotation_axis="z")
    out = augment_clips(points, cfg, torch.Generator().manual_seed(1))
    for b in range(3):
        a, o = points[b].reshape(-1, 3), out[b].reshape(-1, 3)
        ratio = torch.pdist(o) / torch.pdist(a)  # one uniform scale per clip, the same in every frame
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-4) and 0.8 <= ratio[0] <= 1.2
        ca, co = a - a.mean(0), o - o.mean(0)
        torch.testing.assert_close(co[:, 2], ca[:, 2] * ratio[0], atol=1e-5, rtol=1e-4)  # z only scaled
        angle = torch.atan2(co[:, 1], co[:, 0]) - torch.atan2(ca[:, 1], ca[:, 0])
        angle = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
        assert angle.std() < 1e-3 and abs(angle.mean()) <= math.radians(30) + 1e-4
        torch.testing.assert_close(o.mean(0), a.mean(0), atol=1e-5, rtol=0)  # about the centroid
    torch.testing.assert_close(out, augment_clips(points, cfg, torch.Generator().manual_seed(1)))
    jittered = augment_clips(points, AugmentConfig(scale=(1, 1), max_rotation_deg=0, jitter_sigma=0.01), g)
    assert 0.005 < (jittered - points).std() < 0.015 and (jittered - points).abs().max() <= 0.05 + 1e-6


@given(seed=st.integers(0, 10_000), K=st.integers(1, 7), n=st.integers(1, 300))
def test_segmentation_metrics_match_brute_force(seed, K, n):
    rng = np.random.default_rng(seed)
    gt = rng.integers(-1, K, n)  # -1 = unlabelled, ignored
    pred = rng.integers(0, K, n)
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), K)
    m = segmentation_metrics(cm)
    ious, accs = [], []
    lab = gt >= 0
    for k in range(K):
        tp = np.sum((gt == k) & (pred == k))
        fp = np.sum((gt != k) & lab & (pred == k))
        fn = np.sum((gt == k) & (pred != k))
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
        if np.sum(gt == k):
            accs.append(tp / np.sum(gt == k))
    if lab.any():
        assert m["miou"] == pytest.approx(np.mean(ious))
        assert m["macc"] == pytest.approx(np.mean(accs))
        assert m["overall_accuracy"] == pytest.approx(np.mean(pred[lab] == gt[lab]))
    else:
        assert math.isnan(m["overall_accuracy"])


def brute_force_correspondence(features, points, track, gap, threshold):
    T, N, _ = points.shape
    f = torch.nn.functional.normalize(features.double(), dim=-1)
    correct = total = 0
    for t in range(T - gap):
        diag = float((points[t + gap].max(0).values - points[t + gap].min(0).values).norm())
        for i in range(N):
            tid = int(track[t, i])
            hits = [j for j in range(N) if int(track[t + gap, j]) == tid]
            if tid < 0 or not hits:
                continue
            total += 1
            j = int((f[t + gap] @ f[t, i]).argmax())
            correct += float((points[t + gap, j] - points[t + gap, hits[0]]).norm()) <= threshold * diag
    return correct, total


def test_correspondence_accuracy_on_known_displacement():
    g = torch.Generator().manual_seed(0)
    T, N, C = 20, 60, 16
    base = torch.rand(N, 3, generator=g)
    embedding = torch.randn(N, C, generator=g)
    perms = [torch.randperm(N, generator=g) for _ in range(T)]
    # Frame t holds the tracked points shifted by t * 3 cm along x, in a shuffled order.
    points = torch.stack([base[p] + torch.tensor([0.03 * t, 0.0, 0.0]) for t, p in enumerate(perms)])
    track = torch.stack(perms)
    features = embedding[track]
    out = correspondence_accuracy(features, points, track, gaps=(8, 15))
    assert out == {8: (12 * N, 12 * N), 15: (5 * N, 5 * N)}  # perfect features -> 100 %
    # Position-only features (the old position) fail once the displacement exceeds the threshold.
    out = correspondence_accuracy(points, points, track, gaps=(8,))
    assert out[8][0] < out[8][1] // 2
    assert correspondence_accuracy(features, points, track, gaps=(20,)) == {20: (0, 0)}


@given(seed=st.integers(0, 1000))
def test_correspondence_accuracy_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    T, N = 6, 12
    points = torch.rand(T, N, 3, generator=g)
    track = torch.randint(-1, 10, (T, N), generator=g)  # duplicates, untracked and missing ids
    features = torch.randn(T, N, 4, generator=g)
    out = correspondence_accuracy(features, points, track, gaps=(1, 3), threshold=0.3, chunk=2)
    for gap in (1, 3):
        assert out[gap] == brute_force_correspondence(features, points, track, gap, 0.3)


def test_robustness_perturbations_known_values():
    from cross4d_core.evaluation.robustness import drop_points, jitter, subsample_frames

    points = torch.arange(2 * 24 * 8 * 3, dtype=torch.float32).reshape(2, 24, 8, 3)
    for fraction, kept in ((1.0, 24), (0.75, 18), (0.5, 12), (0.25, 6)):
        sub = subsample_frames(points, fraction)
        assert sub.shape == (2, kept, 8, 3)
        frames = (sub[0, :, 0, 0] / (8 * 3)).long()
        assert frames[0] == 0 and frames[-1] == 23 and (frames.diff() > 0).all()  # evenly spaced, in order
    g = torch.Generator().manual_seed(0)
    dropped = drop_points(points, 0.5, g)
    assert dropped.shape == (2, 24, 4, 3)
    for b in range(2):
        for t in range(24):  # a subset of the frame's own points, no repeats
            rows = {tuple(p) for p in points[b, t].tolist()}
            got = [tuple(p) for p in dropped[b, t].tolist()]
            assert set(got) <= rows and len(set(got)) == 4
    noisy = jitter(torch.zeros(4, 24, 256, 3), 0.02, torch.Generator().manual_seed(1))
    assert abs(float(noisy.std()) - 0.02) < 0.001 and abs(float(noisy.mean())) < 0.001
