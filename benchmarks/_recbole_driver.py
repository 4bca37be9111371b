"""RecBole 1.2.1 side of `recbole_side_by_side.py`; runs with the RecBole venv's python in a subprocess.

It never imports modalrec (RecBole's pins may conflict with ours). Input: a data directory holding
`<dataset>/<dataset>.inter` (atomic format) and the shared hyperparameters. Output: one JSON file
(metrics, per-epoch timings, split counts) and one `.npz` with the best model's TEST scores over every
item (rows = test users, columns = RecBole item ids) plus the raw tokens needed to map them back, so
that the caller can re-rank RecBole's scores under modalrec's protocol and check the split event by event.

    .venv-recbole/bin/python benchmarks/_recbole_driver.py --data-path DIR --dataset ml100k_udata \
        --out r.json --scores-out r.npz --epochs 5 --patience 3
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", required=True, help="folder containing <dataset>/<dataset>.inter")
    p.add_argument("--dataset", required=True, help="not 'ml-100k': RecBole then loads its bundled copy instead")
    p.add_argument("--out", required=True)
    p.add_argument("--scores-out", required=True)
    p.add_argument("--checkpoint-dir", default=None, help="default: <data-path>/saved")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=5,
                   help="validations without improvement before stopping (RecBole stopping_step = patience - 1)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--ffn-dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def recbole_config(args: argparse.Namespace) -> dict[str, Any]:
    """The RecBole config dict: the same data, split, model and optimiser settings as the modalrec side."""
    return {
        "data_path": args.data_path,
        "checkpoint_dir": args.checkpoint_dir or os.path.join(args.data_path, "saved"),
        "use_gpu": False,
        "device": "cpu",
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "state": "WARNING",
        "worker": 0,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        # no filtering beyond RecBole's defaults ([0, inf) intervals, no rating threshold, no dedup)
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG", "Hit", "MRR"],
        "topk": [10],
        "metric_decimal_place": 6,
        "valid_metric": "NDCG@10",
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "hidden_size": args.dim,
        "inner_size": args.ffn_dim,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "hidden_act": "gelu",
        "learner": "adam",
        "learning_rate": args.lr,
        "weight_decay": 0.0,
        "clip_grad_norm": None,
        "train_batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "epochs": args.epochs,
        # RecBole stops once cur_step > stopping_step, i.e. after stopping_step + 1 validations without
        # improvement; modalrec stops after `patience` of them.
        "stopping_step": max(args.patience - 1, 0),
        "eval_step": 1,
    }


def make_trainer_class(base: type) -> type:
    """RecBole's Trainer with wall-clock timing of every training epoch and every validation."""

    class TimedTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, model: Any) -> None:
            super().__init__(config, model)
            self.epoch_seconds: list[float] = []
            self.epoch_cpu: list[float] = []
            self.valid_seconds: list[float] = []
            self.valid_cpu: list[float] = []
            self.valid_scores: list[float] = []
            self.valid_done_at: list[float] = []  # seconds since fit start when each validation finished
            self.fit_started = 0.0

        def _train_epoch(self, train_data: Any, epoch_idx: int, loss_func: Any = None, show_progress: bool = False):
            if not self.epoch_seconds:
                self.fit_started = time.perf_counter()
            t0, c0 = time.perf_counter(), time.process_time()
            out = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
            self.epoch_seconds.append(time.perf_counter() - t0)
            self.epoch_cpu.append(time.process_time() - c0)
            return out

        def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
            # Keep the best weights in memory too, so they are restored without unpickling RecBole's checkpoint
            # file (it stores a Config object, so torch.load would need weights_only=False).
            super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_other = copy.deepcopy(self.model.other_parameter())

        def _valid_epoch(self, valid_data: Any, show_progress: bool = False):
            t0, c0 = time.perf_counter(), time.process_time()
            score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
            t1 = time.perf_counter()
            self.valid_seconds.append(t1 - t0)
            self.valid_cpu.append(time.process_time() - c0)
            self.valid_scores.append(float(score))
            self.valid_done_at.append(t1 - self.fit_started)
            return score, result

    return TimedTrainer


def best_epoch(scores: list[float], stopping_step: int) -> int:
    """1-based epoch RecBole keeps: the last one whose score was >= the running best (its rule)."""
    best, best_i = -float("inf"), 0
    for i, s in enumerate(scores):
        if s >= best:
            best, best_i = s, i
    return best_i + 1


