"""Run every ``benchmarks/bench_*.py`` and write ``reports/bench.json`` + ``reports/bench.md``.

Usage: ``python -m benchmarks.run [--only NAME ...] [--out reports]``
"""
from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import pkgutil
import sys
import time
import traceback

import benchmarks
from benchmarks.common import Report, machine_info
from cross4d_core.fileio import write_text_atomic


def markdown_report(result: dict, title: str = "cross4d benchmarks") -> str:
    """``result`` (``machine``, ``rows``, ``failed``) as a Markdown table, one row per figure."""
    lines = [f"# {title}", "", "Machine: " + ", ".join(f"{k}={v}" for k, v in result["machine"].items()), ""]
    lines += ["| bench | name | median | min | max | rate / value | note |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if "median_ms" in row:
            rate = f"{row['rate']:.4g} {row['rate_unit']}" if "rate" in row else ""
            lines.append(f"| {row['bench']} | {row['name']} | {row['median_ms']:.3f} ms | {row['min_ms']:.3f} ms "
                         f"| {row['max_ms']:.3f} ms | {rate} | {row['note']} |")
        else:
            lines.append(f"| {row['bench']} | {row['name']} | | | | {row['value']:.4g} {row['unit']} | {row['note']} |")
    for name, error in result["failed"].items():
        lines.append(f"| {name} | FAILED | | | | | {error} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark module names (e.g. msgconv)")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": [], "failed": {}}
    names = sorted(i.name[len("bench_"):] for i in pkgutil.iter_modules(benchmarks.__path__)
                   if i.name.startswith("bench_"))
    for name in names:
        if args.only and name not in args.only:
            continue
        print(f"[bench] {name}", flush=True)
        report = Report(bench=name)
        try:
            importlib.import_module(f"benchmarks.bench_{name}").run(report)
        except Exception as exc:  # one failing benchmark must not hide the others' figures
            traceback.print_exc()
            result["failed"][name] = f"{type(exc).__name__}: {exc}"
        result["rows"].extend(report.rows)
    write_text_atomic(out / "bench.json", json.dumps(result, indent=2))
    write_text_atomic(out / "bench.md", markdown_report(result))
    print(f"[bench] wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
