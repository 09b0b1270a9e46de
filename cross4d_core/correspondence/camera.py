"""The "camera" correspondence source: a real RGB image and its calibrated camera.

Points move into the optical frame with the extrinsic, are projected with the
calibrated intrinsics and distortion and mapped through the teacher's own resize / crop
into its patch grid. Visible = finite, in front, inside the image and the crop, and not
occluded: within ``depth_tolerance`` of the nearest point splatted onto its pixel.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cross4d_core.correspondence.inputs import CorrespondenceError, as_points
from cross4d_core.correspondence.zbuffer import nearest_depth_in_footprint
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.geometry.image_transform import ImageTransform
from cross4d_core.geometry.projection import project_points
from cross4d_core.types import Correspondence


def camera_correspondence(
    points: np.ndarray | torch.Tensor,
    images: np.ndarray | torch.Tensor | None,
    cameras: Sequence[PinholeCamera],
    teacher_transform: ImageTransform,
    tubelet: int = 1,
    depth_tolerance: float = 0.05,
    splat_radius: int = 2,
) -> Correspondence:
    """Point -> patch correspondence against the real camera images.

    Args:
        points: ``[T, N, 3]`` metres in the cloud frame; non-finite points are invisible.
        images: ``[T, H, W, 3]`` (only the size is used; None to trust the cameras' size).
        cameras: T cameras; each camera's size must equal the image size.
        teacher_transform: the teacher's :class:`ImageTransform` for ``H x W`` images.
        tubelet: frames per teacher time slot.
        depth_tolerance: metres behind the nearest surface at the pixel still counted visible.
        splat_radius: occluder footprint in pixels (points are sparse; a bare pixel z-buffer
            would let background points show through the gaps of a foreground surface).

    Returns:
        :class:`~cross4d_core.types.Correspondence`.

    Raises:
        CorrespondenceError: bad shapes or sizes, or every point of the clip behind its camera.
    """
    points = as_points(points)
    T, N, _ = points.shape
    cameras = list(cameras)
    if len(cameras) != T:
        raise CorrespondenceError(f"cameras: {len(cameras)} cameras for {T} frames")
    H, W = cameras[0].height, cameras[0].width
    if images is not None:
        if images.ndim != 4 or images.shape[0] != T or images.shape[-1] != 3:
            raise CorrespondenceError(f"images: expected [{T}, H, W, 3], got {tuple(images.shape)}")
        H, W = int(images.shape[1]), int(images.shape[2])
        if H == 0 or W == 0:
            raise CorrespondenceError(f"images: zero-size image {W}x{H}")
    for t, cam in enumerate(cameras):
        if (cam.width, cam.height) != (W, H):
            raise CorrespondenceError(f"cameras[{t}]: camera is {cam.width}x{cam.height} but the image is {W}x{H}")
    if (teacher_transform.in_h, teacher_transform.in_w) != (H, W):
        raise CorrespondenceError(
            f"teacher_transform: built for {teacher_transform.in_w}x{teacher_transform.in_h} images, "
            f"the image is {W}x{H}"
        )
    proj = project_points(points, cameras)
    if not bool((proj.depth > 0).any()):
        raise CorrespondenceError(
            f"points: all {T * N} points are behind the camera (z <= 0 in every frame); check T_cam_from_points"
        )
    valid = proj.valid
    nearest = nearest_depth_in_footprint(proj.uv, proj.depth, valid, H, W, splat_radius)
    patch, inside = teacher_transform.pixel_to_grid(proj.uv)
    visible = valid & inside & (proj.depth <= nearest + depth_tolerance)
    slot = (torch.arange(T, device=points.device) // tubelet)[:, None].expand(T, N).contiguous()
    return Correspondence(
        slot=slot,
        patch=torch.where(visible, patch, torch.full_like(patch, -1)),
        visible=visible,
        grid_size=teacher_transform.grid_size,
    )
