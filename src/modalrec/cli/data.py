"""`modalrec data inspect`: what the experiment's data looks like, in seconds and before any encoding."""

from __future__ import annotations

import argparse

from modalrec.cli.common import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="counts, time span, events per user / item, cold shares of VALID and "
                             "TEST, items without text or image", description=__doc__)
    add_config_args(inspect)
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.add_argument("--out", help="also write the summary JSON to this file")


def run(args: argparse.Namespace) -> int:
    import time

    from modalrec.cli.common import experiment_config, print_json
    from modalrec.data.inspect import format_inspection, inspect_dataset
    from modalrec.io import write_json_atomic
    from modalrec.pipeline import load_data, make_split
    from modalrec.validation import check_experiment

    started = time.perf_counter()
    cfg = experiment_config(args)
    check_experiment(cfg)  # the same checks `modalrec train` makes, so a clean inspect means train can start
    ds = load_data(cfg.data)
    info = inspect_dataset(ds, make_split(ds, cfg.split, cfg.seed))
    info["seconds"] = round(time.perf_counter() - started, 2)
    if args.json:
        print_json(info)
    else:
        print(format_inspection(info))
        print(f"took     {info['seconds']:.1f} s (nothing encoded)")
    if args.out:
        write_json_atomic(args.out, info)
    return 0
