"""`modalrec compare RUN...`: the group table of trained runs and a PNG (TEST bars by group, VALID curves)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `modalrec train`")
    parser.add_argument("--metric", default="ndcg@10", help="metric of the bars (default ndcg@10)")
    parser.add_argument("--png", help="figure path (default: compare.png next to the first run)")
    parser.add_argument("--md", help="also write the table as markdown to this file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modalrec.compare import figure, group_table, summaries

    runs = summaries(args.runs)
    metrics = (args.metric,) if args.metric == "hr@10" else (args.metric, "hr@10")
    table = group_table(runs, metrics)
    print(table)
    png = Path(args.png) if args.png else Path(args.runs[0]).parent / "compare.png"
    figure(runs, png, args.metric)
    if args.md:
        Path(args.md).write_text(table + "\n")
    print(f"\nfigure written to {png}" + (f"; table to {args.md}" if args.md else ""))
    return 0
