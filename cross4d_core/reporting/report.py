"""The results report: the paper's tables (the evaluation protocols of arXiv 2607.00514) filled from
results JSONs, rendered as Markdown, with optional PNG figures.

* Table 1: linear-probe accuracy, dataset x {random, global, intra, dense} (+ teacher).
* Table 2: teachers, global -> dense probe accuracy per (dataset, teacher).
* Table 4: label efficiency, fine-tuning accuracy per label fraction, scratch vs pretrained.
* Table 5a: cross-domain transfer, pretrained on A (rows) -> linear probe on B (columns);
  ``probe`` runs fill the diagonal and the random-init row, ``transfer`` runs the rest.
* Table 6: frozen per-point probes, segmentation mIoU / mAcc / OA and temporal
  correspondence accuracy per frame gap (percent).
* Table 13: robustness, the clean-feature probe under test-time frame subsampling, point
  dropout and coordinate jitter.

Every cell is the mean of the runs that fall into it (``mean ± std (n=k)`` when several),
followed by the numbers of its source files, which the report lists; cells nobody ran
show "—".
"""
from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cross4d_core.fileio import write_text_atomic
from cross4d_core.reporting.runs import RunRecord, collect_runs, finite

MISSING = "—"
OBJECTIVE_COLUMNS = ("none", "global", "intra", "dense")
OBJECTIVE_LABELS = {"none": "random", "global": "global", "intra": "intra", "dense": "dense"}
PAPER_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
METRICS = ("video_accuracy", "clip_accuracy")


def objective_label(objective: str | None) -> str:
    """Display name of an objective (``none`` -> ``random``; unknown -> ``unknown``)."""
    return OBJECTIVE_LABELS.get(objective, objective) if objective else "unknown"


@dataclass
class Cell:
    """The values of one table cell, the indices of the source files they came from and,
    for probes, their train accuracies and how many did not converge."""

    values: list[float] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    unconverged: int = 0

    def add(self, value: float | None, source: int, train: float | None = None, converged: bool | None = None) -> None:
        if value is not None:
            self.values.append(value)
            self.sources.append(source)
            if train is not None:
                self.train.append(train)
            self.unconverged += converged is False

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    def render(self, digits: int = 3, scale: float = 1.0) -> str:
        """``mean ± std (n=k, train t) †u [sources]``: std when k > 1; ``train`` = the mean
        train accuracy of the probes; ``†u``: u of them did not converge."""
        if not self.values:
            return MISSING
        values = [v * scale for v in self.values]
        text = f"{statistics.fmean(values):.{digits}f}"
        if len(values) > 1:
            text += f" ± {statistics.stdev(values):.{digits}f}"
        text += f" (n={len(values)}" + (f", train {statistics.fmean(self.train) * scale:.{digits}f}"
                                         if self.train else "") + ")"
        if self.unconverged:
            text += f" †{self.unconverged}"
        return text + " " + "".join(f"[{i}]" for i in sorted(set(self.sources)))


@dataclass
class Table:
    """A titled Markdown table; ``cells[r][c]`` is a :class:`Cell` or plain text."""

    title: str
    columns: list[str]
    rows: list[list]
    note: str = ""
    digits: int = 3
    scale: float = 1.0

    def text(self, row: int, column: int) -> str:
        value = self.rows[row][column]
        return value.render(self.digits, self.scale) if isinstance(value, Cell) else str(value)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        if not self.rows:
            return "\n".join(lines + ["No results of this kind were found.", ""])
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        for r in range(len(self.rows)):
            lines.append("| " + " | ".join(self.text(r, c) for c in range(len(self.columns))) + " |")
        return "\n".join(lines + [""])


def _accuracy(results: dict, metric: str) -> float | None:
    return finite((results.get("test") or {}).get(metric))


def _add_probe(cell: Cell, results: dict, metric: str, source: int) -> None:
    """A probe's test accuracy with its train accuracy and convergence (when recorded)."""
    fit = results.get("probe") or {}
    cell.add(_accuracy(results, metric), source, finite((results.get("train") or {}).get(metric)),
             fit.get("converged") if isinstance(fit.get("converged"), bool) else None)


