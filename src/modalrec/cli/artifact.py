"""`modalrec artifact check DIR`: verify an artifact's hashes and its live catalogue, and that it loads."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="verify every file hash, artifact.json's own hash and the catalogue; "
                                         "then load it as a server would")
    check.add_argument("directory", help="artifact directory (made by `modalrec export`)")
    check.add_argument("--catalogue", help="catalogue database (default DIR/catalogue.sqlite; or a postgresql:// URL)")
    check.add_argument("--repair", action="store_true",
                       help="delete leftovers of an interrupted export next to DIR (never the artifact itself)")


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from modalrec.serving.artifact import load_artifact, verify_files
    from modalrec.serving.catalogue import DEFAULT_FILE, Layout, is_postgres_url, open_catalogue
    from modalrec.serving.recommender import Recommender

    d = Path(args.directory)
    leftovers = sorted(d.parent.glob(f".{d.name}.tmp-*"))
    for p in leftovers:
        if args.repair:
            shutil.rmtree(p)
            print(f"removed {p} (left by an interrupted export)")
        else:
            print(f"warning: {p} was left by an interrupted export; delete it (or rerun with --repair)")
    art = load_artifact(d)  # refuses format 1 (re-export) and any changed file
    n_files = verify_files(d, art.meta)
    print(f"artifact {d}: format {art.meta['format_version']}, hash {art.hash[:16]}, {n_files} files verified, "
          f"model {art.model_name}, {art.vocab.size} exported items")
    location = args.catalogue or str(d / DEFAULT_FILE)
    if is_postgres_url(location) or Path(location).is_file():
        feats = art.store.tensors()[0] if art.store is not None else {}
        layout = Layout(tuple((m, int(f.shape[1])) for m, f in feats.items()))
        store = open_catalogue(location, art.vocab, art.hash, layout)  # writable: SQLite finishes or undoes a crashed commit
        report = store.check()
        store.close()
        print(f"catalogue {'(PostgreSQL)' if is_postgres_url(location) else location}: "
              f"{report['items_added']} items added, {report['items_removed']} removals, consistent")
    else:
        print("catalogue: none yet (nothing added or removed since export)")
    rec = Recommender.load(d, persist=False, catalogue=args.catalogue)
    print(f"loads: {rec.n_items} items served, {int(rec.catalogue.removed.sum())} removed")
    return 0
