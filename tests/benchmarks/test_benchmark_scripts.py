"""The benchmark scripts: each parses its command line, the shared SASRec trainer runs under the defaults of
every script that uses it, and the seed summary pairs seeds and refuses runs that differ."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from train_testdata import cyclic_split


def _add_tiny_dataset(cold: Any, monkeypatch: pytest.MonkeyPatch, cold_item_fraction: float = 0.0) -> None:
    """cold_start's datasets plus "tiny": a synthetic leave-one-out log with hashed text features, `cold_item_fraction`
    of its items held out of training."""
    real = cold.datasets
    split = {"kind": "leave_one_out", **({"cold_item_fraction": cold_item_fraction} if cold_item_fraction else {})}

    def with_tiny(root: Path) -> dict:
        return {**real(root), "tiny": {
            "data": {"source": "synthetic", "options": {"n_users": 120, "n_items": 80, "avg_seq_len": 8}},
            "split": split, "clock": False, "content": "text",
            "features": {"text": "hashing:32", "lexical": "hashing:64", "template": "{title}. {description}"},
            "loss": "ce"}}

    monkeypatch.setattr(cold, "datasets", with_tiny)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_and_prints_help(name, monkeypatch, capsys):
    module = importlib.import_module(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["recbole_side_by_side", "id_sasrec_amazon"])
def test_shared_sasrec_trainer_runs_with_each_scripts_defaults(name):
    """train_modalrec_sasrec reads options from the script's namespace: every script that calls it must define them."""
    from recbole_side_by_side import train_modalrec_sasrec

    args = importlib.import_module(name).parse_args(["--threads", "1", "--epochs", "8", "--max-len", "10",
                                                     "--dim", "32", "--ffn-dim", "64", "--dropout", "0.0"])
    assert args.grad_clip == 0.0  # RecBole's recipe unless --grad-clip is given
    out = train_modalrec_sasrec(cyclic_split(), args, exclude_seen=False)
    assert out["test"]["ndcg@10"] > 0.5  # the planted "next item = i + 1" pattern is learned
    assert out["epochs_run"] >= out["best_epoch"] >= 1


def _run(seed: int, mr: float | None, rb: float | None, grad_clip: float = 1.0) -> dict:
    hp = {"epochs": 30, "patience": 5, "batch_size": 256, "lr": 1e-3, "dim": 64, "ffn_dim": 256, "layers": 2,
          "heads": 2, "dropout": 0.2, "max_len": 50, "seed": seed, "modalrec_grad_clip": grad_clip}
    timings = {"seconds_per_epoch_mean": 1.0, "seconds_per_valid_eval_mean": 0.1, "seconds_to_best": 10.0}
    run: dict = {"hparams": hp, "dataset_summary": {"hash": "x"}}
    if mr is not None:
        run["modalrec"] = {"test": {"ndcg@10": mr, "hr@10": 0.1}, "valid_best": {"ndcg@10": mr + 0.010},
                           "best_epoch": 3, **timings}
    if rb is not None:
        run["recbole"] = {"test": {"ndcg@10": rb, "hit@10": 0.1}, "valid_best": {"ndcg@10": rb + 0.012}, "best_epoch": 4,
                          **{k: 40 * v for k, v in timings.items()}}
    return run


def test_seed_summary_pairs_seeds_and_refuses_mixed_recipes(tmp_path):
    from recbole_seeds_summary import summarise

    def write(name: str, run: dict) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(run))
        return path

    mr = [write(f"mr{s}.json", _run(s, m, None)) for s, m in ((0, 0.060), (1, 0.050), (2, 0.058))]
    rb = [write(f"rb{s}.json", _run(s, None, r)) for s, r in ((1, 0.052), (0, 0.059), (2, 0.058))]
    out = summarise(mr, rb)
    assert out["seeds"] == [0, 1, 2]
    diff = out["ndcg10_modalrec_minus_recbole"]
    assert diff["mean"] == pytest.approx((0.001 - 0.002 + 0.0) / 3)
    assert diff["seeds_modalrec_ahead"] == 2
    assert out["valid_ndcg10_modalrec_minus_recbole"]["mean"] == pytest.approx(diff["mean"] - 0.002)
    assert out["valid_ndcg10_modalrec_minus_recbole"]["seeds_modalrec_ahead"] == 0
    assert out["acceptance"]["modalrec_mean_test_ndcg10_ge_recbole_mean"] is False
    assert out["ratios_recbole_over_modalrec_of_means"]["seconds_per_epoch_mean"] == pytest.approx(40.0)

    mixed = mr[:2] + [write("mr2_noclip.json", _run(2, 0.058, None, grad_clip=0.0))]
    with pytest.raises(SystemExit, match="modalrec_grad_clip"):
        summarise(mixed, rb)
    with pytest.raises(SystemExit, match="seeds differ"):
        summarise(mr[:2], rb)


