"""``cross4d report``: tables filled from results JSONs.

The first tests render the report from JSONs written by really running the pipeline
(``cross4d precompute | pretrain | probe | transfer | finetune | segment``) on a tiny
synthetic world with a tiny random DINOv2; the others use JSON written in the schema of
``cross4d_core/cli/{train,evaluate}.py`` to control the values exactly.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.cli import main
from cross4d_core.reporting import MISSING, Cell, ReportError, collect_runs, write_report

# --------------------------------------------------------------------------- helpers


def parse_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """``{heading: rows as {column: cell text}}`` of the Markdown table under each heading ([] if none)."""
    tables, heading, header = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("#").strip(), None
            tables[heading] = []
        elif line.startswith("|") and heading is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= {"-"}:
                tables[heading].append(dict(zip(header, cells)))
    return tables


def table(tables: dict, prefix: str) -> list[dict[str, str]]:
    [name] = [k for k in tables if k == prefix or k.startswith(prefix + ":")]
    return tables[name]


def row(rows: list[dict[str, str]], **match) -> dict[str, str]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def cell(value: float, *sources: int, digits: int = 3, n: bool = True) -> str:
    return f"{value:.{digits}f} " + ("(n=1) " if n else "") + "".join(f"[{i}]" for i in sorted(sources))


def probe_cell(results: dict, source: int) -> str:
    """A single probe's cell: test video accuracy (n=1, train accuracy), † when unconverged."""
    text = f"{results['test']['video_accuracy']:.3f} (n=1, train {results['train']['video_accuracy']:.3f})"
    return text + ("" if results["probe"]["converged"] else " †1") + f" [{source}]"


def source_numbers(tables: dict, report_dir: Path) -> dict[Path, int]:
    return {(report_dir / r["file"].strip("`")).resolve(): int(r["#"]) for r in tables["Sources"]}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Runs every results-producing command once on tiny data (a few seconds on CPU)."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from cross4d_core.data.synthetic import SyntheticConfig, generate_synthetic_dataset

    tmp = tmp_path_factory.mktemp("pipeline")
    camera = SyntheticConfig(width=64, height=48, focal=60.0)
    for name, seed in (("world_a", 0), ("world_b", 5)):
        generate_synthetic_dataset(tmp / name, num_subjects=2, videos_per_class_per_subject=2, frames=6, classes=2,
                                   seed=seed, config=camera, max_points=200)
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=42)).save_pretrained(tmp / "toy-dinov2")
    assert main(["precompute", "--dataset", str(tmp / "world_a"), "--teacher", "dinov2", "--model",
                 str(tmp / "toy-dinov2"), "--source", "render", "--out", str(tmp / "cache"), "--frames", "4",
                 "--num-points", "64", "--d-p", "8", "--image-size", "42"]) == 0
    runs = tmp / "runs"
    probe = ["--config", "probe.yaml", "--set", "probe.paper.epochs=20", "--set", "device=cpu"]
    for objective in ("none", "global", "dense"):
        assert main(["pretrain", "--config", "pretrain_tiny.yaml",
                     "--set", f"objective.name={objective}", "--set", f"data.path={tmp / 'cache'}",
                     "--set", f"out_dir={runs / objective}", "--set", "max_steps=3", "--set", "tensorboard=false"]) == 0
        assert main(["probe", "--checkpoint", str(runs / objective), "--dataset", str(tmp / "world_a"), *probe]) == 0
    dense = str(runs / "dense")
    assert main(["transfer", "--checkpoint", dense, "--dataset", str(tmp / "world_b"), *probe]) == 0
    assert main(["finetune", "--checkpoint", dense, "--dataset", str(tmp / "world_a"),
                 "--config", "finetune.yaml", "--set", "fractions=[0.5,1.0]",
                 "--set", "epochs=1", "--set", "max_steps=2", "--set", "batch_size=4", "--set", "progress=false",
                 "--set", "device=cpu"]) == 0
    assert main(["segment", "--checkpoint", dense, "--dataset", str(tmp / "world_a"),
                 "--config", "segment.yaml", "--set", "segment.probe.paper.epochs=3",
                 "--set", "device=cpu"]) == 0
    assert main(["robustness", "--checkpoint", dense, "--dataset", str(tmp / "world_a"), "--set", "device=cpu",
                 "--set", "robustness.frame_fractions=[1.0, 0.5]", "--set", "robustness.point_fractions=[1.0, 0.5]",
                 "--set", "robustness.jitter_sigmas=[0.0, 0.05]"]) == 0
    out = tmp / "report" / "report.md"
    assert main(["report", "--results", str(runs), "--out", str(out), "--title", "Tiny run"]) == 0
    return runs, out


