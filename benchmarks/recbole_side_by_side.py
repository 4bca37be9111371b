"""ID SASRec on MovieLens-100K trained by modalrec and by RecBole 1.2.1 in the same run, same data.

Both sides read the same 100,000 rows of `u.data` (RecBole through an atomic `ml100k_udata.inter` written
to a temp dir, in the file's row order, so equal timestamps break ties identically), split leave-one-out
(valid = second-last, test = last event per user, time order), rank the full catalogue, and train the
same architecture (post-norm SASRec, GELU, learned positions, full-softmax CE) with the same
hyperparameters: Adam (no weight decay), lr, batch size, epoch cap and early stopping on VALID NDCG@10
(modalrec patience P = RecBole stopping_step P - 1), no gradient clipping (RecBole's SASRec default;
--grad-clip 1 gives modalrec its own default, a global norm of 1.0). No filtering on either side.

Protocol difference that matters: for sequential models RecBole 1.2.1 masks NO history items in full
ranking (only PAD); modalrec's default (exclude_seen) masks every history item except the target. The
like-with-like comparison therefore uses modalrec with exclude_seen=False (for early stopping too); both
models' TEST scores are also re-ranked by modalrec's Evaluator under both protocols (RecBole's scores
are exported by the driver), which doubles as an independent check of RecBole's own metric.

"Epoch" differs: RecBole's is one pass over every (prefix -> next item) sample, one per training target
(only the last position is trained); modalrec's is one pass over next-item windows of up to max_len
targets each (every position is trained). Both see every training target once per epoch. By default
(--batch-unit targets) a modalrec step takes as many windows as hold --batch-size targets on average, so
both make about the same number of updates per epoch of about the same number of targets each, and the
shared epoch cap and patience mean the same thing; --batch-unit sequences gives modalrec --batch-size
windows (~max_len times more targets per step, ~max_len times fewer steps). Wall time to the
best-validation checkpoint is reported too.

--window-stride 1 makes modalrec train every target with up to max_len items of context, as RecBole's
prefix samples do (about max_len times the compute of the default windows). --label-smoothing gives
modalrec's full-softmax CE label smoothing, which RecBole 1.2.1's SASRec loss does not offer.

Test NDCG@10 moves by several thousandths between seeds (early stopping on 943 VALID events), more than
the two libraries differ, so compare seeds: run one process per seed (two at a time on two cores) and
combine them with recbole_seeds_summary.py.

    nice -n 10 python benchmarks/recbole_side_by_side.py --epochs 30 --out benchmarks/results/recbole_side_by_side.json
    python benchmarks/recbole_side_by_side.py --threads 1 --seed 3 --window-stride 10 --out runs/sbs_s3.json
    python benchmarks/recbole_side_by_side.py --threads 1 --seed 3 --grad-clip 1 --skip-recbole --out runs/mr_s3.json
    python benchmarks/recbole_side_by_side.py --threads 1 --seed 3 --window-stride 1 --label-smoothing 0.5 \
        --recbole-from runs/sbs_s3.json --out runs/mr_ls_s3.json
    python benchmarks/recbole_side_by_side.py --threads 1 --seed 3 --modalrec-defaults \
        --recbole-from benchmarks/results/recbole_seeds/full_s3_stride10.json --out runs/mr_defaults_s3.json
    python benchmarks/recbole_side_by_side.py --setup            # create .venv-recbole (RecBole 1.2.1) if missing
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _output import emit_json, groups_of

from modalrec.models.recipe import LIBRARY_RECIPE
from modalrec.models.sequential.sasrec import SASREC_RECIPE
from modalrec.training.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
DRIVER = Path(__file__).resolve().parent / "_recbole_driver.py"
# Not "ml-100k": for that name RecBole 1.2.1 ignores data_path and loads its bundled copy (configurator.py).
RB_DATASET = "ml100k_udata"
RECBOLE_PINS = ["torch==2.13.0", "recbole==1.2.1", "numpy<2"]  # see setup_venv
log = logging.getLogger("recbole_side_by_side")
HP_KEYS = ("epochs", "patience", "batch_size", "lr", "dim", "ffn_dim", "layers", "heads", "dropout", "max_len", "seed")


def add_hparams(p: argparse.ArgumentParser, epochs: int = 30, patience: int = 5) -> None:
    """Hyperparameters shared by both libraries (and by id_sasrec_amazon.py)."""
    p.add_argument("--epochs", type=int, default=epochs, help="epoch cap")
    p.add_argument("--patience", type=int, default=patience, help="validations without improvement before stopping")
    p.add_argument("--batch-size", type=int, default=256, help="training targets (RecBole samples) per step")
    p.add_argument("--batch-unit", choices=("targets", "sequences"), default="targets",
                   help="targets: modalrec takes as many windows per step as give --batch-size targets on average "
                        "(the same number of updates per epoch as RecBole); sequences: --batch-size windows")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--ffn-dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2, help="hidden and attention dropout")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads, both sides")
    p.add_argument("--device", default="cpu", help="modalrec side only")


def add_modalrec_options(p: argparse.ArgumentParser) -> None:
    """Options of the modalrec side only (RecBole has no counterpart)."""
    p.add_argument("--window-stride", type=int, default=None,
                   help="modalrec side: TrainWindows stride (default max_len = non-overlapping windows; smaller "
                        "strides give every target >= max_len - stride items of context, as RecBole's prefixes do)")
    p.add_argument("--positions", choices=("from_start", "from_end"), default="from_end",
                   help="modalrec side: SASRec position numbering (from_start = RecBole's: 0 at the first item)")
    p.add_argument("--grad-clip", type=float, default=0.0,
                   help="modalrec side: max global gradient norm (default 0 = no clipping, RecBole's SASRec recipe; "
                        f"modalrec's library default is {LIBRARY_RECIPE.grad_clip}, SASRec's recipe {SASREC_RECIPE.grad_clip})")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="modalrec side: label smoothing of the full-softmax CE (default 0 = RecBole's loss; "
                        "RecBole 1.2.1's SASRec has no such option)")
    p.add_argument("--scheduler", choices=("none", "plateau", "cosine"), default="none",
                   help="modalrec side: lr schedule (default none = RecBole's constant lr; plateau halves the lr "
                        "after 2 validations without improvement)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="modalrec side: AdamW weight decay on matrices (default 0 = RecBole's SASRec recipe)")
    p.add_argument("--modalrec-lr", type=float, default=None,
                   help="modalrec side: its own Adam lr (default: --lr, RecBole's; SASRec's recipe sets its own)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="modalrec side: validate and keep an exponential moving average of the weights "
                        "(default 0 = off, RecBole's recipe)")


# The modalrec-side options a training recipe sets (models/recipe.py)
RECIPE_OPTIONS = ("window_stride", "batch_unit", "grad_clip", "ema_decay", "label_smoothing", "modalrec_lr")


def use_sasrec_defaults(args: argparse.Namespace, parser_defaults: dict[str, Any]) -> None:
    """Set the modalrec-side options from SASRec's default recipe, resolved by the functions `modalrec train`
    uses (no train overrides, no model params but the shared architecture); giving one of them is an error."""
    from modalrec.models.recipe import resolve_model_params, resolve_train
    from modalrec.models.sequential.sasrec import SASRec

    given = [k for k in RECIPE_OPTIONS if getattr(args, k) != parser_defaults[k]]
    if given:
        raise SystemExit(f"--modalrec-defaults takes {given} from SASRec's recipe; do not give them")
    recipe = SASRec.training_recipe({"loss": "ce", "max_len": args.max_len})
    train, _ = resolve_train(TrainConfig(), recipe)
    params, _ = resolve_model_params({}, recipe)
    args.window_stride, args.grad_clip, args.ema_decay = train.window_stride, train.grad_clip, train.ema_decay
    args.modalrec_lr = train.lr
    args.batch_unit = "targets" if train.batch_unit == "targets" else "sequences"
    args.label_smoothing = params.get("label_smoothing", 0.0)


def modalrec_hparams(args: argparse.Namespace) -> dict[str, Any]:
    """The modalrec-side options as recorded in the JSON's hparams (recbole_seeds_summary.py checks them)."""
    return {"modalrec_defaults": bool(getattr(args, "modalrec_defaults", False)), "batch_unit": args.batch_unit, "modalrec_window_stride": args.window_stride or args.max_len,
            "modalrec_positions": args.positions, "modalrec_grad_clip": args.grad_clip,
            "modalrec_label_smoothing": args.label_smoothing, "modalrec_scheduler": args.scheduler,
            "modalrec_weight_decay": args.weight_decay, "modalrec_ema_decay": args.ema_decay,
            "modalrec_lr": modalrec_lr(args)}


