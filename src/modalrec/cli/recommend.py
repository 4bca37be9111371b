"""`modalrec recommend`: top-k items from a serving artifact for a history of item ids or a known user."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", required=True, help="artifact directory (made by `modalrec export`)")
    parser.add_argument("--history", default="", help="comma-separated raw item ids, oldest first")
    parser.add_argument("--user", help="a user id known to the artifact (uses their stored history)")
    parser.add_argument("--similar", metavar="ITEM", help="instead: items most similar to ITEM")
    parser.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    parser.add_argument("--include-seen", action="store_true", help="allow items of the history in the results")
    parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                        help="keep items whose field equals VALUE (repeatable; a field given twice means OR)")
    parser.add_argument("--index", choices=["exact", "hnsw", "ivf"], help="override the artifact's index kind")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from modalrec.cli.common import print_json
    from modalrec.errors import ConfigError
    from modalrec.serving.recommender import Recommender

    filters: dict[str, list[str]] = {}
    for item in args.filter:
        if "=" not in item:
            raise ConfigError(f"--filter {item!r} must look like FIELD=VALUE")
        key, value = item.split("=", 1)
        filters.setdefault(key.strip(), []).append(value)
    history = [h.strip() for h in args.history.split(",") if h.strip()]
    rec = Recommender.load(args.artifact, device=args.device, index={"kind": args.index} if args.index else None,
                           persist=False)
    if args.similar:
        results = rec.similar_items(args.similar, args.k)
    else:
        results = rec.recommend(history=history, user_id=args.user, k=args.k,
                                exclude_seen=not args.include_seen, filters=filters or None)
    if args.json:
        print_json([r.to_dict() for r in results])
        return 0
    width = max([len(r.item_id) for r in results] + [4])
    for rank, r in enumerate(results, 1):
        print(f"{rank:>3}. {r.item_id:<{width}}  {r.score:9.4f}  {r.title}")
    return 0
