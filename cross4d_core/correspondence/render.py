"""The "render" correspondence source (the paper's default).

Virtual pinhole cameras (one per clip by default; the paper's Table 15 compares 1, 2 and 4)
look at the clip centroid from far enough back that every finite point of every frame is
inside the image; each frame is splatted into a z-buffer that gives a depth-shaded RGB
image for the teacher and the nearest point per pixel. A point is visible when it wins at
least one pixel of a camera; its target is the patch its own projection falls in, in the
first camera (in :class:`RenderViews` order) that sees it.

The view direction matters for coverage: from the depth sensor's own view (the default,
azimuth 0) a single-view cloud hides almost nothing, so nearly every point is visible; a
camera moved round the subject (``azimuth_deg``) sees the cloud from the side, and the
points of the far surface are occluded, as in the paper's ~49% coverage on MSR-Action3D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cross4d_core.correspondence.inputs import as_points
from cross4d_core.correspondence.zbuffer import ZBuffer, splat_zbuffer
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
    T[:3, 3] = -T[:3, :3] @ centre.double().cpu().numpy() + np.array([0.0, 0.0, distance])
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


@dataclass(frozen=True)
class RenderViews:
    """The virtual cameras of the render source.

    Camera ``k`` of ``num_cameras`` looks along the sensor's view ``view_dir`` turned by
    ``azimuth_deg + 360 k / num_cameras`` degrees about the ``down`` axis (the data's
    vertical; +y for optical frames, y down) and tilted by ``elevation_deg`` to look down
    on the subject from above; a positive azimuth turns the view toward ``down x view_dir``
    (the sensor's +x, to the right, for optical frames). ``azimuth_deg = 0, elevation_deg = 0,
    num_cameras = 1`` is the sensor's own view.
    """

    num_cameras: int = 1
    azimuth_deg: float = 0.0
    elevation_deg: float = 0.0
    fov_deg: float = 60.0
    view_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    down: tuple[float, float, float] = (0.0, 1.0, 0.0)

    def __post_init__(self) -> None:
        if self.num_cameras < 1:
            raise ValueError(f"RenderViews.num_cameras must be >= 1, got {self.num_cameras}")
        if not -90.0 < self.elevation_deg < 90.0:
            raise ValueError(f"RenderViews.elevation_deg must be in (-90, 90), got {self.elevation_deg}")
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"RenderViews.fov_deg must be in (0, 180), got {self.fov_deg}")

    def directions(self) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
        """``(view_dir, down)`` of every camera, unit vectors in the points' frame."""
        down = np.asarray(self.down, float)
        down = down / np.linalg.norm(down)
        forward = np.asarray(self.view_dir, float)
        forward = forward - (forward @ down) * down
        if np.linalg.norm(forward) < 1e-9:
            raise ValueError(f"RenderViews: view_dir {self.view_dir} is parallel to down {self.down}")
        forward = forward / np.linalg.norm(forward)
        side = np.cross(down, forward)
        dx, dy, dz = down.tolist()
        out = []
        for k in range(self.num_cameras):
            azimuth = math.radians(self.azimuth_deg + 360.0 * k / self.num_cameras)
            horizontal = math.cos(azimuth) * forward + math.sin(azimuth) * side
            elevation = math.radians(self.elevation_deg)
            view = math.cos(elevation) * horizontal + math.sin(elevation) * down
            vx, vy, vz = view.tolist()
            out.append(((vx, vy, vz), (dx, dy, dz)))
        return out


@dataclass
class RenderOutput:
    """What :func:`render_clip` draws, camera-major (``V`` cameras x ``T`` frames).

    Attributes:
        images: ``[V * T, S, S, 3]`` uint8 depth-shaded renders (row ``v * T + t``).
        point_id: ``[V * T, S, S]`` int64 index ``t * N + n`` of the nearest point per pixel
            into the clip's flattened points, ``T * N`` where no point was drawn.
        correspondence: slot ``v * ceil(T / tubelet) + t // tubelet`` of the first camera that
            sees each point, and its patch there.
        cameras: the ``V`` virtual cameras.
    """

    images: torch.Tensor
    point_id: torch.Tensor
    correspondence: Correspondence
    cameras: list[PinholeCamera]

    def label_images(self, labels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[V * T, S, S]`` int64 label of the nearest point per pixel (-1 = background) for
        per-point ``labels [T, N]`` (e.g. body parts)."""
        flat = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        table = torch.cat([flat, flat.new_full((1,), -1)])
        return table[self.point_id]


def render_clip(
    points: np.ndarray | torch.Tensor,
    image_size: int = 126,
    patch: int = 14,
    splat_radius: int = 1,
    transform: ImageTransform | None = None,
    tubelet: int = 1,
    views: RenderViews | None = None,
    cameras: list[PinholeCamera] | None = None,
) -> RenderOutput:
    """Render a clip from its virtual cameras and put its points in correspondence.

    Args:
        points: ``[T, N, 3]`` metres; non-finite points are invisible.
        image_size: rendered square image side (pixels); patch: teacher patch size.
        splat_radius: each point draws a ``(2r + 1)^2`` pixel square.
        transform: the teacher's image transform for ``image_size`` images (default: none,
            the image is cut into ``patch`` cells as is). Visible points outside its crop
            are invisible in that camera.
        tubelet: frames per teacher time slot.
        views: the virtual cameras (default: one, the sensor's own view).
        cameras: explicit cameras instead of ``views`` (each ``image_size`` square).
    """
    points = as_points(points)
    T, N, _ = points.shape
    views = views or RenderViews()
    if cameras is None:
        cameras = [fit_virtual_camera(points, image_size, views.fov_deg, view_dir=v, down=d)
                   for v, d in views.directions()]
    for camera in cameras:
        if (camera.width, camera.height) != (image_size, image_size):
            raise ValueError(f"render_correspondence: camera is {camera.width}x{camera.height}, "
                             f"image_size {image_size}")
    if transform is None:
        transform = ImageTransform.create(image_size, image_size, patch)
    elif (transform.in_h, transform.in_w) != (image_size, image_size):
        raise ValueError(
            f"render_correspondence: transform expects {transform.in_w}x{transform.in_h} images, rendering {image_size}"
        )
    slots = math.ceil(T / tubelet)
    frame_slot = (torch.arange(T, device=points.device) // tubelet)[:, None].expand(T, N)
    slot = frame_slot.clone()
    patch_index = torch.full((T, N), -1, dtype=torch.int64, device=points.device)
    visible = torch.zeros(T, N, dtype=torch.bool, device=points.device)
    images, point_ids = [], []
    for v, camera in enumerate(cameras):
        proj = project_points(points, camera)
        zbuf = splat_zbuffer(proj.uv, proj.depth, proj.valid, image_size, image_size, splat_radius)
        view_patch, inside = transform.pixel_to_grid(proj.uv)
        first_sight = zbuf.won & inside & ~visible
        slot = torch.where(first_sight, frame_slot + v * slots, slot)
        patch_index = torch.where(first_sight, view_patch, patch_index)
        visible |= first_sight
        images.append(_shade(zbuf, proj))
        point_ids.append(zbuf.point_id)
    corr = Correspondence(slot=slot.contiguous(), patch=patch_index, visible=visible, grid_size=transform.grid_size)
    one = len(cameras) == 1  # no copy of the only camera's images
    return RenderOutput(images[0] if one else torch.cat(images), point_ids[0] if one else torch.cat(point_ids),
                        corr, list(cameras))


def _shade(zbuf: ZBuffer, proj) -> torch.Tensor:
    inf = torch.tensor(float("inf"))
    near = float(torch.where(proj.valid, proj.depth, inf).min())
    far = float(torch.where(proj.valid, proj.depth, -inf).max())
    return shade_depth(zbuf.point_id, proj.depth, near, far)


def render_correspondence(
    points: np.ndarray | torch.Tensor,
    image_size: int = 126,
    patch: int = 14,
    splat_radius: int = 1,
    camera: PinholeCamera | None = None,
    transform: ImageTransform | None = None,
    tubelet: int = 1,
    fov_deg: float = 60.0,
    views: RenderViews | None = None,
) -> tuple[torch.Tensor, Correspondence]:
    """:func:`render_clip`'s images ``[V * T, S, S, 3]`` uint8 and correspondence; ``camera``
    renders from one given camera, ``fov_deg`` sets the field of view of the default view."""
    if views is None:
        views = RenderViews(fov_deg=fov_deg)
    out = render_clip(points, image_size, patch, splat_radius, transform, tubelet, views,
                      None if camera is None else [camera])
    return out.images, out.correspondence


def render_index_map(points: np.ndarray | torch.Tensor, image_size: int = 126, splat_radius: int = 1,
                     camera: PinholeCamera | None = None, fov_deg: float = 60.0) -> torch.Tensor:
    """``[T, H, W]`` int64 index of the nearest point per pixel (-1 = background), one camera."""
    points = as_points(points)
    T, N, _ = points.shape
    out = render_clip(points, image_size, 14, splat_radius, None, 1, RenderViews(fov_deg=fov_deg),
                      None if camera is None else [camera])
    frame_start = torch.arange(0, T * N, N, device=out.point_id.device)[:, None, None]
    return (out.point_id - frame_start).masked_fill_(out.point_id == T * N, -1)
