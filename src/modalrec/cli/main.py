"""Entry point of the `modalrec` command. Each sub-command lives in its own module with `add_parser`/`run`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from modalrec.errors import ModalrecError

# name -> (module, one-line help). Command modules import only argparse at top level and load
# heavy or optional dependencies inside `run`, so `modalrec --help` stays fast.
COMMANDS = {
    "demo": ("modalrec.cli.demo", "train and compare models on the built-in multimodal dataset"),
    "data": ("modalrec.cli.data", "inspect a dataset from a config: counts, time span, cold shares, missing content"),
    "prepare": ("modalrec.cli.prepare", "load, filter and split a dataset; print its summary"),
    "encode": ("modalrec.cli.encode", "encode item text/images into a FeatureStore (resumable)"),
    "train": ("modalrec.cli.train", "train a model; select on VALID, evaluate TEST once; write a run directory"),
    "evaluate": ("modalrec.cli.evaluate", "evaluate a trained run directory on VALID or TEST"),
    "ablate": ("modalrec.cli.ablate", "run a grid of experiments (tower x fusion x model x loss) into one table"),
    "compare": ("modalrec.cli.compare", "table and figure of trained runs by group (warm / cold item / cold user)"),
    "export": ("modalrec.cli.export", "turn a training run into a self-contained serving artifact"),
    "recommend": ("modalrec.cli.recommend", "top-k items from a serving artifact for a history or a user"),
    "serve": ("modalrec.cli.serve", "HTTP service over a serving artifact (FastAPI + uvicorn)"),
    "artifact": ("modalrec.cli.artifact", "check a serving artifact: every hash, the live catalogue, that it loads"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modalrec", description="Multimodal sequential recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    from modalrec.cli.common import setup_logging

    setup_logging(args.verbose)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ModalrecError as exc:
        print(f"modalrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modalrec {args.command}: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
