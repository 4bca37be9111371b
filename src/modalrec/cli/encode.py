"""`modalrec encode`: encode a dataset's item text and images into a FeatureStore or hidden-state cache.

Resumable: finished chunks survive a crash or Ctrl-C and a rerun continues. Under
`torchrun --nproc_per_node N` each rank encodes a disjoint shard and rank 0 finalises the store.
"""

from __future__ import annotations

import argparse

from modalrec.cli.common import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--out", required=True, help="output directory of the store")
    parser.add_argument("--text", help="text encoder spec, e.g. minilm, hashing, hf:NAME?pooling=last")
    parser.add_argument("--image", help="image encoder spec, e.g. efficientnet-lite0, clip:NAME, stats")
    parser.add_argument("--lexical", help="a second text encoding for exact-word similarity (content_knn modalities "
                                          "text+lexical), e.g. hashing:2048; pooled features only")
    parser.add_argument("--template", help="item text template over item fields, e.g. '{title}. {genres}'")
    parser.add_argument("--hidden", action="store_true",
                        help="write per-layer hidden states (for IISAN adapters) instead of pooled features")
    parser.add_argument("--layers", default="all", help="hidden layers: all | every:K | last:K | 0,2,4")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored dtype")
    parser.add_argument("--no-resume", action="store_true", help="discard finished chunks of an earlier run")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"],
                        help="torch.distributed backend under torchrun (auto: nccl on CUDA, gloo on CPU)")


def run(args: argparse.Namespace) -> int:
    import os

    from modalrec.parallel import distributed_session, launch_from_env

    # Under torchrun: one process group for the job (the CLI is the entry point and may read the env).
    with distributed_session(launch_from_env(os.environ), backend=args.backend, device=args.device) as session:
        if session is not None:
            args.device = session.device  # "cuda" / "auto" -> this rank's GPU
        return _run(args, is_main=session is None or session.is_main)


def _run(args: argparse.Namespace, is_main: bool = True) -> int:
    from modalrec.cli.common import experiment_config, print_json
    from modalrec.errors import ConfigError
    from modalrec.experiment import FeaturesConfig
    from modalrec.features.build import encode_catalogue, encode_hidden_cache
    from modalrec.parallel import barrier, shard_of_this_process
    from modalrec.pipeline import load_data

    cfg = experiment_config(args)
    encoders = FeaturesConfig(text=args.text, image=args.image, lexical=args.lexical).encoders()
    if not encoders:
        raise ConfigError("give --text, --image and/or --lexical")
    if args.hidden and args.lexical:
        raise ConfigError("--lexical is a pooled feature; hidden-state caches (--hidden) take --text / --image")
    ds = load_data(cfg.data)
    common = {"template": args.template, "batch_size": args.batch_size, "device": args.device,
              "precision": args.precision, "resume": not args.no_resume,
              "progress": not args.no_progress and is_main}
    with shard_of_this_process() as shard:
        if args.hidden:
            summary = encode_hidden_cache(ds.items, args.out, encoders, layers=_layers(args.layers), shard=shard,
                                          barrier=barrier if shard else None,
                                          **common)
        else:
            summary = encode_catalogue(ds.items, args.out, encoders, dtype=args.dtype,
                                       shard=shard, barrier=barrier if shard else None, **common)
        if shard is not None:
            barrier()  # every rank returns once rank 0 has finalised the store
    if not is_main:
        return 0
    print(summary)
    print_json(summary.to_dict())
    return 0


def _layers(text: str) -> str | list[int]:
    """'0,2,4' -> [0, 2, 4]; 'all' / 'every:2' / 'last:4' pass through."""
    return [int(x) for x in text.split(",")] if text[:1].isdigit() else text
