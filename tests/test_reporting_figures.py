"""Report figures: valid PNGs with the content they claim (pixels read back)."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cross4d_core.reporting import (
    patch_colours,
    pca_colours,
    plot_correspondence_overlay,
    plot_embedding_pca,
    plot_latency_histogram,
    plot_loss_curves,
    plot_probe_accuracy,
)


def read_rgb(path) -> np.ndarray:
    """``[H, W, 3]`` uint8 pixels of a PNG written by the figures."""
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    return np.rint(image[..., :3] * 255).astype(np.int64)


def distinct_colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, 3), axis=0))


def has_colour(image: np.ndarray, rgb, tol: int = 2) -> bool:
    return bool((np.abs(image - np.asarray(rgb)).max(-1) <= tol).any())


@settings(max_examples=8, deadline=None)
@given(grid=st.tuples(st.integers(1, 4), st.integers(1, 4)), patch=st.sampled_from([6, 8, 14]),
       scale=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_overlay_draws_each_point_in_its_patch_colour(tmp_path_factory, grid, patch, scale, seed):
    rng = np.random.default_rng(seed)
    gh, gw = grid
    H, W = gh * patch + 3, gw * patch + 5  # image a bit larger than the grid
    image = np.stack([*np.meshgrid(np.linspace(0, 120, W), np.linspace(0, 120, H)), np.full((H, W), 60.0)],
                     -1).astype(np.uint8)
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    # one point strictly inside every patch (at least 2 px from its borders), on pixel centres
    u = cols * patch + rng.integers(2, patch - 2, size=gh * gw)
    v = rows * patch + rng.integers(2, patch - 2, size=gh * gw)
    uv = np.stack([u, v], -1).astype(np.float64)
    flat = rows * gw + cols
    visible = rng.random(gh * gw) < 0.7
    visible[0] = True
    out = plot_correspondence_overlay(image, uv, np.where(visible, flat, -1), visible, grid, patch,
                                      tmp_path_factory.mktemp("ov") / "overlay.png", scale=scale, marker_px=1)
    png = read_rgb(out)
    assert png.shape == (H * scale, W * scale, 3)
    centre = (uv * scale + scale // 2).astype(int)  # an output pixel inside the point's square
    drawn = png[centre[:, 1], centre[:, 0]]
    expected = patch_colours(flat, grid).astype(np.int64)
    assert np.abs(drawn[visible] - expected[visible]).max() <= 1
    # invisible points leave the teacher image untouched
    under = image[v, u].astype(np.int64)
    assert np.abs(drawn[~visible] - under[~visible]).max(initial=0) <= 1
    # the margin right of the grid shows the image itself
    y, x = H * scale - 1, W * scale - 1
    assert np.abs(png[y, x] - image[-1, -1]).max() <= 1


def test_overlay_draws_patch_grid_lines(tmp_path):
    image = np.full((28, 42, 3), 40, np.uint8)
    png = read_rgb(plot_correspondence_overlay(image, np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, bool),
                                               (2, 3), 14, tmp_path / "grid.png", scale=4))
    boundary = 14 * 4
    inside_row_0 = slice(3, boundary - 3)
    column = png[inside_row_0, boundary - 1: boundary + 1].max(axis=1)
    assert (column > 100).all()  # white-ish line between patch columns 0 and 1, all along
    row = png[boundary - 1: boundary + 1, 3: boundary - 3].max(axis=0)
    assert (row > 100).all()  # and between patch rows 0 and 1
    assert (png[inside_row_0, boundary // 2] == 40).all()  # the middle of a patch is the image


def test_overlay_rejects_bad_input(tmp_path):
    image = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(ValueError, match="uv"):
        plot_correspondence_overlay(image, np.zeros((3, 3)), np.zeros(3, int), np.ones(3, bool), (2, 2), 14,
                                    tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"patch indices .* \[0, 4\)"):
        plot_correspondence_overlay(image, np.zeros((1, 2)), np.array([4]), np.ones(1, bool), (2, 2), 14,
                                    tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8"):
        plot_correspondence_overlay(image.astype(float), np.zeros((1, 2)), np.array([0]), np.ones(1, bool), (2, 2),
                                    14, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_patch_colours_differ_between_neighbours():
    gh, gw = 5, 7
    colours = patch_colours(np.arange(gh * gw), (gh, gw)).reshape(gh, gw, 3).astype(int)
    assert (np.abs(np.diff(colours, axis=0)).sum(-1) > 0).all()
    assert (np.abs(np.diff(colours, axis=1)).sum(-1) > 0).all()
    with pytest.raises(ValueError, match="indices"):
        patch_colours(np.array([35]), (gh, gw))


def test_pca_colours_follow_the_principal_components():
    rng = np.random.default_rng(0)
    centred = rng.uniform(-1, 1, size=(500, 3))
    centred -= centred.mean(0)
    t = np.linalg.qr(centred)[0] * [10.0, 3.0, 1.0]  # uncorrelated, zero-mean, decreasing variance
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0][:, :3]
    features = t @ basis.T + rng.normal(scale=1e-3, size=(500, 16))
    colours = pca_colours(features).astype(float)
    for channel in range(3):
        assert abs(np.corrcoef(colours[:, channel], t[:, channel])[0, 1]) > 0.999
        assert colours[:, channel].min() == 0 and colours[:, channel].max() == 255
    assert (pca_colours(np.ones((4, 8))) == 0).all()  # no variance: no colour, no NaN


def test_embedding_pca_figure_shows_the_point_colours(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, size=(400, 3))
    embedding = np.concatenate([points * [4, 2, 1], rng.normal(scale=0.01, size=(400, 5))], 1)
    png = read_rgb(plot_embedding_pca(points, embedding, tmp_path / "pca.png"))
    colours = pca_colours(embedding)
    corners = colours[np.argsort(np.abs(points).sum(1))[-10:]]  # extreme points get saturated colours
    assert sum(has_colour(png, c, tol=3) for c in corners) >= 5
    with pytest.raises(ValueError, match="equal length"):
        plot_embedding_pca(points, embedding[:10], tmp_path / "x.png")


def test_probe_accuracy_bars_and_missing_columns(tmp_path):
    import matplotlib

    png = read_rgb(plot_probe_accuracy({"MSR": {"random": 0.42, "global": 0.64, "dense": 0.81, "intra": None},
                                        "NTU": {"random": 0.11, "global": None, "dense": 0.40, "intra": None}},
                                       tmp_path / "bars.png"))
    tab10 = [np.rint(np.array(matplotlib.colormaps["tab10"](i)[:3]) * 255) for i in range(4)]
    assert all(has_colour(png, c) for c in tab10[:3])  # random, global, dense
    assert not has_colour(png, tab10[3])  # intra was never run: no bar, no legend entry
    with pytest.raises(ValueError, match="empty"):
        plot_probe_accuracy({"MSR": {"dense": None}}, tmp_path / "x.png")


def test_loss_curves_and_latency_histogram(tmp_path):
    png = read_rgb(plot_loss_curves({"dense": ([1, 2, 3, 4], [2.0, 1.2, 0.9, 0.8]), "global": ([1, 2], [1.0, 0.7])},
                                    tmp_path / "loss.png"))
    assert png.shape[0] > 100 and distinct_colours(png) > 20
    with pytest.raises(ValueError, match="'dense' has steps"):
        plot_loss_curves({"dense": ([1, 2], [1.0])}, tmp_path / "x.png")
    latencies = np.concatenate([np.random.default_rng(0).normal(20, 2, 200), [np.nan]])
    png = read_rgb(plot_latency_histogram(latencies, tmp_path / "lat.png"))
    assert distinct_colours(png) > 20
    with pytest.raises(ValueError, match="no finite latency"):
        plot_latency_histogram([np.nan], tmp_path / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.png", "loss.png"]