def modalrec_lr(args: argparse.Namespace) -> float:
    return args.lr if args.modalrec_lr is None else args.modalrec_lr


def machine_state() -> dict[str, Any]:
    return {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def machine_info(threads: int) -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "torch_threads": threads, "nice": os.nice(0),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


class TimedSource:
    """Wraps a batch source and records wall and CPU (process) time of each full pass over it.

    `fit` exhausts the generator in every epoch, so the span from the first request to exhaustion is the
    epoch's training time (batch building included). CPU time is the honest measure on a shared machine.
    """

    def __init__(self, source: Any) -> None:
        self.source, self.wall, self.cpu = source, [], []

    def num_batches(self, batch_size: int) -> int:
        return self.source.num_batches(batch_size)

    def batches(self, batch_size: int, seed: int, epoch: int) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        yield from self.source.batches(batch_size, seed=seed, epoch=epoch)
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)


def timed(fn: Any, wall: list[float], cpu: list[float]) -> Any:
    def run(*a: Any) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*a)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        return out

    return run


def train_modalrec_sasrec(split: Any, args: argparse.Namespace, exclude_seen: bool = True) -> dict[str, Any]:
    """modalrec's ID SASRec (full-softmax CE) with early stopping on VALID NDCG@10, then TEST once per protocol.

    Checkpoint selection uses `exclude_seen`; TEST is reported under both history-masking protocols.
    """
    from modalrec.data.sequences import TrainWindows
    from modalrec.evaluation.evaluator import Evaluator
    from modalrec.models.base import ModelContext
    from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
    from modalrec.training.loop import fit

    torch.set_num_threads(args.threads)
    t_prep = time.perf_counter()
    windows = TrainWindows(split.train, args.max_len, stride=args.window_stride)
    ctx = ModelContext.for_split(split, seed=args.seed)
    model = SASRec(SASRecConfig(dim=args.dim, n_layers=args.layers, n_heads=args.heads, ffn_dim=args.ffn_dim,
                                dropout=args.dropout, attn_dropout=args.dropout, max_len=args.max_len,
                                norm="post", loss="ce", positions=args.positions,
                                label_smoothing=args.label_smoothing), ctx)

    def evaluator(part: str, masked: bool) -> Evaluator:
        return Evaluator(getattr(split, part), split.n_items, ks=(5, 10, 20), exclude_seen=masked,
                         max_len=args.max_len, device=args.device)

    valid_ev = evaluator("valid", exclude_seen)
    prep_s = time.perf_counter() - t_prep
    n_targets = windows.n_targets
    batch_size = args.batch_size
    if args.batch_unit == "targets":  # windows per step so that a step holds ~batch_size targets
        batch_size = windows.windows_per_step(args.batch_size)
    cfg = TrainConfig(epochs=args.epochs, batch_size=batch_size, lr=modalrec_lr(args), weight_decay=args.weight_decay,
                      grad_clip=args.grad_clip, ema_decay=args.ema_decay,
                      patience=args.patience, monitor="ndcg@10", seed=args.seed, device=args.device,
                      progress=False, scheduler=args.scheduler, amp="off")
    source = TimedSource(windows)
    v_wall: list[float] = []
    v_cpu: list[float] = []
    validate = timed(lambda m: valid_ev.run(m, "valid", keep_ranks=False), v_wall, v_cpu)
    hist = fit(model, source, cfg, validate=validate)
    tests: dict[str, Any] = {}
    for masked in (False, True):
        ev = evaluator("test", masked)
        w0, c0 = time.perf_counter(), time.process_time()
        rep = ev.run(model, "test", keep_ranks=False)
        tests["history_masked" if masked else "no_history_mask"] = {
            "metrics": {k: rep.overall[k] for k in ("hr@10", "ndcg@10", "mrr", "hr@20", "ndcg@20")},
            "groups": groups_of(rep), "seconds": time.perf_counter() - w0, "cpu_seconds": time.process_time() - c0}
    selected = "history_masked" if exclude_seen else "no_history_mask"
    other = "no_history_mask" if exclude_seen else "history_masked"
    best = hist.best_epoch
    return {
        "library": "modalrec",
        "model": model,
        "selection_protocol": selected,
        "test": tests[selected]["metrics"],
        "test_by_protocol": {k: v["metrics"] for k, v in tests.items()},
        "test_groups_by_protocol": {k: v["groups"] for k, v in tests.items()},
        "valid_best": {k: v for k, v in (hist.valid[best - 1] or {}).items() if "/" not in k} if best else None,
        "counts": {"users": split.n_users, "items": split.n_items, "train_events": len(split.train),
                   "train_windows": len(windows), "train_targets": n_targets,
                   "valid_events": len(split.valid), "test_events": len(split.test),
                   "windows_per_step": batch_size, "targets_per_step_mean": n_targets / windows.num_batches(batch_size),
                   "train_steps_per_epoch": windows.num_batches(batch_size),
                   "trainable_params": hist.trainable_params},
        "epochs_run": hist.epochs,
        "best_epoch": best,
        "stopped_early": hist.stopped_early,
        "epoch_seconds": _r(hist.epoch_seconds),
        "epoch_cpu_seconds": _r(source.cpu),
        "valid_seconds": _r(v_wall),
        "valid_cpu_seconds": _r(v_cpu),
        "valid_ndcg10": _r([v.get("ndcg@10") if v else None for v in hist.valid], 5),
        "seconds_per_epoch_mean": _mean(hist.epoch_seconds),
        "cpu_seconds_per_epoch_mean": _mean(source.cpu),
        "seconds_per_valid_eval_mean": _mean(v_wall),
        "cpu_seconds_per_valid_eval_mean": _mean(v_cpu),
        "seconds_test_eval": tests[selected]["seconds"],
        "cpu_seconds_test_eval": tests[selected]["cpu_seconds"],
        "seconds_test_eval_other_protocol": tests[other]["seconds"],
        "seconds_to_best": hist.seconds_to_best,
        "cpu_seconds_to_best": float(sum(source.cpu[:best]) + sum(v_cpu[:best])) if best else None,
        "seconds_fit": hist.total_seconds,
        "seconds_data_prep": prep_s,
    }


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _r(xs: list[Any], nd: int = 3) -> list[Any]:
    return [round(x, nd) if isinstance(x, float) else x for x in xs]


