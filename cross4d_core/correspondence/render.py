"""The "render" correspondence source (the paper's default, METHOD.md "Correspondence").

One virtual pinhole camera per clip looks at the clip centroid from far enough back that
every finite point of every frame is inside the image; each frame is splatted into a
z-buffer that gives a depth-shaded RGB image for the teacher and the nearest point per
pixel. A point is visible when it wins at least one pixel; its target is the patch its
own projection falls in.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cross4d_core.correspondence.inputs import as_points
from cross4d_core.correspondence.zbuffer import splat_zbuffer
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.geometry.image_transform import ImageTransform
from cross4d_core.geometry.projection import project_points
from cross4d_core.types import Correspondence


def fit_virtual_camera(
    points: np.ndarray | torch.Tensor,
    image_size: int = 126,
    fov_deg: float = 60.0,
    margin: float = 0.05,
    view_dir: tuple[float, float, float] = (0.0, 0.0, 1.0),
    down: tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> PinholeCamera:
    """The clip's virtual camera: looks along ``view_dir`` at the centroid of all finite points.

    The default view (+z forward, +y down) is the depth sensor's own view for datasets
    recorded in the sensor frame (MSR, NTU, rosbag clouds in an optical frame). The camera
    backs off until every point lies within ``(1 - margin)`` of the half field of view and at
    least ``near = max(5% of the extent, 1 mm)`` in front.

    Args:
        points: ``[T, N, 3]`` (or ``[N, 3]``) metres; non-finite points are ignored.
        image_size: square image side in pixels; fov_deg: full field of view.
    """
    columns = torch.as_tensor(points).float().reshape(-1, 3).T.contiguous()  # [3, M]: contiguous per coordinate
    finite = torch.isfinite(columns).all(0)
    if not bool(finite.any()):
        raise ValueError("fit_virtual_camera: no finite point in the clip")
    z_axis = torch.tensor(view_dir, dtype=torch.float32)
    z_axis = z_axis / z_axis.norm()
    y_axis = torch.tensor(down, dtype=torch.float32)
    y_axis = y_axis - (y_axis @ z_axis) * z_axis
    if y_axis.norm() < 1e-9:
        raise ValueError(f"fit_virtual_camera: down {down} is parallel to view_dir {view_dir}")
    y_axis = y_axis / y_axis.norm()
    R = torch.stack([torch.linalg.cross(y_axis, z_axis), y_axis, z_axis])
    if not bool(finite.all()):
        columns = torch.where(finite, columns, torch.nan)
    centre = columns.nansum(1) / finite.sum()  # nanmean without its own NaN count
    rel = columns - centre[:, None]
    x, y, z = (R[i, 0] * rel[0] + R[i, 1] * rel[1] + R[i, 2] * rel[2] for i in range(3))
    extent = float(rel.abs().nan_to_num(0.0).amax()) * 3**0.5
    near = max(0.05 * extent, 1e-3)
    tan_half = math.tan(math.radians(fov_deg) / 2)
    distance = max(float((torch.maximum(x.abs(), y.abs()) / tan_half - z).nan_to_num(-math.inf).max()),
                   near - float(z.nan_to_num(math.inf).min()))
    T = np.eye(4)
    T[:3, :3] = R.double().numpy()
    T[:3, 3] = -T[:3, :3] @ centre.double().numpy() + np.array([0.0, 0.0, distance])
    focal = image_size / 2 * (1 - margin) / tan_half
    c = (image_size - 1) / 2
    return PinholeCamera.from_focal(focal, image_size, image_size, cx=c, cy=c, T_cam_from_points=T)


def shade_depth(point_id: torch.Tensor, depth: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Depth-shaded grey RGB ``[T, H, W, 3]`` uint8 from the winner map ``point_id [T, H, W]``
    (int32 or int64, :attr:`ZBuffer.point_id`) and the points' depths ``[T, N]``: 255 at
    ``near`` down to 55 at ``far``, black background."""
    scale = max(far - near, 1e-9)
    grey = (255.0 - 200.0 * ((depth.reshape(-1) - near) / scale).clamp(0, 1)).round().to(torch.uint8)
    grey = torch.cat([grey, grey.new_zeros(1)])  # entry T * N: background
    pixels = grey.index_select(0, point_id.reshape(-1)).view(point_id.shape)
    return torch.stack([pixels, pixels, pixels], -1)


def render_correspondence(
    points: np.ndarray | torch.Tensor,
    image_size: int = 126,
    patch: int = 14,
    splat_radius: int = 1,
    camera: PinholeCamera | None = None,
    transform: ImageTransform | None = None,
    tubelet: int = 1,
    fov_deg: float = 60.0,
) -> tuple[torch.Tensor, Correspondence]:
    """Render a clip and put its points in correspondence with the rendered images' patches.

    Args:
        points: ``[T, N, 3]`` metres; non-finite points are invisible.
        image_size: rendered square image side (pixels); patch: teacher patch size.
        splat_radius: each point draws a ``(2r + 1)^2`` pixel square.
        camera: the virtual camera (default: :func:`fit_virtual_camera`).
        transform: the teacher's image transform for ``image_size`` images (default: none,
            the image is cut into ``patch`` cells as is). Visible points outside its crop
            become invisible.
        tubelet: frames per teacher time slot (slot = ``t // tubelet``).

    Returns:
        ``images [T, image_size, image_size, 3]`` uint8 depth-shaded renders and the
        :class:`Correspondence`; the per-pixel winner map is available from
        :func:`render_index_map`.
    """
    images, _, corr = _render(points, image_size, patch, splat_radius, camera, transform, tubelet, fov_deg)
    return images, corr


def render_index_map(points: np.ndarray | torch.Tensor, image_size: int = 126, splat_radius: int = 1,
                     camera: PinholeCamera | None = None, fov_deg: float = 60.0) -> torch.Tensor:
    """``[T, H, W]`` int64 index of the nearest point per pixel (-1 = background)."""
    return _render(points, image_size, 14, splat_radius, camera, None, 1, fov_deg)[1].index


def _render(points, image_size, patch, splat_radius, camera, transform, tubelet, fov_deg):
    points = as_points(points)
    T, N, _ = points.shape
    if camera is None:
        camera = fit_virtual_camera(points, image_size, fov_deg)
    elif (camera.width, camera.height) != (image_size, image_size):
        raise ValueError(f"render_correspondence: camera is {camera.width}x{camera.height}, image_size {image_size}")
    if transform is None:
        transform = ImageTransform.create(image_size, image_size, patch)
    elif (transform.in_h, transform.in_w) != (image_size, image_size):
        raise ValueError(
            f"render_correspondence: transform expects {transform.in_w}x{transform.in_h} images, rendering {image_size}"
        )
    proj = project_points(points, camera)
    zbuf = splat_zbuffer(proj.uv, proj.depth, proj.valid, image_size, image_size, splat_radius)
    patch_index, inside = transform.pixel_to_grid(proj.uv)
    visible = zbuf.won & inside
    inf = torch.tensor(float("inf"))
    near = float(torch.where(proj.valid, proj.depth, inf).min())
    far = float(torch.where(proj.valid, proj.depth, -inf).max())
    images = shade_depth(zbuf.point_id, proj.depth, near, far)
    slot = (torch.arange(T, device=points.device) // tubelet)[:, None].expand(T, N).contiguous()
    corr = Correspondence(
        slot=slot,
        patch=torch.where(visible, patch_index, torch.full_like(patch_index, -1)),
        visible=visible,
        grid_size=transform.grid_size,
    )
    return images, zbuf, corr
