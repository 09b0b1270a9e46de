"""Render and camera correspondence for a 24 x 2048 clip, against a per-frame numpy version.

Render: 126 x 126 depth-shaded renders + visibility + patch index, splat radius 1 (3 x 3 px),
9 x 9 patches of 14 px (both versions fit the virtual camera with the same torch code). Its
floor is the time to copy, at this run's memcpy bandwidth, the bytes a render must write
once: the padded int64 z-buffer, the int64 winner map and the RGB images.
Camera: 640 x 480 plumb_bob camera, DINOv2 camera preprocessing (resize 224, crop 224),
occlusion splat radius 2, tolerance 5 cm.
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import memcpy_bandwidth, torch_threads
from cross4d_core.correspondence import camera_correspondence, fit_virtual_camera, render_correspondence
from cross4d_core.geometry import ImageTransform, PinholeCamera

T, N = 24, 2048


def _clip(seed: int = 0) -> np.ndarray:
    """A person-sized blob 3 m in front of the sensor, moving a little per frame."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(N, 3)) * [0.25, 0.8, 0.15] + [0.0, 0.0, 3.0]
    drift = np.linspace(0, 0.3, T)[:, None, None] * [1.0, 0.0, 0.0]
    return (base[None] + drift + rng.normal(scale=0.01, size=(T, N, 3))).astype(np.float32)


def _numpy_zbuffer(col, row, depth, valid, H, W, radius):
    """Per-frame painter's z-buffer: draw every splat pixel far to near (ties: higher index
    first); numpy fancy assignment keeps the last write, i.e. the nearest point."""
    index = np.full((H, W), -1)
    order = np.lexsort((-np.arange(len(depth)), -depth))
    order = order[valid[order]]
    offsets = np.arange(-radius, radius + 1)
    dr, dc = (o.reshape(-1) for o in np.meshgrid(offsets, offsets, indexing="ij"))
    r, c = row[order][:, None] + dr, col[order][:, None] + dc
    ok = (r >= 0) & (r < H) & (c >= 0) & (c < W)
    index[r[ok], c[ok]] = np.broadcast_to(order[:, None], r.shape)[ok]
    return index