def setup_venv(python: Path, setup: bool) -> Path:
    """Return the RecBole venv's python; with `setup`, create the venv when it is missing.

    Pins: torch 2.13.0 (the CPU wheel, as in the main venv), recbole 1.2.1, numpy < 2 (RecBole 1.2.1's
    configurator assigns np.float = np.float_, which numpy 2 removed). RecBole requires ray <= 2.6.3,
    which has wheels only up to Python 3.11, so run this with a Python <= 3.11 interpreter. pandas 3 works
    for this benchmark (its copy-on-write turns RecBole's fillna(inplace=True) into a no-op, which
    matters only for missing values; u.data has none).
    """
    if python.exists():
        return python
    if not setup:
        raise SystemExit(f"RecBole python {python} not found; rerun with --setup to create the venv, or pass "
                         "--recbole-python PATH")
    venv = python.parent.parent
    log.info("creating %s (RecBole 1.2.1 + pins %s)", venv, RECBOLE_PINS)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [RECBOLE_PINS[0]], check=True)  # torch first, so recbole does not pull another build
    subprocess.run(pip + RECBOLE_PINS, check=True)
    return python


def write_atomic_inter(data_dir: Path, out_dir: Path, name: str = RB_DATASET) -> Path:
    """u.data rows -> RecBole atomic `<name>/<name>.inter`: the same rows and values, no filtering.

    RecBole stores `:float` fields as float32, which rounds ML-100K's unix timestamps (~8.8e8 s) to
    multiples of 64 s and creates ties its stable sorts then break by file position. The rows are
    therefore written in (user, timestamp, original row) order, the order modalrec uses, so both
    libraries see the same sequences and the same valid/test targets (float32 rounding is monotone).
    """
    from modalrec.io import write_bytes_atomic

    rows = [r.split("\t")[:4] for r in (data_dir / "u.data").read_text().splitlines() if r.strip()]
    order = sorted(range(len(rows)), key=lambda i: (int(rows[i][0]), int(rows[i][3]), i))
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += ["\t".join(rows[i]) for i in order]
    path = out_dir / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


