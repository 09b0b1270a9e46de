"""Results report (the paper's tables from results JSONs) and PNG figures."""
from cross4d_core.colours import patch_colours, pca_colours
from cross4d_core.reporting.figures import (
    plot_correspondence_overlay,
    plot_embedding_pca,
    plot_latency_histogram,
    plot_loss_curves,
    plot_probe_accuracy,
)
from cross4d_core.reporting.report import MISSING, Cell, Table, build_tables, render_markdown, write_report
from cross4d_core.reporting.runs import ReportError, RunRecord, collect_runs, find_result_files, load_run

__all__ = [
    "MISSING", "Cell", "ReportError", "RunRecord", "Table", "build_tables", "collect_runs", "find_result_files",
    "load_run", "patch_colours", "pca_colours", "plot_correspondence_overlay", "plot_embedding_pca",
    "plot_latency_histogram", "plot_loss_curves", "plot_probe_accuracy", "render_markdown", "write_report",
]
