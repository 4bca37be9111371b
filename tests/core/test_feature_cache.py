"""The feature cache of a run is keyed by everything that changes the stored vectors, the text template included.

Changing `features.template` must encode into a new cache directory (not fail on the old one with a mismatch
that no option clears), and the vectors must follow the template.
"""

from __future__ import annotations

from pathlib import Path

import torch

from modalrec.experiment import DataConfig, FeaturesConfig
from modalrec.pipeline import load_data, load_features


def _features(cache: Path, template: str | None) -> torch.Tensor:
    ds = load_data(DataConfig(source="synthetic", options={"n_users": 20, "n_items": 15, "seed": 0}))
    values, _ = load_features(ds, FeaturesConfig(text="hashing", template=template, cache_dir=str(cache)))
    return values["text"]


def test_changing_the_template_encodes_a_new_cache(tmp_path: Path) -> None:
    titles = _features(tmp_path, "{title}")
    full = _features(tmp_path, "{title}. {description}")  # main raised MismatchError here
    assert not torch.equal(titles, full)
    assert torch.equal(_features(tmp_path, "{title}"), titles)  # the first cache is still there and reused
    assert not torch.equal(_features(tmp_path, None), titles)  # the default template is another text again
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3


def test_export_copies_the_cache_the_run_encoded(tmp_path: Path) -> None:
    """The artifact's features come from the run's own cache directory (the one key for both)."""
    from modalrec.config import from_dict
    from modalrec.experiment import ExperimentConfig
    from modalrec.features.store import FeatureStore
    from modalrec.pipeline import feature_cache_dir, run_experiment
    from modalrec.serving.artifact import export_artifact

    cfg = from_dict(ExperimentConfig, {
        "name": "tmpl", "seed": 0, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "synthetic", "options": {"n_users": 20, "n_items": 15}},
        "features": {"text": "hashing", "template": "{title}", "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "sasrec", "params": {"dim": 8, "n_layers": 1, "n_heads": 1, "max_len": 5,
                                               "tower": {"kind": "text"}}},
        "train": {"epochs": 1, "batch_size": 16, "progress": False},
    })
    run = run_experiment(cfg)
    ds = load_data(from_dict(ExperimentConfig, run.manifest["config"]).data)
    cache = feature_cache_dir(ds, cfg.features)
    art = export_artifact(run, tmp_path / "artifact")
    exported = FeatureStore.open(art / "features", ds.item_vocab)
    assert exported.encoder_info("text")["template"] == "{title}"
    assert torch.equal(exported.tensors()[0]["text"], FeatureStore.open(cache, ds.item_vocab).tensors()[0]["text"])