def test_report_from_real_runs_puts_each_number_in_its_cell(pipeline):
    runs, out = pipeline
    text = out.read_text()
    assert text.startswith("# Tiny run")
    tables = parse_tables(text)
    src = source_numbers(tables, out.parent)
    assert len(src) == 10  # 3 pretrain + 3 probe + transfer + finetune + segment + robustness
    probe = {o: load(runs / o / "probe_results.json") for o in ("none", "global", "dense")}
    acc = {o: r["test"]["video_accuracy"] for o, r in probe.items()}
    n = {o: src[(runs / o / "probe_results.json").resolve()] for o in probe}

    # datasets share the manifest source "synthetic", so they are told apart by directory
    t1 = row(table(tables, "Table 1"), dataset="synthetic:world_a")
    assert t1["teacher"] == "toy-dinov2"  # not in probe_results.json: read from the target cache manifest
    expected = tuple(probe_cell(probe[o], n[o]) for o in ("none", "global", "dense"))
    assert (t1["random"], t1["global"], t1["dense"]) == expected
    assert t1["intra"] == MISSING

    t2 = row(table(tables, "Table 2"), teacher="toy-dinov2")
    expected = (probe_cell(probe["global"], n["global"]), probe_cell(probe["dense"], n["dense"]))
    assert (t2["global"], t2["dense"]) == expected
    assert t2["dense − global"] == f"{acc['dense'] - acc['global']:+.3f}"

    ft_path = runs / "dense" / "finetune" / "finetune_results.json"
    ft = load(ft_path)["runs"]
    t4 = table(tables, "Table 4")
    scratch, dense = row(t4, initialisation="scratch"), row(t4, initialisation="dense (toy-dinov2)")
    for fraction, key in ((0.5, "50% labels"), (1.0, "100% labels")):
        assert scratch[key] == cell(ft[f"scratch_{fraction:g}"]["test"]["video_accuracy"], src[ft_path.resolve()])
        assert dense[key] == cell(ft[f"pretrained_{fraction:g}"]["test"]["video_accuracy"], src[ft_path.resolve()])
    assert scratch["10% labels"] == scratch["25% labels"] == dense["10% labels"] == MISSING

    tr_path = runs / "dense" / "transfer_world_b" / "transfer_results.json"
    t5 = table(tables, "Table 5a")
    dense_row = row(t5, **{"pretrained on": "synthetic:world_a", "objective": "dense"})
    assert dense_row["probe on synthetic:world_b"] == probe_cell(load(tr_path), src[tr_path.resolve()])
    assert dense_row["probe on synthetic:world_a"] == probe_cell(probe["dense"], n["dense"])
    random_row = row(t5, **{"pretrained on": "random init"})
    assert random_row["probe on synthetic:world_a"] == probe_cell(probe["none"], n["none"])
    assert random_row["probe on synthetic:world_b"] == MISSING

    rob_path = runs / "dense" / "robustness_results.json"
    rob = {(r["kind"], r["value"]): r["video_accuracy"] for r in load(rob_path)["results"]}
    t13 = row(table(tables, "Table 13"), objective="dense")
    assert t13["frames 50%"] == cell(rob[("frames", 0.5)], src[rob_path.resolve()])
    assert t13["points 100%"] == cell(rob[("points", 1.0)], src[rob_path.resolve()])
    assert t13["jitter 0.05 m"] == cell(rob[("jitter", 0.05)], src[rob_path.resolve()])
    assert list(t13)[3:] == ["frames 100%", "frames 50%", "points 100%", "points 50%", "jitter 0 m", "jitter 0.05 m"]

    seg_path = runs / "dense" / "segment_results.json"
    seg = load(seg_path)
    t5b = row(table(tables, "Table 6"), objective="dense")
    assert t5b["mIoU"] == cell(100 * seg["miou"], src[seg_path.resolve()], digits=1)
    assert t5b["OA"] == cell(100 * seg["overall_accuracy"], src[seg_path.resolve()], digits=1)

    pre = {r["objective"]: r for r in tables["Pretraining runs"]}
    dense_pre = load(runs / "dense" / "pretrain_results.json")
    assert pre["dense"]["final loss"] == f"{dense_pre['final_loss']:.4f}" and pre["dense"]["steps"] == "3"
    assert pre["random"]["steps"] == MISSING and pre["random"]["teacher"] == MISSING