def _objective_columns(runs: Iterable[RunRecord]) -> list[str]:
    extra = sorted({r.objective or "unknown" for r in runs} - set(OBJECTIVE_COLUMNS))
    return list(OBJECTIVE_COLUMNS) + extra


def probe_table(runs: Sequence[RunRecord], index: dict[Path, int], metric: str = "video_accuracy") -> Table:
    """Table 1: one row per (dataset, teacher); teacher-free objectives repeat in every row
    of their dataset."""
    probes = [r for r in runs if r.protocol == "probe"]
    objectives = _objective_columns(probes)
    datasets = sorted({r.dataset or "unknown" for r in probes})
    rows = []
    for dataset in datasets:
        mine = [r for r in probes if (r.dataset or "unknown") == dataset]
        found = sorted({r.teacher or "unknown" for r in mine if r.objective not in ("none", "intra")})
        teachers: list[str | None] = list(found) or [None]
        for teacher in teachers:
            cells = {o: Cell() for o in objectives}
            for run in mine:
                objective = run.objective or "unknown"
                if objective in ("none", "intra") or (run.teacher or "unknown") == teacher:
                    _add_probe(cells[objective], run.results, metric, index[run.path])
            rows.append([dataset, teacher or MISSING] + [cells[o] for o in objectives])
    return Table("Table 1: linear-probe accuracy (frozen encoder)",
                 ["dataset", "teacher"] + [objective_label(o) for o in objectives], rows,
                 note=f"Test {metric.replace('_', ' ')} of a linear classifier on mean-pooled frozen features "
                      "(mean ± std over runs, n = runs (seeds), train = the probes' train accuracy; † counts probes "
                      "that did not converge); random = the same encoder without pretraining (objective `none`).")


def teacher_table(runs: Sequence[RunRecord], index: dict[Path, int], metric: str = "video_accuracy") -> Table:
    """Table 2: global -> dense probe accuracy per (dataset, teacher)."""
    probes = [r for r in runs if r.protocol == "probe" and r.objective in ("global", "dense")]
    keys = sorted({(r.dataset or "unknown", r.teacher or "unknown") for r in probes})
    rows = []
    for dataset, teacher in keys:
        cells = {"global": Cell(), "dense": Cell()}
        for run in probes:
            if (run.dataset or "unknown", run.teacher or "unknown") == (dataset, teacher):
                assert run.objective is not None  # probes of global / dense only
                _add_probe(cells[run.objective], run.results, metric, index[run.path])
        g, d = cells["global"].mean, cells["dense"].mean
        gain = MISSING if g is None or d is None else f"{d - g:+.3f}"
        rows.append([dataset, teacher, cells["global"], cells["dense"], gain])
    return Table("Table 2: teachers (global -> dense)", ["dataset", "teacher", "global", "dense", "dense − global"],
                 rows, note=f"Linear-probe test {metric.replace('_', ' ')} per teacher.")


def finetune_table(runs: Sequence[RunRecord], index: dict[Path, int], metric: str = "video_accuracy") -> Table:
    """Table 4: fine-tuning accuracy per label fraction; a row per (dataset, initialisation)."""
    entries = []
    for run in (r for r in runs if r.protocol == "finetune"):
        for entry in (run.results.get("runs") or {}).values():
            if not isinstance(entry, dict) or finite(entry.get("fraction")) is None:
                continue
            init = entry.get("init")
            label = "scratch" if init == "scratch" else \
                f"{objective_label(run.objective)}" + (f" ({run.teacher})" if run.teacher else "")
            entries.append((run.dataset or "unknown", label, float(entry["fraction"]),
                            _accuracy(entry, metric), index[run.path]))
    fractions = sorted(set(PAPER_FRACTIONS) | {e[2] for e in entries}) if entries else []
    rows = []
    for dataset, label in sorted({(e[0], e[1]) for e in entries}, key=lambda k: (k[0], k[1] != "scratch", k[1])):
        cells = {f: Cell() for f in fractions}
        for d, lab, fraction, value, source in entries:
            if (d, lab) == (dataset, label):
                cells[fraction].add(value, source)
        rows.append([dataset, label] + [cells[f] for f in fractions])
    return Table("Table 4: label efficiency (fine-tuning)",
                 ["dataset", "initialisation"] + [f"{f * 100:g}% labels" for f in fractions], rows,
                 note=f"Test {metric.replace('_', ' ')} after fine-tuning the whole encoder on a class-stratified "
                      "fraction of the training videos; scratch = random initialisation.")