def numpy_render(points: np.ndarray, cam: PinholeCamera, size: int = 126, patch: int = 14, radius: int = 1):
    R, t = cam.T_cam_from_points[:3, :3], cam.T_cam_from_points[:3, 3]
    visible = np.zeros(points.shape[:2], bool)
    patches = np.full(points.shape[:2], -1)
    images = np.zeros((points.shape[0], size, size, 3), np.uint8)
    depth = points @ R.T[None] + t
    near, far = depth[..., 2].min(), depth[..., 2].max()
    for f in range(points.shape[0]):
        p = points[f] @ R.T + t
        u = cam.fx * p[:, 0] / p[:, 2] + cam.cx
        v = cam.fy * p[:, 1] / p[:, 2] + cam.cy
        col, row = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
        valid = (p[:, 2] > 0) & (col >= 0) & (col < size) & (row >= 0) & (row < size)
        index = _numpy_zbuffer(col, row, p[:, 2], valid, size, size, radius)
        visible[f, index[index >= 0]] = True
        patches[f] = np.where(visible[f], row // patch * (size // patch) + col // patch, -1)
        grey = np.append(np.round(255 - 200 * (p[:, 2] - near) / (far - near)).astype(np.uint8), 0)
        images[f] = grey[index][..., None]
    return images, visible, patches


def numpy_camera(points, cam: PinholeCamera, transform: ImageTransform, tol: float = 0.05, radius: int = 2):
    R, t = cam.T_cam_from_points[:3, :3], cam.T_cam_from_points[:3, 3]
    k1, k2, p1, p2, k3 = cam.D
    visible = np.zeros(points.shape[:2], bool)
    patches = np.full(points.shape[:2], -1)
    H, W = cam.height, cam.width
    gh, gw = transform.grid_size
    for f in range(points.shape[0]):
        p = points[f] @ R.T + t
        x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        u, v = cam.fx * xd + cam.cx, cam.fy * yd + cam.cy
        col, row = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
        valid = (p[:, 2] > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        zbuf = np.full((H, W), np.inf)
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                r, c = row + dr, col + dc
                ok = valid & (r >= 0) & (r < H) & (c >= 0) & (c < W)
                np.minimum.at(zbuf, (r[ok], c[ok]), p[ok, 2])
        near = zbuf[np.clip(row, 0, H - 1), np.clip(col, 0, W - 1)]
        gx = np.floor(((u + 0.5) * transform.resize_w / W - transform.left) / transform.patch)
        gy = np.floor(((v + 0.5) * transform.resize_h / H - transform.top) / transform.patch)
        inside = (gx >= 0) & (gx < gw) & (gy >= 0) & (gy < gh)
        visible[f] = valid & inside & (p[:, 2] <= near + tol)
        patches[f] = np.where(visible[f], gy * gw + gx, -1)
    return visible, patches


def run(report) -> None:
    with torch_threads(1):
        _run(report)


def _run(report) -> None:
    points = _clip()
    tensor = torch.from_numpy(points)
    items = T * N
    report.value("threads", torch.get_num_threads(), "torch threads")

    # same result as the reference before timing anything
    images, corr = render_correspondence(tensor)
    ref_images, ref_visible, ref_patch = numpy_render(points, fit_virtual_camera(tensor))
    report.value("render/agreement_visible", float((corr.visible.numpy() == ref_visible).mean()), "fraction")
    report.value("render/agreement_patch", float((corr.patch.numpy() == ref_patch).mean()), "fraction")
    report.value("render/agreement_image_pixels", float((images.numpy() == ref_images).mean()), "fraction")
    report.value("render/coverage", corr.coverage, "fraction visible")
    torch_row = report.time("render/torch_24x2048_126px", lambda: render_correspondence(tensor), repeats=15,
                            items=items, item_unit="points")
    numpy_row = report.time("render/numpy_per_frame_24x2048_126px",
                            lambda: numpy_render(points, fit_virtual_camera(tensor)), repeats=5, items=items,
                            item_unit="points")
    report.value("render/speedup_vs_numpy", numpy_row["median_ms"] / torch_row["median_ms"], "x")
    bandwidth = memcpy_bandwidth(report)
    size, radius = 126, 1
    output_bytes = T * ((size + 2 * radius) ** 2 * 8 + size * size * (8 + 3))
    floor_ms = output_bytes / bandwidth * 1e3
    report.value("render/floor_at_memcpy_bandwidth", floor_ms, "ms",
                 note=f"{output_bytes / 2**20:.1f} MiB written once: z-buffer, winner map, images")
    report.value("render/floor / render", 100.0 * floor_ms / torch_row["median_ms"], "%")

    cam = PinholeCamera(K=[[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]], width=640, height=480,
                        distortion_model="plumb_bob", D=[0.05, -0.1, 1e-3, -1e-3, 0.02])
    cams = [cam] * T
    transform = ImageTransform.create(480, 640, 14, resize_shortest_edge=224, crop=224)
    corr = camera_correspondence(tensor, None, cams, transform)
    ref_visible, _ = numpy_camera(points.astype(np.float64), cam, transform)
    report.value("camera/agreement_visible", float((corr.visible.numpy() == ref_visible).mean()), "fraction")
    report.value("camera/coverage", corr.coverage, "fraction visible")
    torch_row = report.time("camera/torch_24x2048_640x480",
                            lambda: camera_correspondence(tensor, None, cams, transform), repeats=15, items=items,
                            item_unit="points")
    numpy_row = report.time("camera/numpy_per_frame_24x2048_640x480", lambda: numpy_camera(points, cam, transform),
                            repeats=5, items=items, item_unit="points")
    report.value("camera/speedup_vs_numpy", numpy_row["median_ms"] / torch_row["median_ms"], "x")
