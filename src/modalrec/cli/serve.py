"""`modalrec serve`: the HTTP service (FastAPI + uvicorn) over a serving artifact."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", required=True, help="artifact directory (made by `modalrec export`)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help="require this key in X-API-Key for write endpoints")
    parser.add_argument("--api-key-file", help="read the API key from this file (keeps it out of `ps`)")
    parser.add_argument("--image-root", help="directory that image paths of new items must resolve into")
    parser.add_argument("--index", choices=["exact", "hnsw", "ivf"], help="override the artifact's index kind")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--read-only", action="store_true",
                        help="serve a snapshot of the catalogue; added / removed items stay in this process's memory")
    parser.add_argument("--catalogue", help="live catalogue database: a SQLite file (default DIR/catalogue.sqlite) "
                                            "or a postgresql:// URL shared by servers on several machines")
    parser.add_argument("--encoder-process", action=argparse.BooleanOptionalAction, default=True,
                        help="encode new items in a low-priority child process, so large adds do not slow "
                             "requests (default on)")
    parser.add_argument("--write-timeout", type=float, default=60.0,
                        help="seconds a write may wait for the writer before it is refused with 503")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow an encoder that runs Python shipped with its model (never taken from the artifact)")
    parser.add_argument("--max-history", type=int, default=500)
    parser.add_argument("--max-k", type=int, default=200)
    parser.add_argument("--max-new-items", type=int, default=1000, help="most items one POST /items may add")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads per request (default 1: concurrent requests use the cores; "
                             "0 = torch's default)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modalrec.errors import ConfigError
    from modalrec.serving.app import serve
    from modalrec.serving.recommender import Recommender

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    key = args.api_key
    if args.api_key_file:
        key = Path(args.api_key_file).read_text().strip()
        if not key:
            raise ConfigError(f"--api-key-file {args.api_key_file} is empty")
    if key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it may add items")
    rec = Recommender.load(args.artifact, device=args.device, index={"kind": args.index} if args.index else None,
                           persist=not args.read_only, catalogue=args.catalogue,
                           trust_remote_code=args.trust_remote_code)
    if args.encoder_process and not args.read_only:
        rec.encode_in_subprocess()
    serve(rec, host=args.host, port=args.port, log_level=args.log_level, api_key=key,
          image_root=args.image_root, max_history=args.max_history, max_k=args.max_k,
          max_new_items=args.max_new_items, write_timeout_s=args.write_timeout)
    return 0