def test_scores(model: Any, test_data: Any, dataset: Any) -> dict[str, np.ndarray]:
    """The loaded model's full-sort scores for every test event + raw tokens to map them back."""
    import torch

    uid, iid = dataset.uid_field, dataset.iid_field
    users, targets, rows, hist = [], [], [], []
    model.eval()
    with torch.no_grad():
        for batch in test_data:
            inter = batch[0]
            rows.append(model.full_sort_predict(inter).view(len(inter), -1).float().numpy())  # [B, n_items]
            users.append(inter[uid].numpy())
            targets.append(inter[iid].numpy())
            hist.append(inter[model.ITEM_SEQ].numpy())
    user_tok = np.asarray(dataset.field2id_token[uid])
    item_tok = np.asarray(dataset.field2id_token[iid])
    return {
        "scores": np.concatenate(rows).astype(np.float32),
        "user_tokens": user_tok[np.concatenate(users)].astype(str),
        "target_tokens": item_tok[np.concatenate(targets)].astype(str),
        "item_tokens": item_tok.astype(str),  # column j of scores = item token item_tokens[j]; j = 0 is PAD
        "input_window": np.concatenate(hist),  # [E, max_len] RecBole ids the model saw (right-padded)
    }


def eval_targets(data: Any, dataset: Any) -> list[list[str]]:
    uid, iid = dataset.uid_field, dataset.iid_field
    ut, it = dataset.field2id_token[uid], dataset.field2id_token[iid]
    out = []
    for batch in data:
        inter = batch[0]
        out.extend([str(ut[u]), str(it[i])] for u, i in zip(inter[uid].tolist(), inter[iid].tolist()))
    return out


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _r(xs: list[float], nd: int = 3) -> list[float]:
    return [round(float(x), nd) for x in xs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dataset == "ml-100k":
        raise SystemExit("dataset name 'ml-100k' makes RecBole 1.2.1 ignore data_path; use another name")
    import torch

    torch.set_num_threads(args.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    logging.getLogger().setLevel(logging.WARNING)
    started = time.perf_counter()
    config = Config(model="SASRec", dataset=args.dataset, config_dict=recbole_config(args))
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)  # init_seed does not touch it, but be explicit after RecBole's setup
    dataset = create_dataset(config)
    n_inter = int(dataset.inter_num)  # before data_preparation, which augments / splits in place
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prep_s = time.perf_counter() - started
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = make_trainer_class(Trainer)(config, model)

    t0 = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False)
    fit_s = time.perf_counter() - t0

    model.load_state_dict(trainer.best_state)
    model.load_other_parameter(trainer.best_other)
    t1, c1 = time.perf_counter(), time.process_time()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    test_s, test_cpu = time.perf_counter() - t1, time.process_time() - c1
    t2 = time.perf_counter()
    valid_result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    valid_eval_s = time.perf_counter() - t2

    scores = test_scores(model, test_data, dataset)
    np.savez(args.scores_out, **scores)
    best = best_epoch(trainer.valid_scores, config["stopping_step"])
    train_ds = train_data._dataset
    result = {
        "library": f"recbole {recbole.__version__}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": {k: v for k, v in recbole_config(args).items() if k not in ("data_path", "checkpoint_dir")},
        "counts": {
            "users": int(dataset.user_num - 1),  # RecBole counts its [PAD] user/item too
            "items": int(dataset.item_num - 1),
            "interactions": n_inter,
            "train_samples": len(train_ds),  # one (prefix -> next item) sample per training target
            "valid_events": len(valid_data._dataset),
            "test_events": len(test_data._dataset),
            "train_steps_per_epoch": int((len(train_ds) + args.batch_size - 1) // args.batch_size),
            "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        },
        "test": {k: float(v) for k, v in test_result.items()},
        "valid_best": {k: float(v) for k, v in valid_result.items()},
        "epochs_run": len(trainer.epoch_seconds),
        "best_epoch": best,
        "epoch_seconds": _r(trainer.epoch_seconds),
        "epoch_cpu_seconds": _r(trainer.epoch_cpu),
        "valid_seconds": _r(trainer.valid_seconds),
        "valid_cpu_seconds": _r(trainer.valid_cpu),
        "valid_ndcg10": _r(trainer.valid_scores, 5),
        "seconds_per_epoch_mean": _mean(trainer.epoch_seconds),
        "cpu_seconds_per_epoch_mean": _mean(trainer.epoch_cpu),
        "seconds_per_valid_eval_mean": _mean(trainer.valid_seconds),
        "cpu_seconds_per_valid_eval_mean": _mean(trainer.valid_cpu),
        "seconds_valid_eval_once_after_fit": valid_eval_s,
        "seconds_test_eval": test_s,
        "cpu_seconds_test_eval": test_cpu,
        "seconds_to_best": trainer.valid_done_at[best - 1] if trainer.valid_done_at else None,
        "cpu_seconds_to_best": float(sum(trainer.epoch_cpu[:best]) + sum(trainer.valid_cpu[:best])),
        "seconds_fit": fit_s,
        "seconds_data_prep": prep_s,
        "valid_targets": eval_targets(valid_data, dataset),
    }
    Path(args.out).write_text(json.dumps(result))
    print(f"recbole driver done: test ndcg@10 {result['test'].get('ndcg@10')}", file=sys.stderr)


if __name__ == "__main__":
    main()
