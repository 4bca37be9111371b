"""`modalrec prepare`: load, filter and split a dataset and print what the experiment would see."""

from __future__ import annotations

import argparse

from modalrec.cli.common import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--out", help="also write the summary JSON to this file")


def run(args: argparse.Namespace) -> int:
    from modalrec.cli.common import experiment_config, print_json
    from modalrec.io import write_json_atomic
    from modalrec.pipeline import load_data, make_split

    cfg = experiment_config(args)
    ds = load_data(cfg.data)
    split = make_split(ds, cfg.split, cfg.seed)
    summary = {"dataset": ds.describe(), "split": split.describe()}
    print_json(summary)
    if args.out:
        write_json_atomic(args.out, summary)
    return 0