def test_report_figures_are_written_and_linked(pipeline):
    import matplotlib.image as mpimg

    _, out = pipeline
    text = out.read_text()
    for name in ("probe_accuracy.png", "loss_curves.png"):
        assert f"](figures/{name})" in text
        image = mpimg.imread(out.parent / "figures" / name)
        assert image.ndim == 3 and image.shape[0] > 100
        assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10  # not a blank canvas


# --------------------------------------------------------------------------- schema JSON


def write_run(root: Path, *, objective: str | None, probe: dict[str, float] | None = None, dataset: str = "msr",
              teacher: str | None = None, cache_teacher: str | None = None, protocol: str = "probe") -> Path:
    """A checkpoint directory as ``cross4d pretrain`` + ``cross4d probe`` leave it (schema of the CLIs)."""
    root.mkdir(parents=True)
    data_root = root.parent / "datasets" / dataset
    if not (data_root / "manifest.json").exists():
        data_root.mkdir(parents=True)
        (data_root / "manifest.json").write_text(json.dumps({"format": "cross4d-dataset", "source": dataset,
                                                             "label_names": ["a", "b"]}))
    pretrain_data = str(data_root)
    if cache_teacher is not None:
        cache = root / "cache"
        cache.mkdir()
        (cache / "manifest.json").write_text(json.dumps({"format": "cross4d-target-cache",
                                                         "teacher": {"name": cache_teacher, "patch_size": 14},
                                                         "dataset": {"root": str(data_root)}}))
        pretrain_data = str(cache)
    meta = {"model_config": {"model_type": "point4d"}, "model_id": f"point4d-{objective}", "label_names": []}
    if objective is not None:
        meta["objective"] = objective
    if objective != "none":
        meta["pretrain_data"] = pretrain_data
    (root / "config.json").write_text(json.dumps(meta))
    results = {"protocol": protocol, "checkpoint": "/elsewhere/gpu-box/run", "dataset": str(data_root),
               "test": {"clip_accuracy": probe["clip"], "video_accuracy": probe["video"], "clips": 10, "videos": 5}}
    if teacher is not None:
        results["teacher"] = teacher
    path = root / f"{protocol}_results.json"
    path.write_text(json.dumps(results))
    return path


