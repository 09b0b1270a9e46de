"""The demo's figures that are not derived from result JSONs: the render-mode correspondence
of a cached clip, the dense encoder's embedding PCA colours, and the ROS latency histogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def correspondence_overlay(cache: Path, out: Path, frame: int | None = None) -> Path:
    """Re-render the first stored video of the target cache with the virtual cameras the
    precompute fitted (the cache's ``views``, fitted to the video's stored frames), check that
    the correspondence matches the cached cells, and draw a frame's points, coloured by patch,
    on the depth-shaded image the teacher saw from the first camera."""
    from cross4d_core.correspondence import RenderViews, render_clip
    from cross4d_core.geometry.projection import project_points
    from cross4d_core.reporting.figures import plot_correspondence_overlay
    from cross4d_core.targets import TargetCache

    targets = TargetCache(cache)
    record = targets.video_record(0)
    manifest = targets.manifest
    image_size, patch_size = int(manifest["image_size"]), int(manifest["teacher"]["patch_size"])
    tubelet = int(manifest["teacher"]["tubelet"])
    views = RenderViews(**{k: tuple(v) if isinstance(v, list) else v for k, v in (manifest.get("views") or {}).items()})
    render = render_clip(record.points, image_size, patch_size, tubelet=tubelet, views=views)
    corr = render.correspondence
    cells = corr.slot * (corr.grid_size[0] * corr.grid_size[1]) + corr.patch
    cached = torch.where(record.target >= 0, record.cell[record.target.clamp_min(0)], -1)
    if not torch.equal(torch.where(corr.visible, cells, -1), cached):
        raise RuntimeError(f"{cache}: re-rendered correspondence differs from the cached one")
    F = record.points.shape[0]
    t = F // 2 if frame is None else frame
    first_view = corr.visible[t] & (corr.slot[t] < -(-F // tubelet))
    uv = project_points(record.points[t], render.cameras[0]).uv
    return plot_correspondence_overlay(render.images[t].numpy(), uv.numpy(), corr.patch[t].numpy(),
                                       first_view.numpy(), corr.grid_size, patch_size, out)


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
    return plot_embedding_pca(xyz[:, [0, 2, 1]], features, out,
                              title="Dense encoder: per-point embedding PCA\n(axes: x right, y depth, z up)")


def demo_figures(dataset: Path, cache: Path, dense_checkpoint: Path, ros: dict,
                 out_dir: Path) -> list[tuple[str, Path]]:
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