def test_recformer_ablation_counts_finetuning_steps_across_epochs_and_stages():
    from recformer_transfer import ablation_text, finetune_curve

    history = [{"stage": 1, "steps": 250, "valid": {"ndcg@10": 0.09}}, {"stage": 1, "steps": 250, "valid": {"ndcg@10": 0.1}},
               {"stage": 2, "steps": 100, "valid": {"ndcg@10": 0.11}}]
    curve = finetune_curve({"ndcg@10": 0.08}, history)
    assert [(c["finetune_steps"], c["stage"], c["valid_ndcg@10"]) for c in curve] == [
        (0, 0, 0.08), (250, 1, 0.09), (500, 1, 0.1), (600, 2, 0.11)]
    run = {"pretrain_steps": 300, "finetune_steps": 600, "zero_shot_test_ndcg@10": 0.07, "finetuned_test_ndcg@10": 0.08}
    assert ablation_text([run], curve) == ("TEST NDCG@10 by budget: 300 pretraining + 600 finetuning steps: zero-shot "
                                           "0.0700, finetuned 0.0800; VALID NDCG@10 by finetuning steps: 0: 0.0800, "
                                           "250: 0.0900, 500: 0.1000, 600: 0.1100")
    control = {"pretrain_steps": 0, "finetune_steps": 600, "zero_shot_test_ndcg@10": 0.06,
               "finetuned_test_ndcg@10": 0.075, "source": "control.json", "pretrain_recipe": None}
    assert ablation_text([control, run], curve[:1]).startswith(
        "TEST NDCG@10 by budget: 0 pretraining + 600 finetuning steps (control.json): zero-shot 0.0600, finetuned "
        "0.0750; 300 pretraining + 600 finetuning steps: zero-shot 0.0700")


