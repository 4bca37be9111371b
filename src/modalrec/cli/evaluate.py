"""`modalrec evaluate`: re-evaluate a run directory written by `modalrec train`."""

from __future__ import annotations

import argparse

from modalrec.protocol import REPEAT_TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="directory written by `modalrec train`")
    parser.add_argument("--part", choices=["valid", "test"], default="test")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the report JSON here")
    parser.add_argument("--repeat-targets", choices=REPEAT_TARGETS, default=None,
                        help="targets already in the history: rankable, or a miss as the IISAN papers and RecBole "
                             "count them (default: the run's eval.repeat_targets)")


def run(args: argparse.Namespace) -> int:
    from modalrec.pipeline import evaluate_run

    report = evaluate_run(args.run_dir, part=args.part, device=args.device, repeat_targets=args.repeat_targets)
    print(report.to_markdown())
    if args.out:
        report.to_json(args.out)
    return 0
