"""PNG figures of the demo / results report (matplotlib, Agg backend, atomic writes).

Every ``plot_*`` function writes one PNG to ``out`` (temp file + ``os.replace``) and
returns its path. Arrays are validated up front; a wrong shape raises ``ValueError``
naming the argument and the shape.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cross4d_core.colours import patch_colours, pca_colours
from cross4d_core.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path, dpi: float = 100) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    plt = _pyplot()
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return out


def _array(name: str, value, ndim: int, last: int | None = None, dtype=None) -> np.ndarray:
    arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    if arr.ndim != ndim or (last is not None and arr.shape[-1] != last):
        want = f"{ndim}-d" + (f" with last dimension {last}" if last is not None else "")
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    return arr


def plot_probe_accuracy(table: Mapping[str, Mapping[str, float | None]], out: str | Path,
                        title: str = "Linear-probe accuracy") -> Path:
    """Grouped bar chart: one group per row of ``table`` (e.g. dataset), one bar per column
    (e.g. ``random`` / ``global`` / ``dense``); ``None`` (not run) leaves a gap; a column that
    is ``None`` in every row is left out. Values are accuracies in ``[0, 1]``, printed above
    the bars."""
    plt = _pyplot()
    rows = list(table)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in table[row] if c not in columns and table[row][c] is not None]
    if not rows or not columns:
        raise ValueError("plot_probe_accuracy: the table is empty")
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) * max(1, len(columns)) / 3 + 2), 3.6))
    width = 0.8 / len(columns)
    x = np.arange(len(rows))
    for j, column in enumerate(columns):
        values = np.array([np.nan if (v := table[r].get(column)) is None else float(v) for r in rows])
        present = ~np.isnan(values)
        bars = ax.bar(x[present] + (j - (len(columns) - 1) / 2) * width, values[present], width,
                      label=column, color=plt.get_cmap("tab10")(j % 10))
        for bar, value in zip(bars, values[present]):
            ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, rows)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(len(columns), 4), loc="upper left")
    fig.tight_layout()
    return _save(fig, out)


def plot_loss_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], out: str | Path,
                     title: str = "Pretraining loss", xlabel: str = "step") -> Path:
    """One line per ``name: (steps, losses)`` (equal lengths; empty curves are skipped)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = 0
    for name, (steps, losses) in curves.items():
        xs, ys = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
        if xs.shape != ys.shape or xs.ndim != 1:
            raise ValueError(f"plot_loss_curves: {name!r} has steps {xs.shape} and losses {ys.shape}; "
                             f"they must be equal-length 1-d sequences")
        if xs.size:
            ax.plot(xs, ys, marker="o" if xs.size < 30 else None, markersize=3, label=name)
            drawn += 1
    if not drawn:
        raise ValueError("plot_loss_curves: no curve has any point")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def plot_correspondence_overlay(image: np.ndarray, uv: np.ndarray, patch: np.ndarray, visible: np.ndarray,
                                grid_size: tuple[int, int], patch_size: int, out: str | Path,
                                scale: int = 4, marker_px: int = 3) -> Path:
    """Points drawn on the teacher image in the colour of their patch, with the patch grid.

    Args:
        image: ``[H, W, 3]`` uint8 RGB, the image the teacher cut into patches (no resize or
            crop between ``uv`` and the grid: patch ``(r, c)`` covers pixels
            ``[r * patch_size, (r + 1) * patch_size)`` x ``[c * patch_size, (c + 1) * patch_size)``).
        uv: ``[N, 2]`` pixel coordinates (x right, y down; pixel ``i`` covers ``[i - 0.5, i + 0.5)``).
        patch: ``[N]`` flat patch index ``r * grid_w + c`` (-1 where invisible).
        visible: ``[N]`` bool; only visible points are drawn.
        grid_size: ``(grid_h, grid_w)``; patch_size: pixels per patch side.
        scale: output pixels per image pixel; marker_px: point square side in image pixels.

    The PNG is exactly ``[H * scale, W * scale]``; a visible point's pixel carries
    :func:`patch_colours` of its patch (last drawn wins where points overlap).
    """
    plt = _pyplot()
    image = _array("image", image, 3, 3)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    uv = _array("uv", uv, 2, 2, np.float64)
    patch = _array("patch", patch, 1, dtype=np.int64)
    visible = _array("visible", visible, 1, dtype=bool)
    if not (len(uv) == len(patch) == len(visible)):
        raise ValueError(f"uv, patch, visible must have the same length, got {len(uv)}, {len(patch)}, {len(visible)}")
    grid_h, grid_w = (int(g) for g in grid_size)
    if (visible & ((patch < 0) | (patch >= grid_h * grid_w))).any():
        raise ValueError(f"patch indices of visible points must be in [0, {grid_h * grid_w}) for grid {grid_size}")
    H, W = image.shape[:2]
    fig = plt.figure(figsize=(W * scale / 100, H * scale / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, interpolation="nearest")
    edges_x = np.arange(grid_w + 1) * patch_size - 0.5
    edges_y = np.arange(grid_h + 1) * patch_size - 0.5
    ax.vlines(edges_x, edges_y[0], edges_y[-1], colors="white", linewidth=0.6, alpha=0.7, antialiased=False)
    ax.hlines(edges_y, edges_x[0], edges_x[-1], colors="white", linewidth=0.6, alpha=0.7, antialiased=False)
    shown = np.flatnonzero(visible)
    colours = patch_colours(patch[shown], (grid_h, grid_w)) / 255.0
    side_pt = marker_px * scale * 72 / 100
    ax.scatter(uv[shown, 0], uv[shown, 1], s=side_pt ** 2, c=colours, marker="s", linewidths=0,
               antialiased=False)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    return _save(fig, out, dpi=100)


def plot_embedding_pca(points: np.ndarray, embedding: np.ndarray, out: str | Path,
                       title: str = "Embedding PCA colours") -> Path:
    """``[N, 3]`` points scattered in 3D, coloured by the first three principal components of
    their ``[N, D]`` embedding (:func:`pca_colours`)."""
    plt = _pyplot()
    points = _array("points", points, 2, 3, np.float64)
    embedding = _array("embedding", embedding, 2)
    if len(points) != len(embedding) or not len(points):
        raise ValueError(f"points ({len(points)}) and embedding ({len(embedding)}) must be non-empty, equal length")
    colours = pca_colours(embedding) / 255.0
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(points[:, 0], points[:, 1], points[:, 2], c=colours, s=4, depthshade=False)
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.set_title(title)
    return _save(fig, out)


def plot_latency_histogram(latencies_ms: Sequence[float], out: str | Path,
                           title: str = "End-to-end latency") -> Path:
    """Histogram of latencies (milliseconds) with the median and 95th percentile marked."""
    plt = _pyplot()
    values = _array("latencies_ms", latencies_ms, 1, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        raise ValueError("plot_latency_histogram: no finite latency")
    median, p95 = np.percentile(values, [50, 95])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(values, bins=min(50, max(5, values.size // 4)), color="tab:blue", alpha=0.8)
    ax.axvline(median, color="tab:orange", label=f"median {median:.1f} ms")
    ax.axvline(p95, color="tab:red", linestyle="--", label=f"p95 {p95:.1f} ms")
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel("windows")
    ax.set_title(f"{title} (n={values.size})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)
