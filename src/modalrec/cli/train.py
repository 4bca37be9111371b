"""`modalrec train`: run one experiment from a config file plus dotted overrides.

Under `torchrun --nproc_per_node N` (or several nodes) it trains data-parallel with DDP: the process
group is initialised from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (gloo on CPU, nccl on GPUs),
train.batch_size stays the global batch, and only rank 0 prints and writes the run directory.
"""

from __future__ import annotations

import argparse

from modalrec.cli.common import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--no-write", action="store_true", help="do not write a run directory")
    # --- distributed (torchrun) options ---
    parser.add_argument("--grad-accum", type=int, default=1, metavar="K",
                        help="global batches per optimizer step (gradient accumulation)")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"],
                        help="torch.distributed backend under torchrun (auto: nccl on CUDA, gloo on CPU)")
    parser.add_argument("--find-unused-parameters", action="store_true",
                        help="DDP option for models whose loss does not use every parameter")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from modalrec.cli.common import experiment_config, print_json

    cfg = experiment_config(args)  # misspelt keys fail here, before torch loads

    from modalrec.devices import resolve_device
    from modalrec.parallel import distributed_session, launch_from_env
    from modalrec.pipeline import run_experiment
    from modalrec.training.distributed import DistributedTraining

    launch = launch_from_env(os.environ)  # the CLI is the entry point: it may read torchrun's variables
    with distributed_session(launch, backend=args.backend, device=cfg.train.device) as session:
        dist_train = None
        if session is not None or args.grad_accum > 1:
            dist_train = DistributedTraining.from_process_group(
                accumulate=args.grad_accum, find_unused_parameters=args.find_unused_parameters)
        if session is not None:  # one GPU per process: "cuda" means this rank's GPU everywhere
            dev = session.device
            cfg = dataclasses.replace(
                cfg, train=dataclasses.replace(cfg.train, device=dev, progress=cfg.train.progress and session.is_main),
                eval=dataclasses.replace(cfg.eval, device=resolve_device(cfg.eval.device, launch.local_rank)),
                features=dataclasses.replace(cfg.features,
                                             device=resolve_device(cfg.features.device, launch.local_rank)))
        result = run_experiment(cfg, write=not args.no_write, distributed=dist_train)
        if session is not None and not session.is_main:
            return 0
    print(result.test.to_markdown())
    if result.run_dir is not None:
        print(f"\nrun written to {result.run_dir}")
    payload = {"test": result.test.overall, "wall_time_s": round(result.manifest["wall_time_s"], 2)}
    if session is not None:
        payload["world_size"] = session.world_size
    print_json(payload)
    return 0