def test_runs_are_grouped_by_dataset_objective_and_teacher(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "rand", objective="none", probe={"video": 0.42, "clip": 0.40})
    write_run(runs / "dense_s0", objective="dense", probe={"video": 0.80, "clip": 0.70}, cache_teacher="dinov2-large")
    write_run(runs / "dense_s1", objective="dense", probe={"video": 0.82, "clip": 0.72}, cache_teacher="dinov2-large")
    write_run(runs / "glob", objective="global", probe={"video": 0.64, "clip": 0.60}, cache_teacher="dinov2-large")
    write_run(runs / "vjepa", objective="dense", probe={"video": 0.88, "clip": 0.85}, teacher="vjepa2-large")
    write_run(runs / "intra", objective="intra", probe={"video": 0.55, "clip": 0.50})
    write_run(runs / "ntu_dense", objective="dense", probe={"video": 0.40, "clip": 0.38}, dataset="ntu60",
              cache_teacher="/models/dinov2-large")
    out = write_report([runs], tmp_path / "r" / "clip.md", metric="clip_accuracy", figures=False)
    tables = parse_tables(out.read_text())
    src = source_numbers(tables, out.parent)
    n = {p.parent.name: i for p, i in src.items()}
    t1 = table(tables, "Table 1")
    assert [(r["dataset"], r["teacher"]) for r in t1] == [("msr", "dinov2-large"), ("msr", "vjepa2-large"),
                                                          ("ntu60", "dinov2-large")]
    dino = row(t1, dataset="msr", teacher="dinov2-large")
    mean, std = statistics.fmean([0.70, 0.72]), statistics.stdev([0.70, 0.72])
    assert dino["dense"] == f"{mean:.3f} ± {std:.3f} (n=2) [{n['dense_s0']}][{n['dense_s1']}]"
    assert dino["global"] == cell(0.60, n["glob"])
    vjepa = row(t1, teacher="vjepa2-large")
    assert vjepa["dense"] == cell(0.85, n["vjepa"]) and vjepa["global"] == MISSING
    for r in (dino, vjepa):  # teacher-free baselines appear in every row of their dataset
        assert r["random"] == cell(0.40, n["rand"]) and r["intra"] == cell(0.50, n["intra"])
    ntu = row(t1, dataset="ntu60")
    assert (ntu["random"], ntu["global"], ntu["intra"], ntu["dense"]) == (MISSING, MISSING, MISSING,
                                                                        cell(0.38, n["ntu_dense"]))
    t2 = table(tables, "Table 2")
    assert row(t2, dataset="msr", teacher="dinov2-large")["dense − global"] == f"{mean - 0.60:+.3f}"
    assert row(t2, teacher="vjepa2-large")["dense − global"] == MISSING
    provenance = {r["#"]: r["metadata read from"] for r in tables["Sources"]}
    assert "teacher: results" in provenance[str(n["vjepa"])]
    assert "teacher: target cache manifest.json" in provenance[str(n["dense_s0"])]
    for name in ("Table 4", "Table 5a", "Table 6", "Pretraining runs"):
        assert table(tables, name) == []


def test_unknown_metadata_is_reported_not_guessed(tmp_path):
    """A probe copied from another machine: the pretraining cache is gone, no teacher recorded."""
    path = write_run(tmp_path / "runs" / "ckpt", objective="dense", probe={"video": 0.5, "clip": 0.5})
    meta = load(path.parent / "config.json")
    meta["pretrain_data"] = "/gone/cache_msr"
    (path.parent / "config.json").write_text(json.dumps(meta))
    [run] = collect_runs([tmp_path / "runs"])
    assert (run.objective, run.teacher, run.pretrain_dataset) == ("dense", None, "cache_msr")
    assert run.provenance["pretrain_dataset"] == "path name (unresolved path)"
    t1 = parse_tables((write_report([tmp_path / "runs"], tmp_path / "r.md", figures=False)).read_text())
    assert row(table(t1, "Table 1"), dataset="msr")["teacher"] == "unknown"


def test_manifests_are_told_apart_by_their_format_field_not_their_keys(tmp_path):
    """A manifest.json with a ``teacher`` key but no target-cache format is not read as a cache."""
    path = write_run(tmp_path / "runs" / "ckpt", objective="dense", probe={"video": 0.5, "clip": 0.5},
                     cache_teacher="dinov2-large")
    [run] = collect_runs([tmp_path / "runs"])
    assert run.teacher == "dinov2-large" and run.pretrain_dataset == "msr"
    cache_manifest = path.parent / "cache" / "manifest.json"
    manifest = load(cache_manifest)
    del manifest["format"]
    cache_manifest.write_text(json.dumps(manifest))
    [run] = collect_runs([tmp_path / "runs"])
    assert run.teacher is None and "no cross4d manifest.json" in run.provenance["pretrain_dataset"]


