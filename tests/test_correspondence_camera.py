"""Camera correspondence: real resize + centre crop, occlusion, brute force, bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.correspondence import CorrespondenceError, camera_correspondence
from cross4d_core.geometry import ImageTransform, PinholeCamera, project_points

W, H = 64, 48


def _camera(distortion="plumb_bob", D=(-0.1, 0.02, 1e-3, -1e-3, 0.0)):
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.05, 0.2]
    return PinholeCamera(K=[[60, 0, 31.5], [0, 62, 23.5], [0, 0, 1]], width=W, height=H,
                         distortion_model=distortion, D=D, T_cam_from_points=T)


def _ramp_images(T):
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return np.broadcast_to(np.stack([u, v, np.zeros_like(u)], -1).astype(np.uint8), (T, H, W, 3)).copy()


@given(seed=st.integers(0, 2**16), resize=st.sampled_from([28, 40, 56, 96]), crop=st.sampled_from([28, 42]))
def test_patch_equals_patch_of_the_pixel_in_the_transformed_image(seed, resize, crop):
    """Each pixel of a ramp image holds its own coordinates; after the real bicubic resize and
    centre crop, the transformed pixel nearest to a point's (u, v) holds the patch it must get."""
    if crop > resize:
        crop = resize // 14 * 14
    rng = np.random.default_rng(seed)
    points = np.c_[rng.uniform(-1.2, 1.2, (2, 300, 2)), rng.uniform(1.5, 3, (2, 300, 1))].astype(np.float32)
    transform = ImageTransform.create(H, W, 14, resize, crop)
    cam = _camera()
    corr = camera_correspondence(points, _ramp_images(2), [cam, cam], transform, depth_tolerance=np.inf)
    ramp = transform.apply(torch.tensor(_ramp_images(1)).permute(0, 3, 1, 2).float())[0]  # [3, h, w]
    uv = project_points(torch.tensor(points), [cam, cam]).uv
    gh, gw = transform.grid_size
    vis = corr.visible.numpy()
    assert vis.any()
    # keep away from the image border, where the resize kernel is clamped and the ramp bends, and
    # from patch boundaries by 0.15 transformed pixels (antialiased bicubic bends a ramp by ~0.05 px)
    u, v = uv[..., 0], uv[..., 1]
    x = (u + 0.5) * transform.resize_w / W - transform.left
    y = (v + 0.5) * transform.resize_h / H - transform.top
    off_boundary = ((x - (x / 14).round() * 14).abs() > 0.15) & ((y - (y / 14).round() * 14).abs() > 0.15)
    interior = (u > 2) & (u < W - 3) & (v > 2) & (v < H - 3) & off_boundary
    for t, n in zip(*np.nonzero(vis & interior.numpy())):
        dist = (ramp[0] - u[t, n]).abs() + (ramp[1] - v[t, n]).abs()
        row, col = divmod(int(dist.argmin()), ramp.shape[-1])
        assert corr.patch[t, n] == (row // 14) * gw + col // 14
    # points whose pixel lies outside the crop are invisible
    _, inside = transform.pixel_to_grid(uv)
    assert not (corr.visible & ~inside).any()


def brute_force_visible(points, cam, radius, tol):
    proj = project_points(torch.tensor(points), cam)
    uv, depth, valid = proj.uv.numpy(), proj.depth.numpy(), proj.valid.numpy()
    zbuf = np.full((H, W), np.inf)
    pix = np.floor(uv + 0.5).astype(int)
    for n in np.flatnonzero(valid):
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                r, c = pix[n, 1] + dr, pix[n, 0] + dc
                if 0 <= r < H and 0 <= c < W:
                    zbuf[r, c] = min(zbuf[r, c], depth[n])
    return np.array([valid[n] and depth[n] <= zbuf[pix[n, 1], pix[n, 0]] + tol for n in range(len(depth))])


@given(seed=st.integers(0, 2**16), radius=st.integers(0, 2))
def test_visibility_matches_brute_force_zbuffer(seed, radius):
    rng = np.random.default_rng(seed)
    points = np.c_[rng.uniform(-0.6, 0.6, (1, 400, 2)), rng.uniform(1.0, 2.0, (1, 400, 1))].astype(np.float32)
    cam = _camera()
    transform = ImageTransform.create(H, W, 8)
    corr = camera_correspondence(points, None, [cam], transform, depth_tolerance=0.05, splat_radius=radius)
    expected = brute_force_visible(points[0], cam, radius, 0.05)
    np.testing.assert_array_equal(corr.visible[0].numpy(), expected)


def test_point_behind_occluder_is_invisible_and_tolerance_keeps_surface():
    cam = PinholeCamera.from_focal(60, W, H)
    wall = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 30), np.linspace(-0.3, 0.3, 30)), -1).reshape(-1, 2)
    wall = np.c_[wall, np.full(900, 2.0)]
    extra = np.array([[0.0, 0.0, 2.5], [0.0, 0.0, 2.03], [1.0, 0.0, 2.5]])  # behind / on the surface / beside
    points = np.r_[wall, extra][None].astype(np.float32)
    corr = camera_correspondence(points, np.zeros((1, H, W, 3), np.uint8), [cam], ImageTransform.create(H, W, 8))
    assert corr.visible[0, :900].all()
    assert corr.visible[0, 900:].tolist() == [False, True, True]
    assert corr.patch[0, 900] == -1


def test_bad_inputs():
    cam = _camera()
    tr = ImageTransform.create(H, W, 8)
    pts = np.ones((2, 5, 3), np.float32)
    with pytest.raises(CorrespondenceError, match=r"cameras\[1\]: camera is 32x48 but the image is 64x48"):
        camera_correspondence(pts, np.zeros((2, H, W, 3), np.uint8), [cam, PinholeCamera.from_focal(50, 32, 48)], tr)
    with pytest.raises(CorrespondenceError, match="zero-size image"):
        camera_correspondence(pts, np.zeros((2, 0, W, 3), np.uint8), [cam, cam], tr)
    with pytest.raises(CorrespondenceError, match="behind the camera"):
        camera_correspondence(-pts, None, [PinholeCamera.from_focal(50, W, H)] * 2, tr)
    with pytest.raises(CorrespondenceError, match="1 cameras for 2 frames"):
        camera_correspondence(pts, None, [cam], tr)
    with pytest.raises(CorrespondenceError, match="built for 32x32"):
        camera_correspondence(pts, None, [cam, cam], ImageTransform.create(32, 32, 8))
    with pytest.raises(CorrespondenceError, match="empty clip"):
        camera_correspondence(np.zeros((2, 0, 3)), None, [cam, cam], tr)