def subset_data(data_dir: Path, out_dir: Path, max_users: int) -> Path:
    """A MovieLens folder with only users 1..max_users in u.data (smoke runs); other files linked."""
    from modalrec.io import write_bytes_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in (data_dir / "u.data").read_text().splitlines() if r.strip() and int(r.split("\t")[0]) <= max_users]
    write_bytes_atomic(out_dir / "u.data", ("\n".join(rows) + "\n").encode())
    for name in ("u.item", "u.genre"):
        if not (out_dir / name).exists():
            (out_dir / name).symlink_to((data_dir / name).resolve())
    return out_dir


def run_recbole(python: Path, work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out, scores = work / "recbole.json", work / "recbole_scores.npz"
    cmd = [str(python), str(DRIVER), "--data-path", str(work), "--dataset", RB_DATASET, "--out", str(out),
           "--scores-out", str(scores), "--threads", str(args.threads)]
    for key in HP_KEYS:
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work)
    res = json.loads(out.read_text())
    res["seconds_process"] = time.perf_counter() - t0
    with np.load(scores) as z:
        return res, {k: z[k] for k in z.files}


class PrecomputedScores:
    """A Scorer that returns exported score rows (looked up by user), so modalrec's Evaluator can rank them."""

    def __init__(self, scores: np.ndarray, row_of_user: np.ndarray) -> None:
        self.scores, self.row_of_user = torch.from_numpy(scores), row_of_user

    def score(self, batch: Any, items: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.row_of_user[batch.users.numpy()]
        if (rows < 0).any():
            raise ValueError("a test user has no exported RecBole score row")
        return self.scores[torch.from_numpy(rows)]  # [B, n_items + 1]


def cross_check(ds: Any, split: Any, rb: dict[str, Any], exported: dict[str, np.ndarray], max_len: int) -> dict[str, Any]:
    """Same users / items / events on both sides, and RecBole's test scores ranked by modalrec's Evaluator."""
    from modalrec.evaluation.evaluator import Evaluator

    uv, iv = ds.user_vocab, ds.item_vocab
    ours_test = {(uv.raw(u), iv.raw(i)) for u, i in zip(split.test.user, split.test.target)}
    ours_valid = {(uv.raw(u), iv.raw(i)) for u, i in zip(split.valid.user, split.valid.target)}
    theirs_test = set(zip(exported["user_tokens"].tolist(), exported["target_tokens"].tolist()))
    theirs_valid = {tuple(p) for p in rb["valid_targets"]}
    # RecBole's score columns -> modalrec item indices; column 0 (PAD) gets -inf and is never a candidate.
    col_of_item = np.array([iv.get(t, -1) if t != "[PAD]" else 0 for t in exported["item_tokens"]])
    if (col_of_item < 0).any() or len(set(col_of_item.tolist())) != len(col_of_item):
        raise ValueError("RecBole item tokens do not map one-to-one onto modalrec's item vocabulary")
    scores = np.full((len(exported["scores"]), iv.size + 1), -np.inf, dtype=np.float32)
    scores[:, col_of_item] = exported["scores"]
    scores[:, 0] = -np.inf
    row_of_user = np.full(uv.size + 1, -1, dtype=np.int64)
    row_of_user[uv.indices(exported["user_tokens"].tolist())] = np.arange(len(scores))
    scorer = PrecomputedScores(scores, row_of_user)
    # The last max_len history items RecBole fed its model for each test event vs modalrec's (raw tokens).
    item_tok = exported["item_tokens"]
    theirs_in = {u: tuple(item_tok[w[w > 0]].tolist()) for u, w in zip(exported["user_tokens"].tolist(),
                                                                       exported["input_window"])}
    same_inputs = all(
        theirs_in.get(uv.raw(u)) == tuple(iv.raw(i) for i in split.test.history(e)[-max_len:])
        for e, u in enumerate(split.test.user))
    reranked, reranked_groups = {}, {}
    for masked in (False, True):
        rep = Evaluator(split.test, split.n_items, ks=(10, 20), exclude_seen=masked, max_len=max_len).run(scorer)
        protocol = "history_masked" if masked else "no_history_mask"
        reranked[protocol] = {k: rep.overall[k] for k in ("hr@10", "ndcg@10", "mrr", "hr@20", "ndcg@20")}
        reranked_groups[protocol] = groups_of(rep)
    rc = rb["counts"]
    return {
        "same_users": rc["users"] == split.n_users,
        "same_items": rc["items"] == split.n_items,
        "same_interactions": rc["interactions"] == len(ds.interactions),
        "inter_file_order": "rows written sorted by (user, timestamp, u.data row): RecBole keeps float fields as "
                            "float32 (timestamps rounded to 64 s), so file order must break its ties",
        "same_test_events": rc["test_events"] == len(split.test) and ours_test == theirs_test,
        "same_valid_events": rc["valid_events"] == len(split.valid) and ours_valid == theirs_valid,
        "test_pairs_only_in_modalrec": len(ours_test - theirs_test),
        "test_pairs_only_in_recbole": len(theirs_test - ours_test),
        "same_test_input_windows": bool(same_inputs),
        "same_train_targets": rc["train_samples"] == int(sum(np.maximum(split.train.seq_lengths()[1:] - 1, 0))),
        "recbole_test_scores_ranked_by_modalrec_evaluator": reranked,
        "recbole_test_groups_by_modalrec_evaluator": reranked_groups,
        "test_targets_in_history": int(sum(
            int(t in set(split.test.history(e).tolist())) for e, t in enumerate(split.test.target))),
        "history_masking": "RecBole 1.2.1 full-sort evaluation of sequential models masks only PAD "
                           "(FullSortEvalDataLoader passes history_index=None); modalrec exclude_seen=True masks "
                           "every history item except the target. Headline comparison: modalrec exclude_seen=False.",
        "ties": "RecBole ranks by torch.topk (ties in arbitrary order); modalrec ranks pessimistically",
    }


def summarize(mr: dict[str, Any], rb: dict[str, Any], check: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers and time ratios; with the protocol check's re-ranking of RecBole's TEST scores (and a
    modalrec side that stored its groups), TEST NDCG@10 of both libraries per group under each protocol."""
    def ratio(key: str) -> float | None:
        a, b = rb.get(key), mr.get(key)
        return round(a / b, 3) if a and b else None

    rb_test = {"hr@10": rb["test"].get("hit@10"), "ndcg@10": rb["test"].get("ndcg@10")}
    times = ("seconds_per_epoch_mean", "cpu_seconds_per_epoch_mean", "seconds_per_valid_eval_mean",
             "cpu_seconds_per_valid_eval_mean", "seconds_test_eval", "cpu_seconds_test_eval", "seconds_to_best",
             "cpu_seconds_to_best")
    keys = ("epochs_run", "best_epoch") + times
    faster = {k: (mr.get(k) or 0) < (rb.get(k) or 0) for k in times}
    theirs, ours = (check or {}).get("recbole_test_groups_by_modalrec_evaluator"), mr.get("test_groups_by_protocol")
    by_group = {protocol: {g: {"n": row["n"], "modalrec": row["ndcg@10"], "recbole": theirs[protocol][g]["ndcg@10"]}
                           for g, row in groups.items()}
                for protocol, groups in ours.items()} if theirs and ours else None
    return {
        **({"test_ndcg@10_by_group": by_group} if by_group else {}),
        "modalrec": {"test_ndcg@10": mr["test"]["ndcg@10"], "test_hr@10": mr["test"]["hr@10"],
                     **{k: mr.get(k) for k in keys}},
        "recbole": {"test_ndcg@10": rb_test["ndcg@10"], "test_hr@10": rb_test["hr@10"], **{k: rb.get(k) for k in keys}},
        "ratios_recbole_over_modalrec": {k: ratio(k) for k in times},
        "acceptance": {
            "modalrec_test_ndcg10_ge_recbole": mr["test"]["ndcg@10"] >= (rb_test["ndcg@10"] or 0.0),
            "modalrec_training_epoch_faster": faster["seconds_per_epoch_mean"] and faster["cpu_seconds_per_epoch_mean"],
            "modalrec_full_evaluation_faster": all(faster[k] for k in times[2:6]),
        },
    }


def reuse_recbole(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Copy the RecBole side of an earlier run (RecBole 1.2.1 takes ~40x longer per epoch than modalrec on CPU, so
    modalrec-side variants are compared against one RecBole run); refuses different hyperparameters or data."""
    old = json.loads(args.recbole_from.read_text())
    if "recbole" not in old:
        raise SystemExit(f"{args.recbole_from}: no RecBole result in it")
    differ = [k for k in HP_KEYS if old["hparams"].get(k) != result["hparams"][k]]
    if differ or old.get("dataset_summary") != result["dataset_summary"]:
        raise SystemExit(f"{args.recbole_from}: different hyperparameters {differ} or data; rerun RecBole")
    result["recbole"], result["protocol_check"] = old["recbole"], old.get("protocol_check")
    result["recbole_source"] = {"reused_from": str(args.recbole_from), "recbole_run_load": old["load"],
                                "note": "RecBole side not rerun; its timings were measured in that run"}
    result["summary"] = summarize(result["modalrec"], old["recbole"], old.get("protocol_check"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K folder (u.data)")
    p.add_argument("--recbole-python", type=Path, default=ROOT / ".venv-recbole" / "bin" / "python")
    p.add_argument("--setup", action="store_true", help="create the RecBole venv if it is missing, then continue")
    p.add_argument("--setup-only", action="store_true", help="create the RecBole venv if missing and exit")
    p.add_argument("--skip-recbole", action="store_true")
    p.add_argument("--recbole-from", type=Path, default=None,
                   help="reuse the RecBole side of an earlier JSON of this script (same hyperparameters and data, "
                        "checked) instead of rerunning RecBole; recorded in the output")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--keep-tmp", type=Path, default=None, help="write RecBole's files here instead of a temp dir")
    p.add_argument("--max-users", type=int, default=None, help="only users 1..N on both sides (smoke runs)")
    p.add_argument("--modalrec-defaults", action="store_true",
                   help="modalrec side: train with SASRec's default recipe (what `modalrec train` uses without "
                        "overrides) instead of the modalrec options below; giving one of them is an error")
    add_hparams(p)
    add_modalrec_options(p)
    args = p.parse_args(argv)
    if args.modalrec_defaults:
        use_sasrec_defaults(args, {k: p.get_default(k) for k in RECIPE_OPTIONS})
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.setup or args.setup_only:
        setup_venv(args.recbole_python, True)
        if args.setup_only:
            return {}
    from modalrec.data.sources.movielens import load_movielens
    from modalrec.data.splits import leave_one_out

    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "recbole_side_by_side", "dataset": "ml-100k", "data": str(args.data),
                              "machine": machine_info(args.threads), "load": {"start": machine_state()},
                              "hparams": {**{k: getattr(args, k) for k in HP_KEYS}, **modalrec_hparams(args)},
                              "filtering": "none on either side (all 100,000 u.data rows; RecBole default "
                                           "[0,inf) user/item intervals, no rating threshold, no dedup)"}
    python = None if args.skip_recbole or args.recbole_from else setup_venv(args.recbole_python, args.setup)
    with tempfile.TemporaryDirectory(prefix="recbole_sbs_") as tmp:
        work = args.keep_tmp or Path(tmp)
        data = subset_data(args.data, work / "subset", args.max_users) if args.max_users else args.data
        ds = load_movielens(data, plots=False, posters=False)
        split = leave_one_out(ds.interactions)
        result["dataset_summary"] = {k: v for k, v in ds.describe().items() if k in ("hash", "users", "items", "interactions")}
        mr = train_modalrec_sasrec(split, args, exclude_seen=False)
        mr.pop("model")
        result["load"]["after_modalrec"] = machine_state()
        result["modalrec"] = mr
        if python is not None:
            write_atomic_inter(data, work)
            rb, exported = run_recbole(python, work, args)
            result["load"]["after_recbole"] = machine_state()
            result["protocol_check"] = cross_check(ds, split, rb, exported, args.max_len)
            rb.pop("valid_targets")
            result["recbole"] = rb
            result["summary"] = summarize(mr, rb, result["protocol_check"])
        elif args.recbole_from:
            reuse_recbole(result, args)
    result["seconds_total"] = time.perf_counter() - started
    emit_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
