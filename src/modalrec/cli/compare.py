"""`modalrec compare RUN...`: the group table of trained runs and a PNG (TEST bars by group, VALID curves)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `modalrec train`")
    parser.add_argument("--metric", default="ndcg@10", help="metric of the bars (default ndcg@10)")
    parser.add_argument("--png", help="figure path (default: compare.png next to the first run)")
    parser.add_argument("--md", help="also write the table as markdown to this file")
    parser.add_argument("--json", help="also write the table's numbers as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modalrec.compare import candidate_rules, figure, group_table, summaries, table_data
    from modalrec.io import write_json_atomic

    runs = summaries(args.runs)
    metrics = (args.metric,) if args.metric == "hr@10" else (args.metric, "hr@10")
    table = group_table(runs, metrics)
    print(table)
    png = Path(args.png) if args.png else Path(args.runs[0]).parent / "compare.png"
    figure(runs, png, args.metric)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.json:
        write_json_atomic(args.json, {"metrics": list(metrics), "candidates": candidate_rules(runs),
                                        "runs": table_data(runs, metrics)})
    written = [f"figure written to {png}"] + [f"{k} to {v}" for k, v in (("table", args.md), ("numbers", args.json)) if v]
    print("\n" + "; ".join(written))
    return 0
