"""Helpers shared by sub-commands: config loading with dotted overrides, logging, JSON output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from modalrec.config import apply_overrides, from_dict, load_file
from modalrec.config_keys import check_keys

if TYPE_CHECKING:
    from modalrec.experiment import ExperimentConfig


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML / TOML / JSON experiment config")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted overrides, e.g. model.name=gru4rec train.lr=0.001 data.source=movielens",
    )


def experiment_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> ExperimentConfig:
    """The config file plus overrides; key names are checked before the config classes (and torch) load."""
    data: dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        data = _merge(data, load_file(args.config))
    data = apply_overrides(data, getattr(args, "overrides", []) or [])
    check_keys(data)
    from modalrec.experiment import ExperimentConfig, seeded

    return seeded(from_dict(ExperimentConfig, data))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))
