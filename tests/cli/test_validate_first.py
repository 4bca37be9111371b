"""The whole config is checked before data is read or features are encoded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modalrec import config_keys
from modalrec.config import from_dict
from modalrec.errors import ConfigError
from modalrec.experiment import ExperimentConfig
from modalrec.pipeline import run_experiment
from modalrec.validation import check_experiment

SRC = Path(__file__).resolve().parents[2] / "src"


def _cfg(**sections: dict) -> ExperimentConfig:
    base = {"data": {"source": "synthetic", "options": {"n_users": 60, "n_items": 40, "avg_seq_len": 6}},
            "model": {"name": "sasrec", "params": {"dim": 16, "max_len": 8}}, "train": {"epochs": 1, "progress": False},
            "eval": {"ks": [10]}}
    return from_dict(ExperimentConfig, {**base, **sections})


@pytest.mark.parametrize("sections, named", [
    ({"model": {"name": "sasrec", "params": {"max_lenn": 5}}}, "model.params.max_lenn; valid: ['age', 'age_input', 'age_personal', 'age_start'"),
    ({"model": {"name": "sasrek"}}, "unknown model 'sasrek'; available: ["),
    ({"model": {"name": "sasrec", "params": {"tower": {"kind": "txt"}}}}, "model.params.tower.kind: unknown item tower 'txt'"),
    ({"model": {"name": "gru4rec", "params": {"tower": {"kind": "text", "fusion": "concat"}}},
      "features": {"text": "hashing"}}, "model.params.tower.fusion: unknown fusion 'concat'; available: ["),
    ({"train": {"monitor": "ndcg@20"}}, "train.monitor: 'ndcg@20' is not computed with eval.ks=[10]"),
    ({"train": {"monitor": "cold/ndcg@10"}}, "train.monitor: unknown group 'cold' in 'cold/ndcg@10'"),
    ({"data": {"source": "table", "options": {"path": "nowhere.tsv", "user_col": "u", "item_col": "i"}}},
     "data.options.path: nowhere.tsv does not exist"),
    ({"data": {"source": "movielens", "options": {"dir": "x"}}}, "unknown option(s) ['dir'] for source 'movielens'"),
    ({"model": {"name": "sasrec", "params": {"tower": {"kind": "text"}}}}, "features.text is not set"),
    ({"eval": {"ks": [10], "exclude_seen": False, "repeat_targets": "miss"}},
     "eval.repeat_targets='miss' masks a repeat target with the rest of the history; it needs eval.exclude_seen"),
    ({"select": {"new_item_offset": True}}, "select.new_item_offset: model 'sasrec' with tower 'id' cannot score items"),
    pytest.param({"train": {"epochs": 1, "device": "cuda"}}, "train.device='cuda', but torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
])
def test_bad_config_is_named(sections: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        check_experiment(_cfg(**sections))
    assert named in str(err.value)


def test_a_group_metric_may_be_monitored() -> None:
    check_experiment(_cfg(train={"monitor": "cold_item/ndcg@10"}))


def test_models_without_content_skip_encoding(tmp_path: Path) -> None:
    cache = tmp_path / "features"
    cfg = _cfg(model={"name": "pop"}, features={"text": "hashing", "cache_dir": str(cache)})
    assert check_experiment(cfg).modalities == frozenset()
    run_experiment(cfg, write=False)
    assert not cache.exists()
    text_only = _cfg(model={"name": "sasrec", "params": {"dim": 16, "max_len": 8, "tower": {"kind": "text"}}},
                     features={"text": "hashing", "image": "stats", "cache_dir": str(cache)})
    run_experiment(text_only, write=False)
    assert [p.name.endswith("-hashing-none") for p in cache.iterdir()] == [True]  # the image was not encoded


def test_unknown_model_parameter_fails_fast_from_the_cli(tmp_path: Path) -> None:
    """Before any data is read: the interactions file here is malformed, and the text encoder would be slow."""
    (tmp_path / "events.tsv").write_text("user\titem\n")
    (tmp_path / "cfg.yaml").write_text(
        "data: {source: table, options: {path: events.tsv, user_col: user, item_col: item}}\n"
        "features: {text: minilm}\n"
        "model: {name: sasrec, params: {dim: 32, max_lenn: 20}}\n")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "modalrec", "train", "-c", "cfg.yaml"], check=False, cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""}, timeout=60)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr
    assert "model.params.max_lenn" in proc.stderr and "'max_len'" in proc.stderr
    assert elapsed < 10.0, f"took {elapsed:.2f} s"  # a bound on interpreter start, not a benchmark: encoding MiniLM alone takes longer


def _real_fields(cls: type) -> dict:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        nested = [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)]
        out[f.name] = _real_fields(nested[0]) if nested else None
    return out


def _read_fields(cls: tuple[str, str]) -> dict:
    return {k: _read_fields(v) if v else None for k, v in config_keys.fields(*cls).items()}


def test_key_names_read_from_source_match_the_dataclasses() -> None:
    from modalrec.models import MODELS

    assert _read_fields(config_keys.ROOT) == _real_fields(ExperimentConfig)
    assert sorted(config_keys.model_configs()) == sorted(MODELS)
    for name, (_, cfg_cls) in MODELS.items():
        assert _read_fields(config_keys.model_configs()[name]) == _real_fields(cfg_cls), name


def test_key_check_names_the_first_bad_key() -> None:
    config_keys.check_keys({"model": {"name": "gru4rec", "params": {"tower": {"kind": "text"}}}, "train": {"lr": 1}})
    for data, named in [({"trian": {}}, "unknown config key(s) trian; valid: ['data', 'eval'"),
                        ({"train": {"learning_rate": 1}}, "train.learning_rate; valid: ["),
                        ({"model": {"params": {"tower": {"knd": "id"}}}}, "model.params.tower.knd; valid: ['dropout'"),
                        ({"model": {"name": "nope"}}, "model.name: unknown model 'nope'")]:
        with pytest.raises(ConfigError) as err:
            config_keys.check_keys(data)
        assert named in str(err.value)


def test_exact_words_alone_do_not_feed_a_text_or_image_tower() -> None:
    """features.lexical is for the similarity rules that name it; a tower reading "whichever of text / image" still
    needs one of those (caught before any data is read)."""
    hybrid = {"name": "sasrec", "params": {"dim": 16, "max_len": 8, "tower": {"kind": "hybrid"}}}
    with pytest.raises(ConfigError, match="features.text is not set"):
        check_experiment(_cfg(model=hybrid, features={"lexical": "hashing:64"}))
    assert check_experiment(_cfg(model=hybrid, features={"text": "hashing", "lexical": "hashing:64"})).modalities
    rule = {"name": "content_knn", "params": {"modalities": "lexical"}}
    assert check_experiment(_cfg(model=rule, features={"lexical": "hashing:64"})).modalities == frozenset({"lexical"})