def test_scale_measures_one_catalogue_size_and_growth(tmp_path):
    """scale.py's per-size run on a tiny catalogue: the generated log, the memory-mapped store, timed steps,
    evaluation of the requested users; growth divides consecutive sizes."""
    import torch
    from scale import FEATURE_DIM, growth, one_size, parse_args

    threads = torch.get_num_threads()
    args = parse_args(["--eval-users", "20", "--steps", "1", "--batch-size", "8", "--dim", "16", "--max-len", "10",
                       "--work-dir", str(tmp_path)])
    try:
        out = one_size(300, args)
    finally:
        torch.set_num_threads(threads)
    assert (out["events"], out["users"], out["train_events"], out["eval"]["events"]) == (3000, 300, 2700, 20)
    assert out["store_bytes"] >= 301 * FEATURE_DIM * 2  # float16 rows, PAD included
    assert out["train"]["steps_timed"] == 1 and out["train"]["steps_per_epoch"] == -(-out["train"]["windows"] // 8)
    assert out["memory"]["peak_rss_bytes"] > 0
    sizes = [{"items": n, "train": {"s_per_step": s}, "eval": {"wall_s": e}, "memory": {"peak_rss_bytes": m}}
             for n, s, e, m in ((10, 1.0, 2.0, 100), (100, 1.5, 20.0, 150))]
    (row,) = growth(sizes)
    assert (row["items"], row["train_s_per_step"], row["eval_wall_s"], row["peak_rss_bytes"]) == (10, 1.5, 10, 1.5)
    assert row["eval_cpu_s"] is None  # not measured in either size


def test_stored_sasrec_benchmarks_keep_the_library_training() -> None:
    """Scripts whose stored results predate SASRec's recipe pin the library training values, so their
    commands still reproduce their JSON; every recipe field resolves from the config, none from the recipe."""
    from modalrec.experiment import with_model_defaults
    from modalrec.models.recipe import USER

    configs = [importlib.import_module("ablation_ml100k").base_config(importlib.import_module("ablation_ml100k")
                                                                         .parse_args([]))]
    age = importlib.import_module("age_ml100k")
    configs += [age.config(m, 0, age.parse_args([])) for m in age.SASRECS]
    cold = importlib.import_module("cold_start")
    configs += [cold.config("ml100k", m, 0, cold.parse_args([])) for m in cold.SASRECS]
    for cfg in configs:
        resolved, prov = with_model_defaults(cfg)
        assert {v["source"] for v in prov["train"].values()} == {USER}, cfg.name
        t = resolved.train
        assert (t.batch_unit, t.grad_clip, t.ema_decay) == ("windows", 1.0, 0.0), cfg.name
        assert t.window_stride == resolved.model.params["max_len"], cfg.name
        assert resolved.model.params["label_smoothing"] == 0.0, cfg.name


def test_recformer_control_is_used_only_once_finished_and_on_every_test_event(tmp_path):
    import json

    from recformer_transfer import wait_for_run

    path = tmp_path / "control.json"
    assert wait_for_run(path, 0.0) is None  # not there: the run is written without it
    path.write_text(json.dumps({"partial": "finetuned TEST only", "finetuned_test": {"ndcg@10": 0.07}}))
    assert wait_for_run(path, 0.0) is None  # a partial JSON is not a finished control
    done = {"protocol": {"test_events": 10, "test_events_total": 10}, "budgets": {"pretrain_lr": 5e-5, "max_tokens": 256},
            "pretrain": {"steps": 0}, "finetune_history": [{"steps": 30}, {"steps": 12}],
            "zero_shot_test": {"ndcg@10": 0.06}, "finetuned_test": {"ndcg@10": 0.08}}
    path.write_text(json.dumps(done))
    got = wait_for_run(path, 0.0)
    assert got is not None and got["finetune_steps"] == 42 and got["max_tokens"] == 256 and got["pretrain_recipe"] is None
    path.write_text(json.dumps(done | {"protocol": {"test_events": 5, "test_events_total": 10}}))
    assert wait_for_run(path, 0.0) is None  # a subsample of TEST does not qualify


def test_cold_start_pop_models_and_every_erosion_variant_are_valid_configs() -> None:
    """`_pop` is the history-age model plus the item-only popularity term; each erosion variant changes only its
    own options of that model (from_dict rejects an unknown key, so a misspelt option fails here)."""
    cold = importlib.import_module("cold_start")
    base = cold.config("ml100k", "sasrec_hybrid_agehist", 0, cold.parse_args([])).model.params
    pop = cold.config("ml100k", "sasrec_hybrid_agehist_pop", 0, cold.parse_args([])).model.params
    assert {k: v for k, v in pop.items() if base.get(k) != v} == cold.POP
    gated, first = (cold.config("ml100k", m, 0, cold.parse_args([])) for m in
                    ("sasrec_hybrid_agehist_gated", "sasrec_hybrid_agehist_gated_first"))
    assert first.model.params == gated.model.params  # `_first` changes the training windows only
    assert first.train.first_event_targets and not gated.train.first_event_targets
    erosion = importlib.import_module("cold_erosion_ml100k")
    args = erosion.parse_args([])
    for variant, (params, tower) in erosion.VARIANTS.items():
        got = erosion.config(variant, 0, args).model.params
        assert {k: v for k, v in got.items() if k != "tower" and base.get(k) != v} == params, variant
        assert {k: v for k, v in got["tower"]["options"].items()
                if base["tower"]["options"].get(k) != v} == tower, variant


def test_cold_start_debias_adds_only_the_popularity_term_and_derived_runs_check_against_their_untrained_model(
) -> None:
    cold = importlib.import_module("cold_start")
    args = cold.parse_args([])
    plain, debias = (cold.config("iisan_instruments", m, 0, args).model.params
                     for m in ("sasrec_content", "sasrec_content_debias"))
    assert {k: v for k, v in debias.items() if plain.get(k) != v} == {"loss_popularity": 1.0}
    assert cold.untrained_of("sasrec_content+blend") == "sasrec_content@0"
    assert cold.untrained_of("sasrec_content_debias+blend") == "sasrec_content@0"
    assert cold.untrained_of("sasrec_content_temp_offset+blend") == "sasrec_content_temp@0"
    assert cold.untrained_of("sasrec_content_temp_offset_repeat+blend") == "sasrec_content_temp@0"
    assert cold.untrained_of("sasrec_hybrid_agehist_gated_first+offset") == "sasrec_hybrid_agehist_gated_first@0"
    assert cold.untrained_of("sasrec_knn_content_temp_offset_repeat+blend") == "sasrec_knn_content_temp@0"
    assert cold.untrained_of("sasrec_hybrid_temp_aux_offset_repeat+blend") == "sasrec_hybrid_temp@0"
    plain, aux = (cold.config("unisrec_scientific", m, 0, args).model.params
                  for m in ("sasrec_hybrid_temp_offset_repeat", "sasrec_hybrid_temp_aux_offset_repeat"))
    assert {k: v for k, v in aux.items() if plain.get(k) != v} == {"content_aux": 1.0}
    known = cold.untrained_runs()
    assert "sasrec_knn_content_temp@0" in known and cold.is_sasrec("sasrec_knn_content_temp@0")


def test_cold_start_selects_offsets_and_blends_through_the_pipelines_select_settings() -> None:
    """+offset / +blend come from the library's `select` (the CLI's path), only for trained hybrids / content SASRecs;
    every such configuration passes the pipeline's own validation (over the built-in source: the check is of the
    model, training and select settings, not of the data files)."""
    import dataclasses

    from modalrec.experiment import DataConfig
    from modalrec.validation import check_experiment

    cold = importlib.import_module("cold_start")
    args = cold.parse_args([])
    for name in ("ml100k", "iisan_instruments"):
        for model in (*cold.SASRECS, *(m + cold.UNTRAINED for m in cold.SASRECS)):
            cfg = cold.config(name, model, 0, args)
            sel = cfg.select
            trained = not model.endswith(cold.UNTRAINED)
            assert sel.repeat_bonus == (trained and model.endswith(cold.REPEAT)), (name, model)
            base = model.removesuffix(cold.REPEAT)
            assert sel.new_item_offset == (trained and ("hybrid" in model or base.endswith(cold.SELECT_OFFSET))), \
                (name, model)
            offset_then_blend = base.removesuffix(cold.REACH).removesuffix(cold.FIRST).endswith(cold.SELECT_OFFSET)
            assert sel.blend_untrained == (trained and ("content" in model or offset_then_blend)), (name, model)
            if sel.new_item_offset:  # _reach: the smallest offset reaching the rules, within its own tolerance
                reach = model.endswith(cold.REACH)
                assert sel.offset_tolerance == (args.reach_tolerance if reach else args.offset_tolerance)
                assert sel.offset_reach == (["newest_first", "content_knn"] if reach and name == "ml100k"
                                            else ["content_knn"] if reach else [])
            if sel.new_item_offset or sel.blend_untrained or sel.repeat_bonus:
                check_experiment(dataclasses.replace(cfg, data=DataConfig()))


def test_cold_start_content_check_pairs_the_untrained_runs_with_the_trained_models_seeds() -> None:
    """A trained model run at seeds 1-2 is compared with its untrained runs and content-kNN's at seeds 1-2 (with
    cold_item_fraction each seed is its own split), not with the mean over every seed; one group below its
    untrained self fails the check."""
    cold = importlib.import_module("cold_start")

    def run(model: str, seed: int, overall: float, cold_item: float) -> dict:
        groups = {"overall": {"n": 10, "ndcg@10": overall, "hr@10": overall},
                  "cold_item": {"n": 2, "ndcg@10": cold_item, "hr@10": cold_item}}
        return {"dataset": "d", "model": model, "seed": seed, "valid": groups, "test": groups}

    results = [run("sasrec_content@0", 0, 0.90, 0.90), run("sasrec_content@0", 1, 0.10, 0.10),
               run("sasrec_content@0", 2, 0.10, 0.10), run("content_knn", 0, 0.95, 0.95),
               run("content_knn", 1, 0.05, 0.05), run("content_knn", 2, 0.05, 0.05),
               run("sasrec_content", 1, 0.20, 0.20), run("sasrec_content", 2, 0.20, 0.20),
               run("sasrec_content+blend", 1, 0.20, 0.05), run("sasrec_content+blend", 2, 0.20, 0.05)]
    got = cold.checks(results, "d")["test"]["content_vs_untrained_and_knn"]
    plain = got["sasrec_content"]
    assert plain["holds"] and plain["untrained"] == "sasrec_content@0"
    assert plain["groups"]["overall"]["untrained"] == 0.1  # seeds 1-2 only; all three would average 0.367
    assert plain["groups"]["overall"]["content_knn"] == 0.05  # seeds 1-2 only; all three would average 0.35
    blend = got["sasrec_content+blend"]
    assert not blend["holds"] and not blend["groups"]["cold_item"]["holds"] and blend["groups"]["overall"]["holds"]


def test_cold_start_checks_leave_out_the_repeat_group_only_where_repeat_targets_are_misses() -> None:
    """Under the rankable rule repeat-history's 1.0 on repeats beats the hybrid; under repeat_targets='miss' the
    repeat group is unreachable for every model, listed as such and not counted as held."""
    cold = importlib.import_module("cold_start")
    from modalrec.evaluation.evaluator import EXCLUDE_SEEN_RULE, MASK_REPEATS_RULE

    def run(dataset: str, model: str, overall: float, repeat: float, rule: str) -> dict:
        groups = {"overall": {"n": 10, "ndcg@10": overall, "hr@10": overall},
                  "repeat": {"n": 2, "ndcg@10": repeat, "hr@10": repeat}}
        return {"dataset": dataset, "model": model, "seed": 0, "valid": groups, "test": groups, "candidates": rule}

    results = [run("a", "repeat_history", 0.10, 1.0, EXCLUDE_SEEN_RULE), run("a", "sasrec_hybrid", 0.30, 0.8,
                                                                             EXCLUDE_SEEN_RULE),
               run("b", "repeat_history", 0.0, 0.0, MASK_REPEATS_RULE), run("b", "sasrec_hybrid", 0.25, 0.0,
                                                                            MASK_REPEATS_RULE)]
    rankable, masked = cold.checks(results, "a"), cold.checks(results, "b")
    hybrid = rankable["test"]["hybrid_vs_best"]["sasrec_hybrid"]
    assert "unreachable_groups" not in rankable and not hybrid["holds"] and not hybrid["groups"]["repeat"]["holds"]
    hybrid = masked["test"]["hybrid_vs_best"]["sasrec_hybrid"]
    assert masked["unreachable_groups"] == ["repeat"] and "repeat" not in hybrid["groups"] and hybrid["holds"]


def test_baselines_train_each_model_from_the_data_its_training_kind_names() -> None:
    """baselines_ml100k.train_and_test feeds a model what the pipeline would (counts, pairs or sequence windows),
    and stores every group of the TEST report."""
    import argparse

    from modalrec.models.base import ModelContext
    from modalrec.training.loop import TrainConfig

    base = importlib.import_module("baselines_ml100k")
    split = cyclic_split()
    args = argparse.Namespace(device="cpu")
    tc = TrainConfig(epochs=15, batch_size=64, lr=5e-3, patience=15, progress=False)
    out = {name: base.train_and_test(name, params, split, ModelContext.for_split(split), tc, args)[1]
           for name, params in (("pop", {}), ("lightgcn", {"dim": 16, "n_layers": 1}),
                                ("sasrec", {"dim": 32, "max_len": 10, "dropout": 0.0}))}
    assert out["pop"]["trainable_params"] == 0 and "epochs_run" not in out["pop"]
    assert out["lightgcn"]["epochs_run"] >= 1 and out["lightgcn"]["trainable_params"] > 0
    assert out["sasrec"]["test"]["overall"]["ndcg@10"] > 0.5  # the planted "next item = i + 1" pattern
    assert out["sasrec"]["test"]["overall"]["ndcg@10"] > out["pop"]["test"]["overall"]["ndcg@10"]
    assert {"novel", "hist_5-19"} <= set(out["sasrec"]["test"]) and out["sasrec"]["test_counts"]["novel"] > 0


def test_tgn_benchmark_trains_both_sasrec_baselines_and_reports_every_group() -> None:
    """tgn_ml100k's SASRec baselines (ID and text+image) train on a planted pattern and report the Evaluator's
    groups next to transductive / inductive (the content one once failed on a missing option)."""
    import argparse

    import torch

    from modalrec.data.splits import GROUPS

    tgn = importlib.import_module("tgn_ml100k")
    parser = argparse.ArgumentParser()
    tgn.model_args(parser)
    args = parser.parse_args(["--sasrec-epochs", "1", "--dim", "16"])
    split = cyclic_split()
    gen = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(split.n_items + 1, dim, generator=gen) for m, dim in (("text", 8), ("image", 6))}
    missing = {m: torch.zeros(split.n_items + 1, dtype=torch.bool) for m in feats}
    for kind in ("id", "content"):
        out = tgn.run_sasrec(split, kind, feats, missing, args)
        assert "status" not in out, out
        assert {"transductive", "inductive", *GROUPS} <= set(out["test"])
        assert out["test"]["overall"]["count"] == len(split.test)
        assert out["test"]["repeat"]["count"] + out["test"]["novel"]["count"] == len(split.test)