def transfer_table(runs: Sequence[RunRecord], index: dict[Path, int], metric: str = "video_accuracy") -> Table:
    """Table 5a: rows = where the encoder came from, columns = the dataset it was probed on."""
    probes = [r for r in runs if r.protocol in ("probe", "transfer")]
    if not any(r.protocol == "transfer" for r in probes):
        probes = []

    def source_of(run: RunRecord) -> tuple[str, str, str]:
        if run.objective == "none":
            return ("random init", objective_label("none"), MISSING)
        return (run.pretrain_dataset or "unknown", objective_label(run.objective), run.teacher or MISSING)

    targets = sorted({r.dataset or "unknown" for r in probes})
    rows = []
    for key in sorted({source_of(r) for r in probes}):
        cells = {t: Cell() for t in targets}
        for run in probes:
            if source_of(run) == key:
                _add_probe(cells[run.dataset or "unknown"], run.results, metric, index[run.path])
        rows.append(list(key) + [cells[t] for t in targets])
    return Table("Table 5a: cross-domain transfer (pretrain on A, linear probe on B)",
                 ["pretrained on", "objective", "teacher"] + [f"probe on {t}" for t in targets], rows,
                 note=f"Linear-probe test {metric.replace('_', ' ')}; `transfer` runs fill the off-diagonal cells, "
                      "`probe` runs the in-domain cells and the random-init row. Shown when a transfer run exists.")


def segment_table(runs: Sequence[RunRecord], index: dict[Path, int]) -> Table:
    """Table 6: per-point frozen probes (percent)."""
    segs = [r for r in runs if r.protocol == "segment"]
    gaps = sorted({int(g) for r in segs for g in (r.results.get("correspondence") or {}) if str(g).isdigit()})
    columns = ["mIoU", "mAcc", "OA"] + [f"corr. acc gap {g}" for g in gaps]
    keys = sorted({(r.dataset or "unknown", objective_label(r.objective), r.teacher or MISSING) for r in segs})
    rows = []
    for key in keys:
        cells = {c: Cell() for c in columns}
        for run in segs:
            if (run.dataset or "unknown", objective_label(run.objective), run.teacher or MISSING) != key:
                continue
            i = index[run.path]
            for column, name in (("mIoU", "miou"), ("mAcc", "macc"), ("OA", "overall_accuracy")):
                cells[column].add(finite(run.results.get(name)), i)
            for g in gaps:
                entry = (run.results.get("correspondence") or {}).get(str(g)) or {}
                cells[f"corr. acc gap {g}"].add(finite(entry.get("accuracy")), i)
        rows.append(list(key) + [cells[c] for c in columns])
    return Table("Table 6: per-point probes on frozen features (segmentation, temporal correspondence)",
                 ["dataset", "objective", "teacher"] + columns, rows, digits=1, scale=100.0,
                 note="Percent. Part segmentation by a per-point linear head; correspondence = nearest-feature "
                      "matching across the frame gap, correct within the threshold recorded in the results.")


ROBUSTNESS_LABELS = {"frames": "frames {:.0%}", "points": "points {:.0%}", "jitter": "jitter {:g} m"}


