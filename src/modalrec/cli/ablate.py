"""`modalrec ablate`: run a grid of experiments (tower x fusion x model x loss ...) and write one table.

    modalrec ablate --config base.yaml --grid grid.yaml [--out DIR] [KEY=VALUE ...]

grid.yaml maps dotted config keys to lists of values, e.g.

    model.params.tower.kind: [id, text, image, text+image]
    model.params.tower.fusion: [mlp, film, gated]

A rerun with the same --out skips the finished grid points.
"""

from __future__ import annotations

import argparse

from modalrec.cli.common import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--grid", required=True, help="YAML / TOML / JSON file: dotted key -> list of values")
    parser.add_argument("--out", help="output directory (default: <output_dir>/<name>-ablation)")
    parser.add_argument("--metrics", default="ndcg@10,hr@10", help="table columns (comma-separated)")
    parser.add_argument("--groups", default="overall,warm,cold_item", help="table groups (comma-separated)")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failing grid point")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modalrec.ablation import load_grid, run_ablation
    from modalrec.cli.common import experiment_config, print_json
    from modalrec.config import load_file

    base = experiment_config(args)
    grid = load_grid(load_file(args.grid))
    out = Path(args.out) if args.out else Path(base.output_dir) / f"{base.name}-ablation"
    result = run_ablation(base, grid, out, metrics=_csv(args.metrics), groups=_csv(args.groups),
                          stop_on_error=args.stop_on_error)
    print(result.table)
    print(f"best on VALID ({_csv(args.metrics)[0]} overall): {result.winner}")
    for s in result.skipped:
        print(f"run once: {s['requested']} -> {s['runs_as']} ({s['reason']})")
    print(f"\nresults written to {out / 'results.md'}, {out / 'results.json'}")
    print_json({"status": result.status})
    return 1 if result.failed else 0


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
