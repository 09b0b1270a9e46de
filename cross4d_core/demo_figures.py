"""The demo's figures that are not derived from result JSONs: the render-mode correspondence
of a cached clip, the dense encoder's embedding PCA colours, and the ROS latency histogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def correspondence_overlay(cache: Path, out: Path, frame: int | None = None) -> Path:
    """Re-render clip 0 of the target cache with the same virtual camera the precompute fitted
    and draw its points, coloured by patch, on the depth-shaded image the teacher saw."""
    from cross4d_core.correspondence.render import fit_virtual_camera, render_correspondence
    from cross4d_core.geometry.projection import project_points
    from cross4d_core.reporting.figures import plot_correspondence_overlay
    from cross4d_core.targets import TargetCache

    targets = TargetCache(cache)
    item = targets[0]
    points = item["points"]
    image_size = int(targets.manifest["image_size"])
    patch_size = int(targets.manifest["teacher"]["patch_size"])
    camera = fit_virtual_camera(points, image_size)
    images, corr = render_correspondence(points, image_size=image_size, patch=patch_size, camera=camera)
    if not torch.equal(corr.patch, item["patch"]):
        raise RuntimeError(f"{cache}: re-rendered correspondence differs from the cached one")
    t = points.shape[0] // 2 if frame is None else frame
    uv = project_points(points[t], camera).uv
    return plot_correspondence_overlay(images[t].numpy(), uv.numpy(), corr.patch[t].numpy(), corr.visible[t].numpy(),
                                       corr.grid_size, patch_size, out)


@torch.inference_mode()
def embedding_pca(dataset: Path, checkpoint: Path, out: Path) -> Path:
    """Per-point features of the newest frame of a test clip, PCA -> RGB, as a 3D scatter
    (y flipped so that up is up: the synthetic world is in the camera's optical frame)."""
    from cross4d_core.data.clips import ClipDataset
    from cross4d_core.reporting.figures import plot_embedding_pca
    from cross4d_core.training.checkpoint import load_encoder

    encoder, _ = load_encoder(checkpoint, "cpu")
    config = encoder.config
    clips = ClipDataset(dataset, split="test", frames=config.num_frames, num_points=config.num_points)
    points = clips[0]["points"][None]
    output = encoder(points)
    features = encoder.point_features(output, points)[0, -1].numpy()
    xyz = points[0, -1].numpy() * np.array([1.0, -1.0, 1.0], dtype=np.float32)
    return plot_embedding_pca(xyz[:, [0, 2, 1]], features, out, title="Dense encoder: per-point embedding PCA\n(axes: x right, y depth, z up)")


def demo_figures(dataset: Path, cache: Path, dense_checkpoint: Path, ros: dict, out_dir: Path) -> list[tuple[str, Path]]:
    """``[(caption, png)]`` for the demo report."""
    from cross4d_core.reporting.figures import plot_latency_histogram

    figures = [
        ("Render-mode correspondence: points coloured by the teacher patch they supervise, on the "
         "depth-shaded image the teacher saw (9x9 patches of 14 px; invisible points not drawn)",
         correspondence_overlay(cache, out_dir / "correspondence_overlay.png")),
        ("Dense-distilled per-point embeddings (newest frame of a test clip), first three principal "
         "components as RGB", embedding_pca(dataset, dense_checkpoint, out_dir / "embedding_pca.png")),
    ]
    if ros.get("latencies_ms"):
        figures.append(("perception_node end-to-end latency on the replayed bag (cloud published -> "
                        "ActionRecognition received)",
                        plot_latency_histogram(ros["latencies_ms"], out_dir / "latency_histogram.png")))
    return figures
