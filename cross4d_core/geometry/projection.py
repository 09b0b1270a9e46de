"""Batched, vectorised camera projection and depth back-projection (torch, CPU or GPU).

Every distortion model is evaluated in closed form on whole tensors: ``plumb_bob`` and
``none`` are special cases of OpenCV's ``rational_polynomial`` model (missing
coefficients are zero), so one formula serves all of them; ``equidistant`` follows
``cv2.fisheye``. Cameras with different models can share one batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from cross4d_core.geometry.camera import PinholeCamera

#: Focal length (pixels) used by every public MSR-Action3D / NTU-60 loader; the principal
#: point is the image centre.
MSR_NTU_FOCAL = 280.0


@dataclass
class CameraBatch:
    """``B`` cameras as tensors, ready for :func:`project_points`.

    Attributes:
        K: ``[B, 3, 3]`` intrinsics (pixels).
        T_cam_from_points: ``[B, 4, 4]`` extrinsics (metres).
        coeffs: ``[B, 12]`` rational-polynomial coefficients ``k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4``
            (equidistant cameras: ``k1..k4`` in the first four entries).
        equidistant: ``[B]`` bool, True where the camera uses the fisheye model.
        width, height: ``[B]`` int64 image sizes in pixels.
    """

    K: torch.Tensor
    T_cam_from_points: torch.Tensor
    coeffs: torch.Tensor
    equidistant: torch.Tensor
    width: torch.Tensor
    height: torch.Tensor

    @classmethod
    def from_cameras(
        cls, cameras: PinholeCamera | Sequence[PinholeCamera], device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> CameraBatch:
        cameras = [cameras] if isinstance(cameras, PinholeCamera) else list(cameras)
        if not cameras:
            raise ValueError("CameraBatch.from_cameras: no cameras given")
        coeffs = np.zeros((len(cameras), 12))
        for i, cam in enumerate(cameras):
            if cam.D.size == 14 and np.any(cam.D[12:] != 0):
                raise ValueError(
                    f"cameras[{i}].D: tilted-sensor coefficients tauX, tauY = {cam.D[12:].tolist()} are not supported"
                )
            coeffs[i, : min(cam.D.size, 12)] = cam.D[:12]
        as_tensor = lambda a: torch.as_tensor(np.stack(a), dtype=dtype, device=device)  # noqa: E731
        return cls(
            K=as_tensor([c.K for c in cameras]),
            T_cam_from_points=as_tensor([c.T_cam_from_points for c in cameras]),
            coeffs=torch.as_tensor(coeffs, dtype=dtype, device=device),
            equidistant=torch.tensor([c.distortion_model == "equidistant" for c in cameras], device=device),
            width=torch.tensor([c.width for c in cameras], device=device),
            height=torch.tensor([c.height for c in cameras], device=device),
        )

    def __len__(self) -> int:
        return int(self.K.shape[0])


class Projection(NamedTuple):
    """Result of :func:`project_points`.

    Attributes:
        uv: ``[B, N, 2]`` pixel coordinates (u right, v down; pixel centres at integers).
        depth: ``[B, N]`` z in the camera's optical frame (metres).
        valid: ``[B, N]`` bool: finite, in front of the camera (``depth > min_depth``) and
            inside the image (``-0.5 <= u < W - 0.5``, same for v).
    """

    uv: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor


def _distort_rational(xn: torch.Tensor, yn: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = (c[:, i, None] for i in range(12))
    r2 = xn * xn + yn * yn
    r4 = r2 * r2
    r6 = r4 * r2
    radial = (1 + k1 * r2 + k2 * r4 + k3 * r6) / (1 + k4 * r2 + k5 * r4 + k6 * r6)
    xy2 = 2 * xn * yn
    xd = xn * radial + p1 * xy2 + p2 * (r2 + 2 * xn * xn) + s1 * r2 + s2 * r4
    yd = yn * radial + p1 * (r2 + 2 * yn * yn) + p2 * xy2 + s3 * r2 + s4 * r4
    return xd, yd


def _distort_equidistant(xn: torch.Tensor, yn: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k1, k2, k3, k4 = (c[:, i, None] for i in range(4))
    r = torch.sqrt(xn * xn + yn * yn)
    theta = torch.atan(r)
    t2 = theta * theta
    theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    # theta_d / r -> 1 as r -> 0 (the optical axis)
    scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
    return xn * scale, yn * scale


def project_points(
    points: torch.Tensor,
    cameras: CameraBatch | PinholeCamera | Sequence[PinholeCamera],
    apply_extrinsic: bool = True,
    min_depth: float = 1e-6,
) -> Projection:
    """Project points into one camera per batch entry.

    Args:
        points: ``[B, N, 3]`` (or ``[N, 3]`` for one camera) points in metres, in the frame
            ``T_cam_from_points`` maps from (or already in the optical frame when
            ``apply_extrinsic`` is False). Non-finite points come back invalid.
        cameras: a :class:`CameraBatch` of ``B`` cameras, or ``B`` (or one, broadcast)
            :class:`PinholeCamera` objects.
        apply_extrinsic: move points with ``T_cam_from_points`` first.
        min_depth: points with ``z <= min_depth`` (metres) are behind the camera.

    Returns:
        :class:`Projection` with ``uv [B, N, 2]``, ``depth [B, N]``, ``valid [B, N]``
        (squeezed back to ``[N, ...]`` for ``[N, 3]`` input).
    """
    squeeze = points.dim() == 2
    if squeeze:
        points = points[None]
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"project_points: points must be [B, N, 3] or [N, 3], got {tuple(points.shape)}")
    if not isinstance(cameras, CameraBatch):
        cameras = CameraBatch.from_cameras(cameras, device=points.device, dtype=points.dtype)
    if len(cameras) not in (1, points.shape[0]):
        raise ValueError(f"project_points: {len(cameras)} cameras for a batch of {points.shape[0]} point sets")
    # channel-first copy: every per-coordinate op below then reads and writes contiguous memory
    x, y, z = points.permute(2, 0, 1).contiguous()
    if apply_extrinsic:
        # written out per coefficient (a broadcast 3x3 matmul over [B, N] runs as a slow bmm on CPU),
        # one fused multiply-add per term
        T = cameras.T_cam_from_points.to(points)[:, :3, :, None]
        x, y, z = (torch.addcmul(T[:, i, 3], T[:, i, 0], x).addcmul_(T[:, i, 1], y).addcmul_(T[:, i, 2], z)
                   for i in range(3))
    # comparisons with NaN are False: NaN or infinite x, y fall outside the image below
    in_front = (z > min_depth).logical_and_(z < float("inf"))
    z_safe = torch.where(in_front, z, 1.0)
    xn, yn = x / z_safe, y / z_safe
    coeffs = cameras.coeffs.to(points)
    xr, yr = _distort_rational(xn, yn, coeffs) if bool(coeffs.any()) else (xn, yn)
    if bool(cameras.equidistant.any()):
        xe, ye = _distort_equidistant(xn, yn, coeffs)
        fisheye = cameras.equidistant[:, None]
        xr, yr = torch.where(fisheye, xe, xr), torch.where(fisheye, ye, yr)
    K = cameras.K.to(points)[..., None]
    uv = torch.empty(*z.shape, 2, dtype=z.dtype, device=z.device)
    u, v = uv.unbind(-1)
    # multiply, then add (no fused multiply-add): pixel edges such as u = -0.5 come out exact
    torch.mul(K[:, 0, 0], xr, out=u).addcmul_(K[:, 0, 1], yr).add_(K[:, 0, 2])
    torch.mul(K[:, 1, 1], yr, out=v).add_(K[:, 1, 2])
    width = cameras.width.to(points.device)[:, None]
    height = cameras.height.to(points.device)[:, None]
    valid = in_front.logical_and_(u >= -0.5).logical_and_(u < width - 0.5)
    valid.logical_and_(v >= -0.5).logical_and_(v < height - 0.5)
    if squeeze:
        return Projection(uv[0], z[0], valid[0])
    return Projection(uv, z, valid)


def pixel_of(uv: torch.Tensor) -> torch.Tensor:
    """Integer pixel ``[..., 2]`` (column, row) containing continuous ``uv``: pixel ``i`` covers
    ``[i - 0.5, i + 0.5)``, so a coordinate exactly half-way goes to the higher pixel."""
    return torch.floor(uv + 0.5).long()


def msr_ntu_camera(width: int, height: int) -> PinholeCamera:
    """The camera every public MSR-Action3D / NTU-60 loader assumes: f = 280, principal point
    at the image centre (``W/2, H/2``)."""
    return PinholeCamera.from_focal(MSR_NTU_FOCAL, width, height)


def depth_to_points(depth: torch.Tensor, camera: PinholeCamera) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-project depth images into the camera's optical frame.

    ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``, ``z = depth`` (with
    :func:`msr_ntu_camera` this is the MSR / NTU loader convention).

    Args:
        depth: ``[..., H, W]`` depth in metres; ``<= 0`` or non-finite means no return.
        camera: undistorted camera whose size matches the images.

    Returns:
        ``points [..., H, W, 3]`` (metres) and ``valid [..., H, W]`` bool.
    """
    if depth.dim() < 2:
        raise ValueError(f"depth_to_points: depth must be [..., H, W], got {tuple(depth.shape)}")
    H, W = depth.shape[-2:]
    if (W, H) != (camera.width, camera.height):
        raise ValueError(f"depth_to_points: depth image is {W}x{H} but the camera is {camera.width}x{camera.height}")
    if camera.distortion_model != "none":
        raise ValueError(f"depth_to_points: needs an undistorted camera, got {camera.distortion_model!r}")
    depth = depth.float()
    v, u = torch.meshgrid(
        torch.arange(H, device=depth.device, dtype=depth.dtype),
        torch.arange(W, device=depth.device, dtype=depth.dtype),
        indexing="ij",
    )
    valid = torch.isfinite(depth) & (depth > 0)
    z = torch.where(valid, depth, torch.zeros_like(depth))
    x = (u - camera.cx) * z / camera.fx
    y = (v - camera.cy) * z / camera.fy
    return torch.stack([x, y, z], -1), valid