def test_cold_start_temp_models_wait_as_long_as_their_stored_runs_did() -> None:
    """A learned temperature dips for a few epochs before it trains past its start: `_temp` runs default to the
    patience every stored `_temp` run was made with, the others to 3; --patience overrides both."""
    cold = importlib.import_module("cold_start")
    args = cold.parse_args([])
    stored = json.loads((BENCH / "results" / "cold_start_cpu.json").read_text())["results"]
    temp_runs = [r for r in stored if cold.TEMP in r["model"] and "patience" in r]
    assert temp_runs
    for r in temp_runs:
        assert cold.patience_of(r["dataset"], r["model"], args) == r["patience"], (r["dataset"], r["model"], r["seed"])
    assert cold.config("iisan_scientific_cold10", "sasrec_content_temp", 0, args).train.patience == 10
    assert cold.config("iisan_scientific_cold10", "sasrec_content", 0, args).train.patience == 3
    assert cold.patience_of("unisrec_scientific", "sasrec_hybrid_temp", cold.parse_args(["--patience", "2"])) == 2


def test_cold_start_stores_each_datasets_facts_once_and_gives_every_run_them_back() -> None:
    cold = importlib.import_module("cold_start")
    stored = json.loads((BENCH / "results" / "cold_start_cpu.json").read_text())
    runs = cold.stored_results(stored)
    assert all(f in r for r in runs for f in cold.RUN_FACTS)
    shared, slim = cold.factor_out(runs)
    assert (shared, slim) == (stored["dataset_facts"], stored["results"])
    assert "split" not in shared["iisan_scientific_cold10"]  # its split is the seed's: kept with each run
    assert len({json.dumps(r["split"]) for r in runs if r["dataset"] == "iisan_scientific_cold10"}) == 3


