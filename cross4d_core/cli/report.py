"""``cross4d report``: render the Markdown results report from the results JSONs that
``cross4d pretrain | probe | transfer | finetune | segment`` wrote (searched recursively
under each directory), in the layout of the paper's Tables 1, 2, 4 and 5, plus a
probe-accuracy bar chart and loss curves in ``<report dir>/figures/``.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="Markdown report (paper tables + figures) from results JSONs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", required=True, metavar="DIR",
                   help="directories searched recursively for *_results.json (or the files themselves)")
    p.add_argument("--out", required=True, help="report path, e.g. reports/results.md")
    p.add_argument("--title", default="cross4d results", help="report title (default: %(default)s)")
    p.add_argument("--metric", choices=["video_accuracy", "clip_accuracy"], default="video_accuracy",
                   help="accuracy shown in the classification tables (default: %(default)s)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="write only the Markdown")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from cross4d_core.reporting.report import write_report
    out = write_report(args.results, args.out, title=args.title, metric=args.metric, figures=args.figures)
    print(f"report written to {out}")
    return 0
