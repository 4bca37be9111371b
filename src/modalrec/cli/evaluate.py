"""`modalrec evaluate`: re-evaluate a run directory written by `modalrec train`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="directory written by `modalrec train`")
    parser.add_argument("--part", choices=["valid", "test"], default="test")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the report JSON here")


def run(args: argparse.Namespace) -> int:
    from modalrec.pipeline import evaluate_run

    report = evaluate_run(args.run_dir, part=args.part, device=args.device)
    print(report.to_markdown())
    if args.out:
        report.to_json(args.out)
    return 0
