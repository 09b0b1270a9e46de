"""Point ops against brute-force references (exact on a half-integer grid, so ties are exercised)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cross4d_core.ops.points as points_module
from cross4d_core.ops import (
    ball_query,
    farthest_point_sample,
    gather_points,
    interpolate_features,
    items_per_chunk,
    knn,
)


@st.composite
def grid_clouds(draw, max_sets=3, min_points=1, max_points=24):
    """[S, N, 3] clouds on a 0.5 m grid (exact float32 distances; duplicates likely)."""
    sets = draw(st.integers(1, max_sets))
    n = draw(st.integers(min_points, max_points))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    coords = rng.integers(-3, 4, size=(sets, n, 3)).astype(np.float32) * 0.5
    return torch.from_numpy(coords)


def brute_fps(points: np.ndarray, m: int) -> list[int]:
    d2 = [math.inf] * len(points)
    chosen, current = [], 0
    for _ in range(m):
        chosen.append(current)
        for j, p in enumerate(points):
            d2[j] = min(d2[j], float(((p - points[current]) ** 2).sum()))
        current = int(np.argmax(d2))  # first maximum
    return chosen


@given(grid_clouds(), st.data())
def test_farthest_point_sample_matches_brute_force(clouds, data):
    m = data.draw(st.integers(1, clouds.shape[1]))
    got = farthest_point_sample(clouds, m)
    assert got.shape == (clouds.shape[0], m) and got.dtype == torch.long
    for s in range(clouds.shape[0]):
        assert got[s].tolist() == brute_fps(clouds[s].numpy().astype(np.float64), m)


def test_farthest_point_sample_large_sets_with_ties_match_brute_force():
    """Sets long enough for the vectorised reductions' inner loops, with many tied distances:
    the first maximum still wins."""
    rng = np.random.default_rng(5)
    clouds = torch.from_numpy(rng.integers(-2, 3, size=(3, 700, 3)).astype(np.float32) * 0.5)
    got = farthest_point_sample(clouds, 40)
    for s in range(3):
        assert got[s].tolist() == brute_fps(clouds[s].numpy().astype(np.float64), 40)


def test_farthest_point_sample_batched_leading_dims_and_spread():
    torch.manual_seed(0)
    points = torch.rand(2, 3, 50, 3)
    idx = farthest_point_sample(points, 10)
    assert idx.shape == (2, 3, 10)
    assert torch.equal(idx[1, 2], farthest_point_sample(points[1, 2], 10))
    assert all(len(set(row.tolist())) == 10 for row in idx.reshape(-1, 10))  # distinct points -> distinct samples


def test_farthest_point_sample_all_duplicates_at_origin_ties_to_lowest_index():
    points = torch.zeros(2, 16, 3)
    assert farthest_point_sample(points, 5, start_index=3).tolist() == [[3, 0, 0, 0, 0]] * 2
    two = torch.tensor([[1.0, 0, 0]] * 3 + [[0.0, 0, 0]] * 3)  # two distinct locations, duplicated
    assert farthest_point_sample(two, 4).tolist() == [0, 3, 0, 0]


def test_farthest_point_sample_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_samples"):
        farthest_point_sample(torch.zeros(10, 3), 11)
    with pytest.raises(ValueError, match=r"\[\.\.\., N, 3\]"):
        farthest_point_sample(torch.zeros(10, 2), 3)


def brute_ball(points: np.ndarray, centre: np.ndarray, r2: float, k: int, mode: str) -> list[int]:
    d2 = ((points - centre) ** 2).sum(-1)
    inside = [j for j in range(len(points)) if d2[j] < r2]
    if mode == "nearest":
        inside = sorted(inside, key=lambda j: d2[j])
    inside = inside[:k]
    if not inside:
        inside = [int(np.argmin(d2))]
    return inside + [inside[0]] * (k - len(inside))


@given(grid_clouds(min_points=2), st.data())
def test_ball_query_matches_brute_force(clouds, data):
    mode = data.draw(st.sampled_from(["first", "nearest"]))
    k = data.draw(st.integers(1, clouds.shape[1] + 3))
    r2 = data.draw(st.sampled_from([0.125, 0.375, 0.625, 1.125, 2.375])) # between grid d^2 values
    centres = torch.from_numpy(np.random.default_rng(k).integers(-3, 4, size=(clouds.shape[0], 4, 3))
                               .astype(np.float32) * 0.5)
    got = ball_query(clouds, centres, math.sqrt(r2), k, mode=mode)
    assert got.shape == (clouds.shape[0], 4, k)
    pts = clouds.numpy().astype(np.float64)
    for s in range(clouds.shape[0]):
        for c in range(4):
            expected = brute_ball(pts[s], centres[s, c].numpy(), r2, k, mode)
            row = got[s, c].tolist()
            if mode == "first":
                assert row == expected
            else:  # equal distances may come in any order: compare the distance sequence
                def dist(js):
                    return [float(((pts[s][j] - centres[s, c].numpy()) ** 2).sum()) for j in js]
                assert dist(row) == dist(expected)
                assert set(row) <= set(expected) | {j for j in range(len(pts[s])) if dist([j])[0] < r2}


@pytest.mark.parametrize("mode", ["first", "nearest"])
def test_ball_query_in_chunks_equals_one_piece(mode, monkeypatch):
    """CPU chunking over point sets (one set per chunk here) changes nothing."""
    torch.manual_seed(6)
    points, centres = torch.rand(2, 5, 300, 3), torch.rand(2, 5, 40, 3)
    whole = ball_query(points, centres, 0.2, 8, mode=mode)
    monkeypatch.setattr(points_module, "items_per_chunk", lambda device, n, cpu_elements=0: 1)
    assert torch.equal(ball_query(points, centres, 0.2, 8, mode=mode), whole)


def _plain_ball_query(points, centres, radius, k, mode):
    """ball_query with every point a candidate of every centre (its path on accelerators)."""
    flat_p, flat_c = points.reshape(-1, *points.shape[-2:]), centres.reshape(-1, *centres.shape[-2:])
    index = points_module._ball_query_sets(flat_p, flat_c, radius * radius, k, mode)
    return index.reshape(*centres.shape[:-1], k)


def _assert_same_balls(got, expected, points, centres, mode):
    """Equal for "first"; for "nearest" the same distance sequences (ties come in any order)."""
    if mode == "first":
        assert torch.equal(got, expected)
        return
    def d2(index):
        return ((gather_points(points, index) - centres[..., None, :]) ** 2).sum(-1)
    assert torch.equal(d2(got), d2(expected))
    assert torch.equal(got[..., 0] == got[..., -1], expected[..., 0] == expected[..., -1])


@settings(max_examples=40, deadline=None)
@given(sets=st.integers(1, 4), n=st.integers(1, 300), m=st.integers(1, 40), k=st.integers(1, 40),
       mode=st.sampled_from(["first", "nearest"]), grid=st.booleans(), scale=st.sampled_from([0.05, 1.0, 30.0]),
       offset=st.sampled_from([0.0, -70.0, 1e4]), flat_axes=st.integers(0, 2), seed=st.integers(0, 2**31 - 1),
       window=st.sampled_from([1, 3, 8]))
def test_windowed_ball_query_equals_every_point_a_candidate(sets, n, m, k, mode, grid, scale, offset, flat_axes, seed,
                                                           window):
    """The CPU path (windows along the widest axis, centres in runs) against every point being a
    candidate: grids (ties, points exactly on the radius), clouds near and far from the origin,
    flat or collinear clouds, any k against the ball sizes, runs of 1, 3 or 8 centres."""
    rng = np.random.default_rng(seed)
    coords = rng.integers(-4, 5, size=(sets, n, 3)) * 0.5 if grid else rng.normal(size=(sets, n, 3))
    coords[..., :flat_axes] = 0.0  # 1: a plane, 2: a line
    points = torch.from_numpy(coords * scale + offset).float()
    centres = gather_points(points, torch.from_numpy(rng.integers(0, n, size=(sets, m))))
    if rng.random() < 0.3:  # centres that are not points, some far away
        centres = centres + torch.from_numpy(rng.normal(size=(sets, m, 3)) * scale * 2).float()
    radius = float(scale * rng.choice([0.3, 0.75, 1.0, 2.5]))  # 1.0: grid points exactly on the sphere
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(points_module, "_WINDOW_MIN_POINTS", 0)
        patch.setattr(points_module, "_WINDOW_CENTRES", window)
        got = ball_query(points, centres, radius, k, mode=mode)
    _assert_same_balls(got, _plain_ball_query(points, centres, radius, k, mode), points, centres, mode)


def test_windowed_ball_query_paper_size_equals_every_point_a_candidate():
    """24 x 2048 points, 128 centres: the size the window is for (several chunks of sets)."""
    torch.manual_seed(7)
    points = torch.rand(24, 2048, 3) * torch.tensor([0.8, 1.8, 0.5])
    centres = gather_points(points, farthest_point_sample(points, 128))
    for mode in ("first", "nearest"):
        got = ball_query(points, centres, 0.1, 32, mode=mode)
        _assert_same_balls(got, _plain_ball_query(points, centres, 0.1, 32, mode), points, centres, mode)


def test_items_per_chunk_fits_the_cpu_budget_and_takes_everything_elsewhere():
    assert items_per_chunk(torch.device("cpu"), 1000, cpu_elements=10_000) == 10
    assert items_per_chunk(torch.device("cpu"), 10**9) == 1
    assert items_per_chunk(torch.device("meta"), 1000) >= 2**60


def test_ball_query_pads_by_repeating_and_never_zero():
    points = torch.tensor([[[5.0, 5, 5], [0, 0, 0], [0.1, 0, 0], [3, 3, 3]]])
    centres = torch.tensor([[[0.0, 0, 0], [3.05, 3, 3], [-9.0, -9, -9]]])
    got = ball_query(points, centres, 0.5, 4)
    assert got.tolist() == [[[1, 2, 1, 1], [3, 3, 3, 3], [1, 1, 1, 1]]]  # last: empty ball -> nearest point


def test_knn_matches_brute_force():
    torch.manual_seed(1)
    query, points = torch.randn(2, 3, 7, 3), torch.randn(2, 3, 30, 3)
    dist, idx = knn(query, points, 5)
    ref = torch.cdist(query.double(), points.double()).sort(dim=-1)
    torch.testing.assert_close(dist.double(), ref.values[..., :5], rtol=0, atol=1e-5)
    torch.testing.assert_close(idx, ref.indices[..., :5])
    with pytest.raises(ValueError, match="k must be"):
        knn(query, points, 31)


def test_gather_points_matches_indexing_and_backprops():
    torch.manual_seed(2)
    values = torch.randn(2, 3, 10, 4, requires_grad=True)
    index = torch.randint(10, (2, 3, 5, 6))
    got = gather_points(values, index)
    expected = torch.stack([torch.stack([values[b, t][index[b, t]] for t in range(3)]) for b in range(2)])
    assert torch.equal(got, expected)
    got.sum().backward()
    counts = torch.zeros(2, 3, 10).scatter_add_(-1, index.reshape(2, 3, -1), torch.ones(2, 3, 30))
    torch.testing.assert_close(values.grad, counts[..., None].expand(-1, -1, -1, 4))
    with pytest.raises(ValueError, match="leading dims"):
        gather_points(values, torch.zeros(3, 2, 1, dtype=torch.long))


def test_interpolate_features_matches_brute_force_weights():
    torch.manual_seed(3)
    query, points, feats = torch.randn(2, 9, 3), torch.randn(2, 12, 3), torch.randn(2, 12, 5)
    got = interpolate_features(query, points, feats, k=3)
    q, p, f = query.double().numpy(), points.double().numpy(), feats.double().numpy()
    for b in range(2):
        for i in range(9):
            d = np.sqrt(((p[b] - q[b, i]) ** 2).sum(-1))
            near = np.argsort(d)[:3]
            w = 1 / (d[near] + 1e-8)
            np.testing.assert_allclose(got[b, i].numpy(), (w[:, None] * f[b, near]).sum(0) / w.sum(), atol=1e-5)
    nearest = interpolate_features(query, points, feats, k=1)
    idx = torch.cdist(query, points).argmin(-1)
    assert torch.equal(nearest, gather_points(feats, idx))


def test_interpolate_features_on_points_and_duplicates_is_finite_and_exact():
    points = torch.zeros(1, 4, 3)  # all duplicates at the origin
    feats = torch.full((1, 4, 2), 7.0)
    out = interpolate_features(torch.zeros(1, 3, 3), points, feats)
    assert torch.isfinite(out).all() and torch.allclose(out, torch.full_like(out, 7.0))
    torch.manual_seed(4)
    points, feats = torch.randn(1, 6, 3), torch.randn(1, 6, 3)
    torch.testing.assert_close(interpolate_features(points, points, feats), feats, atol=1e-5, rtol=0)
