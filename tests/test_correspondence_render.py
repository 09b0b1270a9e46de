"""Render correspondence: brute-force z-buffer reference, fitted camera, known geometry."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.correspondence import (
    CorrespondenceError,
    fit_virtual_camera,
    render_correspondence,
    render_index_map,
    splat_zbuffer,
)
from cross4d_core.geometry import ImageTransform, PinholeCamera, project_points


def brute_force_index_map(uv, depth, valid, height, width, radius):
    """Front-to-back painter: points sorted by (depth, index), first to reach a pixel wins."""
    uv, depth, valid = uv.numpy().astype(np.float64), depth.numpy(), valid.numpy()
    T, N = depth.shape
    index = np.full((T, height, width), -1)
    for t in range(T):
        for n in sorted(np.flatnonzero(valid[t]), key=lambda n: (depth[t, n], n)):
            c, r = int(np.floor(uv[t, n, 0] + 0.5)), int(np.floor(uv[t, n, 1] + 0.5))
            for dr in range(-radius, radius + 1):
                for dc in range(-radius, radius + 1):
                    if 0 <= r + dr < height and 0 <= c + dc < width and index[t, r + dr, c + dc] < 0:
                        index[t, r + dr, c + dc] = n
    return index


@given(seed=st.integers(0, 2**16), radius=st.integers(0, 2), quantise=st.booleans(), tight=st.booleans())
def test_splat_zbuffer_matches_brute_force(seed, radius, quantise, tight):
    rng = np.random.default_rng(seed)
    T, N, S = 2, 60, 16
    points = rng.normal(size=(T, N, 3)) + [0, 0, 4]
    if quantise:  # many exact depth ties -> exercises the tie-break
        points = np.round(points * 2) / 2
    points[0, :3] = np.nan
    points = torch.tensor(points, dtype=torch.float32)
    # tight: a camera fitted to a shrunk clip, so that some points (and footprints) fall off the image
    cam = fit_virtual_camera(points * 0.4 + torch.tensor([0.0, 0, 2.4]) if tight else points, S)
    proj = project_points(points, cam)
    zbuf = splat_zbuffer(proj.uv, proj.depth, proj.valid, S, S, radius)
    expected = brute_force_index_map(proj.uv, proj.depth, proj.valid, S, S, radius)
    np.testing.assert_array_equal(zbuf.index.numpy(), expected)
    won = zbuf.index >= 0
    expected_depth = np.where(expected >= 0, np.take_along_axis(
        proj.depth.numpy(), np.maximum(expected, 0).reshape(T, -1), 1).reshape(T, S, S), np.inf)
    np.testing.assert_array_equal(zbuf.depth.numpy(), expected_depth)
    assert won.any()
    # a point is a winner iff it is the nearest at one of the image's pixels
    expected_won = np.zeros((T, N), bool)
    for t in range(T):
        expected_won[t, expected[t][expected[t] >= 0]] = True
    np.testing.assert_array_equal(zbuf.won.numpy(), expected_won)
    assert zbuf.point_id.dtype == torch.int64 and zbuf.point_id.is_contiguous()


@given(seed=st.integers(0, 2**16))
def test_render_visibility_and_patch_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    points = torch.tensor(rng.normal(size=(3, 80, 3)) * [1, 2, 0.5], dtype=torch.float32)
    images, corr = render_correspondence(points, image_size=28, patch=7, splat_radius=1)
    cam = fit_virtual_camera(points, 28)
    proj = project_points(points, cam)
    index = brute_force_index_map(proj.uv, proj.depth, proj.valid, 28, 28, 1)
    visible = np.zeros((3, 80), bool)
    for t in range(3):
        visible[t, index[t][index[t] >= 0]] = True
    np.testing.assert_array_equal(corr.visible.numpy(), visible)
    pixel = np.floor(proj.uv.numpy().astype(np.float64) + 0.5).astype(int)
    patch = pixel[..., 1] // 7 * 4 + pixel[..., 0] // 7
    np.testing.assert_array_equal(corr.patch.numpy(), np.where(visible, patch, -1))
    assert corr.grid_size == (4, 4) and corr.slot.tolist() == [[t] * 80 for t in range(3)]
    np.testing.assert_array_equal(render_index_map(points, 28), index)
    # background black, drawn pixels shaded, nearer is brighter
    assert images.shape == (3, 28, 28, 3) and images.dtype == torch.uint8
    assert torch.equal(images[..., 0] == 0, torch.tensor(index < 0))


@given(points=st.lists(st.tuples(*[st.floats(-50, 50, width=32)] * 3), min_size=1, max_size=40),
       fov=st.sampled_from([30.0, 60.0, 90.0]))
def test_fitted_camera_sees_every_point_of_every_frame(points, fov):
    cloud = torch.tensor(points, dtype=torch.float32).reshape(1, -1, 3).repeat(2, 1, 1)
    cloud[1] = cloud[1] * 0.5 + 3.0
    cam = fit_virtual_camera(cloud, 126, fov_deg=fov)
    assert project_points(cloud, cam).valid.all()


def test_point_behind_a_plane_is_invisible():
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 40), torch.linspace(-1, 1, 40), indexing="ij"), -1)
    plane = torch.cat([grid.reshape(-1, 2), torch.full((1600, 1), 3.0)], -1)
    behind = torch.tensor([[0.05, 0.05, 3.5]])
    in_front = torch.tensor([[-0.05, -0.05, 2.5]])
    points = torch.cat([plane, behind, in_front])[None]
    _, corr = render_correspondence(points, image_size=126, splat_radius=1)
    assert not corr.visible[0, 1600] and corr.patch[0, 1600] == -1
    assert corr.visible[0, 1601]
    assert corr.visible[0, :1600].float().mean() > 0.2


def test_patch_boundary_point_goes_to_the_right_and_lower_patch():
    # identity camera: u = 100 x / z + 62.5; x = -0.49 -> u = 13.5 (boundary of patches 0 and 1)
    cam = PinholeCamera.from_focal(100.0, 126, 126, cx=62.5, cy=62.5)
    points = torch.tensor([[[-0.49, -0.49, 1.0], [-0.4899, -0.4901, 1.0]]])
    _, corr = render_correspondence(points, camera=cam, splat_radius=0)
    assert corr.patch[0].tolist() == [1 * 9 + 1, 0 * 9 + 1]


def test_identical_points_tie_break_to_lowest_index_and_nan_points_invisible():
    points = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [float("nan"), 0, 1], [1.0, 0.0, 1.0]]])
    _, corr = render_correspondence(points, image_size=42, patch=14)
    assert corr.visible[0].tolist() == [True, False, False, True]


def test_transform_crop_makes_points_outside_it_invisible():
    points = torch.tensor(np.random.default_rng(0).normal(size=(1, 500, 3)), dtype=torch.float32)
    transform = ImageTransform.create(126, 126, 14, resize_shortest_edge=126, crop=70)
    _, corr = render_correspondence(points, transform=transform)
    _, full = render_correspondence(points)
    assert corr.grid_size == (5, 5)
    assert corr.visible.sum() < full.visible.sum() and not (corr.visible & ~full.visible).any()
    assert corr.patch[corr.visible].max() < 25


def test_tubelet_slots():
    _, corr = render_correspondence(torch.randn(5, 10, 3), image_size=28, patch=14, tubelet=2)
    assert corr.slot[:, 0].tolist() == [0, 0, 1, 1, 2]


def test_bad_inputs():
    with pytest.raises(CorrespondenceError, match="empty clip"):
        render_correspondence(torch.zeros(3, 0, 3))
    with pytest.raises(CorrespondenceError, match=r"\[T, N, 3\]"):
        render_correspondence(torch.zeros(3, 5))
    with pytest.raises(CorrespondenceError, match="none of the 6 points is finite"):
        render_correspondence(torch.full((2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="camera is 64x64"):
        render_correspondence(torch.randn(1, 5, 3), camera=PinholeCamera.from_focal(50, 64, 64))


def test_render_views_directions_known_geometry():
    from cross4d_core.correspondence import RenderViews

    dirs = RenderViews(num_cameras=4).directions()
    views = np.array([v for v, _ in dirs])
    # about the optical frame's down axis (+y); positive azimuth turns the view toward the sensor's +x
    np.testing.assert_allclose(views, [[0, 0, 1], [1, 0, 0], [0, 0, -1], [-1, 0, 0]], atol=1e-12)
    tilted, down = RenderViews(elevation_deg=30).directions()[0]
    np.testing.assert_allclose(tilted, [0, 0.5, np.sqrt(3) / 2], atol=1e-12)  # looks down (+y) on the subject
    np.testing.assert_allclose(down, [0, 1, 0])
    with pytest.raises(ValueError, match="num_cameras"):
        RenderViews(num_cameras=0)


@given(seed=st.integers(0, 2**16))
def test_multi_camera_correspondence_takes_the_first_camera_that_sees_a_point(seed):
    from cross4d_core.correspondence import RenderViews, render_clip

    rng = np.random.default_rng(seed)
    points = torch.tensor(rng.normal(size=(3, 60, 3)) * [0.3, 0.8, 0.3] + [0, 0, 3], dtype=torch.float32)
    views = RenderViews(num_cameras=3, azimuth_deg=20.0)
    out = render_clip(points, image_size=28, patch=7, splat_radius=1, tubelet=2, views=views)
    assert out.images.shape == (9, 28, 28, 3) and out.point_id.shape == (9, 28, 28) and len(out.cameras) == 3
    singles = [render_correspondence(points, 28, 7, 1, camera=cam, tubelet=2)[1] for cam in out.cameras]
    corr = out.correspondence
    expected_visible = singles[0].visible | singles[1].visible | singles[2].visible
    assert torch.equal(corr.visible, expected_visible)
    for t in range(3):
        for n in range(60):
            seen = [v for v in range(3) if singles[v].visible[t, n]]
            if seen:
                v = seen[0]
                assert int(corr.slot[t, n]) == v * 2 + t // 2  # 2 slots per camera (tubelet 2, 3 frames)
                assert int(corr.patch[t, n]) == int(singles[v].patch[t, n])
            else:
                assert int(corr.patch[t, n]) == -1
    # more cameras never lose a point; a side view occludes the far side of a surface
    assert float(corr.visible.float().mean()) >= float(singles[0].visible.float().mean())


def test_label_images_read_the_winner_of_each_pixel():
    from cross4d_core.correspondence import render_clip

    rng = np.random.default_rng(0)
    points = torch.tensor(rng.normal(size=(2, 40, 3)) + [0, 0, 4], dtype=torch.float32)
    labels = rng.integers(0, 5, size=(2, 40))
    out = render_clip(points, image_size=28, patch=7)
    index = render_index_map(points, 28)
    expected = np.where(index.numpy() >= 0, np.take_along_axis(labels, np.maximum(index.numpy(), 0).reshape(2, -1),
                                                               1).reshape(2, 28, 28), -1)
    np.testing.assert_array_equal(out.label_images(labels).numpy(), expected)