def robustness_table(runs: Sequence[RunRecord], index: dict[Path, int], metric: str = "video_accuracy") -> Table:
    """Table 13: test accuracy of the clean-feature probe per perturbation."""
    robust = [r for r in runs if r.protocol == "robustness"]
    settings: list[tuple[str, float]] = []
    for run in robust:
        for entry in run.results.get("results") or []:
            kind, value = entry.get("kind"), finite(entry.get("value"))
            if kind in ROBUSTNESS_LABELS and value is not None and (kind, value) not in settings:
                settings.append((kind, value))
    order = list(ROBUSTNESS_LABELS)
    settings.sort(key=lambda k: (order.index(k[0]), -k[1] if k[0] != "jitter" else k[1]))
    keys = sorted({(r.dataset or "unknown", objective_label(r.objective), r.teacher or MISSING) for r in robust})
    rows = []
    for key in keys:
        cells = {s: Cell() for s in settings}
        for run in robust:
            if (run.dataset or "unknown", objective_label(run.objective), run.teacher or MISSING) != key:
                continue
            for entry in run.results.get("results") or []:
                setting = (entry.get("kind"), finite(entry.get("value")))
                if setting in cells:
                    cells[setting].add(finite(entry.get(metric)), index[run.path])
        rows.append(list(key) + [cells[s] for s in settings])
    return Table("Table 13: robustness (test-time perturbations)",
                 ["dataset", "objective", "teacher"] + [ROBUSTNESS_LABELS[k].format(v) for k, v in settings], rows,
                 note=f"Test {metric.replace('_', ' ')} of the converged probe fitted on clean features: frames = "
                      "fraction of each clip's frames kept (evenly spaced), points = fraction of each frame's points "
                      "kept, jitter = Gaussian noise sigma.")


def pretrain_table(runs: Sequence[RunRecord], index: dict[Path, int]) -> Table:
    """Pretraining runs: objective, teacher, data, steps, final loss, time."""
    rows = []
    for run in (r for r in runs if r.protocol == "pretrain"):
        res = run.results

        def num(key: str, fmt: str) -> str:
            value = finite(res.get(key))
            return MISSING if value is None else format(value, fmt)

        rows.append([f"[{index[run.path]}]", objective_label(run.objective), run.teacher or MISSING,
                     run.dataset or MISSING, num("parameters", ",.0f"), num("steps", ".0f"),
                     num("epochs_completed", ".0f"), num("final_loss", ".4f"), num("wall_time_s", ".1f"),
                     num("clips_per_second", ".2f"), str(res.get("device", MISSING))])
    return Table("Pretraining runs", ["source", "objective", "teacher", "data", "parameters", "steps", "epochs",
                                      "final loss", "wall time [s]", "clips/s", "device"], rows)


def loss_curves(runs: Sequence[RunRecord]) -> tuple[dict[str, tuple[list[int], list[float]]], str]:
    """``({label: (x, losses)}, x label)`` of the pretraining runs that trained: per-step
    losses when every run recorded them (``step_losses``), else per-epoch means
    (``epoch_losses``, x = epoch)."""
    trained = [r for r in runs if r.protocol == "pretrain" and (r.results.get("step_losses")
                                                                 or r.results.get("epoch_losses"))]
    key = "step_losses" if trained and all(r.results.get("step_losses") for r in trained) else "epoch_losses"
    curves = {}
    for run in trained:
        losses = [float(v) for v in run.results.get(key) or []]
        if not losses:
            continue
        label = objective_label(run.objective) + (f" ({run.teacher})" if run.teacher else "")
        label = label if label not in curves else f"{label} {run.path.parent.name}"
        curves[label] = (list(range(1, len(losses) + 1)), losses)
    return curves, "step" if key == "step_losses" else "epoch"


def probe_bar_data(table: Table) -> dict[str, dict[str, float | None]]:
    """Table 1 as ``{row label: {objective: mean accuracy}}`` for :func:`plot_probe_accuracy`."""
    data = {}
    for row in table.rows:
        label = row[0] if row[1] == MISSING else f"{row[0]}\n{row[1]}"
        data[label] = {table.columns[c]: row[c].mean for c in range(2, len(row)) if isinstance(row[c], Cell)}
    return data


