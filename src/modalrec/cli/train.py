"""`modalrec train`: run one experiment from a config file plus dotted overrides."""

from __future__ import annotations

import argparse

from modalrec.cli.common import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--no-write", action="store_true", help="do not write a run directory")


def run(args: argparse.Namespace) -> int:
    from modalrec.cli.common import experiment_config, print_json
    from modalrec.pipeline import run_experiment

    cfg = experiment_config(args)
    result = run_experiment(cfg, write=not args.no_write)
    print(result.test.to_markdown())
    if result.run_dir is not None:
        print(f"\nrun written to {result.run_dir}")
    print_json({"test": result.test.overall, "wall_time_s": round(result.manifest["wall_time_s"], 2)})
    return 0