def test_finetune_and_segment_schema(tmp_path):
    ckpt = tmp_path / "runs" / "dense"
    write_run(ckpt, objective="dense", probe={"video": 0.81, "clip": 0.8}, cache_teacher="dinov2-large")
    runs = {f"{init}_{f:g}": {"fraction": f, "init": init, "train_clips": 4, "train_videos": 2, "steps": 3,
                              "final_loss": 1.0, "test": {"video_accuracy": v, "clip_accuracy": v, "clips": 4,
                                                          "videos": 2}}
            for init, values in (("pretrained", (0.46, 0.73, 0.88, 0.92)), ("scratch", (0.29, 0.63, 0.76, 0.82)))
            for f, v in zip((0.1, 0.25, 0.5, 1.0), values)}
    (ckpt / "finetune").mkdir()
    msr = str(tmp_path / "runs" / "datasets" / "msr")
    (ckpt / "finetune" / "finetune_results.json").write_text(json.dumps(
        {"runs": runs, "protocol": "finetune", "checkpoint": str(ckpt), "dataset": msr}))
    (ckpt / "segment_results.json").write_text(json.dumps(
        {"miou": 0.236, "macc": 0.4, "overall_accuracy": 0.7, "num_parts": 5, "protocol": "segment",
         "correspondence": {"8": {"accuracy": 0.5, "correct": 5, "total": 10},
                            "15": {"accuracy": None, "correct": 0, "total": 0}},
         "dataset": msr}))
    tables = parse_tables(write_report([tmp_path / "runs"], tmp_path / "r.md", figures=False).read_text())
    src = source_numbers(tables, tmp_path)
    ft = src[(ckpt / "finetune" / "finetune_results.json").resolve()]
    t4 = table(tables, "Table 4")
    assert [r["initialisation"] for r in t4] == ["scratch", "dense (dinov2-large)"]
    assert [t4[0][f"{p}% labels"] for p in (10, 25, 50, 100)] == [cell(v, ft) for v in (0.29, 0.63, 0.76, 0.82)]
    assert [t4[1][f"{p}% labels"] for p in (10, 25, 50, 100)] == [cell(v, ft) for v in (0.46, 0.73, 0.88, 0.92)]
    seg = row(table(tables, "Table 6"), dataset="msr")
    s = src[(ckpt / "segment_results.json").resolve()]
    expected = (f"23.6 (n=1) [{s}]", f"50.0 (n=1) [{s}]", MISSING)
    assert (seg["mIoU"], seg["corr. acc gap 8"], seg["corr. acc gap 15"]) == expected


def test_bad_input_raises_one_clear_error(tmp_path, capsys):
    with pytest.raises(ReportError, match="does not exist"):
        collect_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no results files"):
        collect_runs([tmp_path / "empty"])
    bad = tmp_path / "bad" / "probe_results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ReportError, match=str(bad)):
        collect_runs([tmp_path / "bad"])
    assert main(["report", "--results", str(tmp_path / "bad"), "--out", str(tmp_path / "r.md")]) == 1
    assert "probe_results.json" in capsys.readouterr().err and not (tmp_path / "r.md").exists()
    with pytest.raises(ValueError, match="metric"):
        write_report([tmp_path / "bad"], tmp_path / "r.md", metric="f1")


@given(st.lists(st.floats(0, 1), max_size=6), st.integers(1, 4))
def test_cell_renders_mean_std_and_sources(values, digits):
    c = Cell()
    for i, v in enumerate(values):
        c.add(v, i + 1)
    c.add(None, 99)  # a missing value is not a value and names no source
    text = c.render(digits)
    if not values:
        assert text == MISSING
        return
    head = f"{statistics.fmean(values):.{digits}f}"
    refs = "".join(f"[{i + 1}]" for i in range(len(values)))
    if len(values) == 1:
        assert text == f"{head} (n=1) {refs}"
    else:
        assert text == f"{head} ± {statistics.stdev(values):.{digits}f} (n={len(values)}) {refs}"


def test_cell_shows_train_accuracy_and_unconverged_probes():
    c = Cell()
    c.add(0.5, 1, train=1.0, converged=True)
    c.add(0.7, 2, train=0.9, converged=False)
    assert c.render(2) == f"0.60 ± {statistics.stdev([0.5, 0.7]):.2f} (n=2, train 0.95) †1 [1][2]"
