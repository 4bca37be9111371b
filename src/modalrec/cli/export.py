"""`modalrec export`: turn a training run directory into a self-contained serving artifact."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory written by `modalrec train`")
    parser.add_argument("--out", required=True, help="artifact directory to create")
    parser.add_argument("--text-encoder", help="text encoder spec for new items (default: the run's features.text)")
    parser.add_argument("--image-encoder", help="image encoder spec for new items (default: the run's features.image)")
    parser.add_argument("--index", default="exact", choices=["exact", "hnsw", "ivf"],
                        help="index the server builds (exact top-K, or FAISS HNSW / IVF for large catalogues)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")


def run(args: argparse.Namespace) -> int:
    from modalrec.serving.artifact import export_artifact, load_artifact

    encoders = None
    if args.text_encoder or args.image_encoder:
        encoders = {m: s for m, s in (("text", args.text_encoder), ("image", args.image_encoder)) if s}
    out = export_artifact(args.run, args.out, encoders=encoders, index={"kind": args.index}, overwrite=args.overwrite)
    art = load_artifact(out)
    print(f"artifact written to {out}: model {art.model_name}, {art.vocab.size} items, {art.user_vocab.size} users, "
          f"features {art.store.modalities if art.store is not None else 'none'}, index {args.index}")
    return 0
