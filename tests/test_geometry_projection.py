"""Projection against OpenCV, the in-image mask, and depth back-projection."""
import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.geometry import (
    CameraBatch,
    PinholeCamera,
    depth_to_points,
    msr_ntu_camera,
    pixel_of,
    project_points,
)

K = np.array([[500.0, 0.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])


def _rt(seed):
    rng = np.random.default_rng(seed)
    rvec = rng.normal(scale=0.2, size=3)
    tvec = rng.normal(scale=0.3, size=3)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec
    return rvec, tvec, T


def _cloud(seed, n=200):
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-1, 1, (n, 2)), rng.uniform(1.5, 4, n)]


@pytest.mark.parametrize("model,D", [
    ("none", []),
    ("plumb_bob", [-0.28, 0.07, 1e-3, -2e-3, 0.01]),
    ("plumb_bob", [0.1, -0.05, 3e-3, 1e-3]),
    ("rational_polynomial", [0.3, -0.1, 1e-3, -2e-3, 0.02, 0.4, -0.05, 0.01]),
    ("rational_polynomial", [0.3, -0.1, 1e-3, -2e-3, 0.02, 0.4, -0.05, 0.01, 1e-3, -2e-3, 3e-3, 1e-3]),
])
@given(seed=st.integers(0, 2**16))
def test_projection_matches_cv2_projectPoints(model, D, seed):
    rvec, tvec, T = _rt(seed)
    points = _cloud(seed)
    cam = PinholeCamera(K=K, width=640, height=480, distortion_model=model, D=D, T_cam_from_points=T)
    expected, _ = cv2.projectPoints(points, rvec, tvec, K, np.asarray(D, dtype=np.float64))
    proj = project_points(torch.tensor(points, dtype=torch.float64), cam)
    cam_points = points @ T[:3, :3].T + T[:3, 3]
    # cv2 also projects points behind the camera (a few seeds have some); those must come back invalid
    front = cam_points[:, 2] > 1e-6
    assert not proj.valid.numpy()[~front].any()
    # rtol: points just in front of the camera land ~1e9 px out, where float64 keeps ~1e-6 px.
    np.testing.assert_allclose(proj.uv.numpy()[front], expected[front, 0], rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(proj.depth.numpy(), cam_points[:, 2], atol=1e-9)


@given(seed=st.integers(0, 2**16))
def test_equidistant_matches_cv2_fisheye(seed):
    rvec, tvec, T = _rt(seed)
    points = _cloud(seed)
    D = np.array([0.05, -0.01, 0.003, -0.001])
    cam = PinholeCamera(K=K, width=640, height=480, distortion_model="equidistant", D=D, T_cam_from_points=T)
    expected, _ = cv2.fisheye.projectPoints(points[None], rvec, tvec, K, D)
    proj = project_points(torch.tensor(points, dtype=torch.float64), cam)
    np.testing.assert_allclose(proj.uv.numpy(), expected[0], atol=1e-6)


def test_mixed_models_in_one_batch_match_single_projections():
    cams = [
        PinholeCamera(K=K, width=640, height=480, distortion_model="equidistant", D=[0.05, -0.01, 0.003, -0.001]),
        PinholeCamera(K=K, width=640, height=480, distortion_model="plumb_bob", D=[-0.2, 0.05, 0, 0, 0]),
        PinholeCamera(K=K, width=320, height=240),
    ]
    points = torch.tensor(np.stack([_cloud(i) for i in range(3)]), dtype=torch.float64)
    batched = project_points(points, cams)
    for i, cam in enumerate(cams):
        single = project_points(points[i], cam)
        torch.testing.assert_close(batched.uv[i], single.uv)
        assert torch.equal(batched.valid[i], single.valid)


def test_valid_mask_in_front_and_in_image():
    cam = PinholeCamera.from_focal(100.0, 20, 10, cx=9.5, cy=4.5)
    points = torch.tensor([
        [0.0, 0.0, 1.0],          # centre
        [0.0, 0.0, -1.0],         # behind
        [0.0, 0.0, 0.0],          # at the camera centre
        [-0.1, 0.0, 1.0],         # u = -0.5: first column's left edge, inside
        [0.1, 0.0, 1.0],          # u = 19.5: right edge of the last pixel, outside
        [float("nan"), 0.0, 1.0],
    ])
    proj = project_points(points, cam)
    assert proj.valid.tolist() == [True, False, False, True, False, False]
    assert pixel_of(proj.uv[3]).tolist() == [0, 5]  # v = 4.5 is half-way: the higher pixel


def test_depth_to_points_msr_convention_and_round_trip():
    cam = msr_ntu_camera(320, 240)
    assert (cam.fx, cam.cx, cam.cy) == (280.0, 160.0, 120.0)
    depth = torch.zeros(240, 320)
    depth[120, 160] = 2.0
    depth[10, 300] = 3.0
    depth[50, 20] = float("nan")
    points, valid = depth_to_points(depth, cam)
    assert valid.sum() == 2
    torch.testing.assert_close(points[120, 160], torch.tensor([0.0, 0.0, 2.0]))
    torch.testing.assert_close(points[10, 300], torch.tensor([(300 - 160) * 3 / 280, (10 - 120) * 3 / 280, 3.0]))
    rng = np.random.default_rng(0)
    depth = torch.tensor(rng.uniform(0.5, 4, (2, 240, 320)), dtype=torch.float32)
    points, valid = depth_to_points(depth, cam)
    proj = project_points(points.reshape(2, -1, 3), [cam, cam])
    v, u = torch.meshgrid(torch.arange(240.0), torch.arange(320.0), indexing="ij")
    torch.testing.assert_close(proj.uv.reshape(2, 240, 320, 2), torch.stack([u, v], -1).expand(2, -1, -1, -1),
                               atol=2e-3, rtol=0)


def test_bad_inputs_raise_clearly():
    cam = msr_ntu_camera(320, 240)
    with pytest.raises(ValueError, match="depth image is 10x10"):
        depth_to_points(torch.zeros(10, 10), cam)
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        project_points(torch.zeros(4, 2), cam)
    with pytest.raises(ValueError, match="2 cameras for a batch of 3"):
        project_points(torch.zeros(3, 4, 3), [cam, cam])
    tilted = PinholeCamera(K=K, width=640, height=480, distortion_model="rational_polynomial",
                           D=[0.1] * 12 + [0.01, 0.0])
    with pytest.raises(ValueError, match="tauX"):
        CameraBatch.from_cameras([tilted])