def _sources_section(runs: Sequence[RunRecord], index: dict[Path, int], base: Path, metric: str) -> str:
    lines = ["## Sources", "", "| # | file | protocol | dataset | objective | teacher | pretrained on | value | "
             "metadata read from |", "|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: index[r.path]):
        res = run.results
        if run.protocol in ("probe", "transfer"):
            accuracy = _accuracy(res, metric)
            value = MISSING if accuracy is None else f"{metric} {accuracy:.4f}"
        elif run.protocol == "segment":
            value = MISSING if finite(res.get("miou")) is None else f"miou {res['miou']:.4f}"
        elif run.protocol == "robustness":
            value = f"{len(res.get('results') or [])} settings"
        elif run.protocol == "finetune":
            value = f"{len(res.get('runs') or {})} runs"
        else:
            value = MISSING if finite(res.get("final_loss")) is None else f"final loss {res['final_loss']:.4f}"
        try:
            shown = os.path.relpath(run.path, base)
        except ValueError:
            shown = str(run.path)
        provenance = ", ".join(f"{k}: {v}" for k, v in sorted(run.provenance.items())) or MISSING
        lines.append(f"| {index[run.path]} | `{shown}` | {run.protocol} | {run.dataset or MISSING} | "
                     f"{objective_label(run.objective)} | {run.teacher or MISSING} | "
                     f"{run.pretrain_dataset or MISSING} | {value} | {provenance} |")
    return "\n".join(lines + [""])


def build_tables(runs: Sequence[RunRecord], metric: str = "video_accuracy") -> tuple[list[Table], dict[Path, int]]:
    """All report tables and the source numbering (1-based, in path order)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    index = {run.path: i + 1 for i, run in enumerate(sorted(runs, key=lambda r: str(r.path)))}
    tables = [probe_table(runs, index, metric), teacher_table(runs, index, metric),
              finetune_table(runs, index, metric), transfer_table(runs, index, metric),
              segment_table(runs, index), robustness_table(runs, index, metric), pretrain_table(runs, index)]
    return tables, index


def render_markdown(runs: Sequence[RunRecord], title: str = "cross4d results", metric: str = "video_accuracy",
                    figures: Sequence[tuple[str, Path]] = (), notes: str = "", base: str | Path = ".") -> str:
    """The whole report; figure and source paths are written relative to ``base`` (the
    report's directory)."""
    base = Path(base).resolve()
    tables, index = build_tables(runs, metric)
    parts = [f"# {title}", ""]
    if notes:
        parts += [notes.strip(), ""]
    parts += ["Every number below is read from the results JSONs listed under *Sources*; the bracketed "
              "numbers after a value name its files. \"—\" marks an experiment that was not run.", "",
              "## Tables", ""]
    parts += [t.to_markdown() for t in tables]
    if figures:
        parts += ["## Figures", ""]
        for caption, path in figures:
            parts += [f"![{caption}]({os.path.relpath(Path(path).resolve(), base)})", "", f"*{caption}*", ""]
    parts.append(_sources_section(runs, index, base, metric))
    return "\n".join(parts)


def write_report(result_dirs: Sequence[str | Path], out: str | Path, title: str = "cross4d results",
                 metric: str = "video_accuracy", figures: bool = True,
                 extra_figures: Sequence[tuple[str, str | Path]] = (), notes: str = "") -> Path:
    """Collect the results under ``result_dirs`` and write the Markdown report to ``out``.

    With ``figures``, the probe-accuracy bar chart and the pretraining loss curves are
    written to ``<out dir>/figures/`` (when there is data for them). ``extra_figures``
    (caption, PNG path) are embedded after them; ``notes`` is Markdown put under the title.
    Returns the report path.
    """
    from cross4d_core.reporting.figures import plot_loss_curves, plot_probe_accuracy

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    out = Path(out)
    runs = collect_runs(result_dirs)
    shown: list[tuple[str, Path]] = []
    if figures:
        tables, _ = build_tables(runs, metric)
        bars = probe_bar_data(tables[0])
        if any(v is not None for row in bars.values() for v in row.values()):
            shown.append(("Linear-probe accuracy (Table 1)",
                          plot_probe_accuracy(bars, out.parent / "figures" / "probe_accuracy.png")))
        curves, xlabel = loss_curves(runs)
        if curves:
            shown.append(("Pretraining loss",
                          plot_loss_curves(curves, out.parent / "figures" / "loss_curves.png", xlabel=xlabel)))
    shown += [(caption, Path(path)) for caption, path in extra_figures]
    write_text_atomic(out, render_markdown(runs, title, metric, shown, notes, base=out.parent))
    return out