@pytest.mark.parametrize("model", ["sasrec_hybrid_temp_offset_repeat_fused", "sasrec_hybrid_temp_offset_fusedfirst",
                                   "sasrec_hybrid_repeat_fusedfirstknn", "sasrec_hybrid_fusedfirstlex",
                                   "sasrec_hybrid_repeat_newgate_fusedfirstlex"])
def test_cold_start_fusions_choose_the_content_weight_by_the_blend_rule(model: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A late-fusion run trains the hybrid and the content SASRec on one split and keeps the weight of the content
    model that loses no VALID group to the content model alone (weight 1) with the best VALID overall; `_fusedfirst`
    then picks the offset for the fused model (offset 0 first in its sweep)."""
    cold = importlib.import_module("cold_start")
    _add_tiny_dataset(cold, monkeypatch, cold_item_fraction=0.1)
    args = cold.parse_args(["--epochs", "1", "--cache-dir", str(tmp_path / "features")])
    [row] = cold.run_one("tiny", model, 0, args)
    fused = row["fused"]
    sweep = {s["weight"]: s for s in fused["valid_sweep"]}
    alone = sweep[1.0]["groups"]

    def keeps_every_group(s: dict) -> bool:
        return all((s["groups"][g] or 0.0) >= (v or 0.0) for g, v in alone.items())

    assert keeps_every_group(sweep[fused["chosen"]])
    assert sweep[fused["chosen"]]["overall"] == max(s["overall"] for s in sweep.values() if keeps_every_group(s))
    assert row["model"] == model and row["test"]["overall"]["n"] > 0
    if model.endswith((cold.FUSED_FIRST, cold.FUSED_FIRST_KNN, cold.FUSED_FIRST_LEX)):
        assert fused["offset_valid_sweep"][0]["offset"] == 0.0 and ("repeat" in fused) == ("_repeat" in model)
        content = {cold.FUSED_FIRST_KNN: cold.FUSED_KNN_CONTENT, cold.FUSED_FIRST_LEX: cold.FUSED_LEX_CONTENT}
        assert fused["content_model"] == next((c for suffix, c in content.items() if model.endswith(suffix)),
                                              cold.FUSED_CONTENT)
        if model.endswith(cold.FUSED_FIRST_LEX):  # the rule over both similarities, untrained
            assert fused["content_best_epoch"] == 0
            spec = cold.model_spec(cold.FUSED_LEX_CONTENT, cold.datasets(args.data_root)["tiny"], args)
            assert spec["params"]["knn_modalities"] == "text+lexical"
        assert ("new_item_gate" in fused) == (cold.NEW_GATE in model)
        if cold.NEW_GATE in model:  # after the offset: its first candidate is the offset model, the best VALID kept
            gate = fused["new_item_gate"]
            chosen_offset = next(s for s in fused["offset_valid_sweep"] if s["offset"] == fused["offset"])
            assert gate["valid_sweep"][0]["overall"] == pytest.approx(chosen_offset["overall"])
            assert max(s["overall"] for s in gate["valid_sweep"]) == next(
                s["overall"] for s in gate["valid_sweep"] if (s["offset"], s["slope"]) == (gate["offset"], gate["slope"]))
    else:
        assert row["valid"]["overall"]["ndcg@10"] == pytest.approx(sweep[fused["chosen"]]["overall"])


def test_cold_start_recency_knn_keeps_the_decay_with_the_best_valid_overall(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """content_knn_recent runs content-kNN at every decay of KNN_DECAYS and reports the one VALID ranks first; its
    TEST is that run's (the plain mean's TEST when decay 1 wins)."""
    cold = importlib.import_module("cold_start")
    _add_tiny_dataset(cold, monkeypatch)
    args = cold.parse_args(["--cache-dir", str(tmp_path / "features")])
    [row] = cold.run_one("tiny", cold.KNN_RECENT, 0, args)
    sweep = {float(d): v for d, v in row["decay_sweep"].items()}
    assert set(sweep) == set(cold.KNN_DECAYS) and sweep[row["decay"]] == max(sweep.values())
    assert row["config"]["params"]["decay"] == row["decay"]
    assert row["valid"]["overall"]["ndcg@10"] == pytest.approx(sweep[row["decay"]], abs=1e-5)
    [plain] = cold.run_one("tiny", "content_knn", 0, args)
    assert (row["test"] == plain["test"]) == (row["decay"] == 1.0)


def test_cold_start_checks_hold_the_recency_knn_apart_and_the_json_keeps_one_run_a_line(tmp_path: Path) -> None:
    """A content model above content-kNN but below content_knn_recent holds the check as defined and fails the
    recency comparison beside it; the hybrid's rivals leave content_knn_recent out of `best_other`. The stored
    JSON reads back equal with each run on its own line."""
    cold = importlib.import_module("cold_start")

    def run(model: str, overall: float) -> dict:
        groups = {"overall": {"n": 10, "ndcg@10": overall, "hr@10": overall}}
        return {"dataset": "d", "model": model, "seed": 0, "valid": groups, "test": groups}

    results = [run("content_knn", 0.05), run(cold.KNN_RECENT, 0.09), run("sasrec_content@0", 0.06),
               run("sasrec_content", 0.08), run("sasrec_hybrid", 0.085)]
    got = cold.checks(results, "d")["test"]
    content = got["content_vs_untrained_and_knn"]["sasrec_content"]
    assert content["holds"] and not content["holds_vs_knn_recent"]
    assert content["groups"]["overall"][cold.KNN_RECENT] == 0.09
    hybrid = got["hybrid_vs_best"]["sasrec_hybrid"]
    assert hybrid["holds"] and hybrid["groups"]["overall"]["best_other"] == "sasrec_content"
    assert not hybrid["holds_vs_knn_recent"]
    path = tmp_path / "out.json"
    out = {"benchmark": "cold_start", "checks": {"d": got}, "results": results}
    cold._write_json(out, path)
    lines = path.read_text().splitlines()
    assert json.loads(path.read_text()) == out
    assert sum(line.strip().startswith('{"dataset"') for line in lines) == len(results)


def test_cold_gate_bound_ranks_new_items_first_at_each_history_decay(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate puts every item without training events above the rest: a cold-item target then competes with the
    other new items only, so its NDCG@10 can only rise; each decay is its own stored run of content-kNN."""
    cold, gate = importlib.import_module("cold_start"), importlib.import_module("cold_gate_bound")
    _add_tiny_dataset(cold, monkeypatch, cold_item_fraction=0.2)
    args = gate.parse_args(["--cache-dir", str(tmp_path / "features"), "--decays", "1.0", "0.1"])
    runs = {gate.stored_name("content_knn", d): gate.bound("tiny", "content_knn", args, d) for d in args.decays}
    assert set(runs) == {"content_knn", f"{cold.KNN_RECENT}_0.1"}
    assert "decay" not in runs["content_knn"] and runs[f"{cold.KNN_RECENT}_0.1"]["decay"] == 0.1
    for run in runs.values():
        assert run["items_without_training_events"] > 0 and run["test"]["events"]["cold_item"] > 0
        for part in ("valid", "test"):
            assert run[part]["new_items_first"]["cold_item"] >= run[part]["plain"]["cold_item"]
        assert run["test"]["new_items_first"]["cold_item"] > run["test"]["plain"]["cold_item"]
        assert run["test"]["new_items_first"]["warm"] < run["test"]["plain"]["warm"]  # below every new item
    assert runs["content_knn"]["valid"]["plain"] != runs[f"{cold.KNN_RECENT}_0.1"]["valid"]["plain"]


def test_cold_gate_bound_modalities_add_exact_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--modalities text+lexical runs content-kNN over the sentence-encoder stand-in and the TF-IDF n-grams: its own
    stored entry (name@modalities, modalities recorded), a different ranking from the text-only run."""
    cold, gate = importlib.import_module("cold_start"), importlib.import_module("cold_gate_bound")
    _add_tiny_dataset(cold, monkeypatch, cold_item_fraction=0.2)
    args = gate.parse_args(["--cache-dir", str(tmp_path / "features"), "--modalities", "text+lexical"])
    both = gate.bound("tiny", "content_knn", args, 0.5, "text+lexical")
    text = gate.bound("tiny", "content_knn", args, 0.5)
    assert gate.stored_name("content_knn", 0.5, "text+lexical") == f"{cold.KNN_RECENT}_0.5@text+lexical"
    assert both["modalities"] == "text+lexical" and "modalities" not in text
    assert both["valid"]["plain"] != text["valid"]["plain"]
    assert both["test"]["new_items_first"]["cold_item"] >= both["test"]["plain"]["cold_item"]


def test_cold_gate_bound_learned_gate_is_chosen_on_valid_and_never_loses_valid(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--learned-gate adds the VALID-fitted new-item gate next to the perfect one: its VALID overall is at least the
    plain model's (offset 0 and slope 0 are candidates), its fit and choice are recorded, TEST evaluated once."""
    cold, gate = importlib.import_module("cold_start"), importlib.import_module("cold_gate_bound")
    _add_tiny_dataset(cold, monkeypatch, cold_item_fraction=0.2)
    args = gate.parse_args(["--cache-dir", str(tmp_path / "features"), "--learned-gate"])
    run = gate.bound("tiny", "content_knn", args, 0.5)
    assert run["valid"]["learned_gate"]["overall"] >= run["valid"]["plain"]["overall"] - 1e-12
    choice = run["learned_gate"]
    assert choice["fit"]["valid_events"] == run["valid"]["events"]["overall"] and choice["slope"] >= 0
    assert set(run["test"]["learned_gate"]) == set(gate.GROUPS)
    plain = gate.bound("tiny", "content_knn", gate.parse_args(["--cache-dir", str(tmp_path / "features")]), 0.5)
    assert "learned_gate" not in plain and "learned_gate" not in plain["test"]
