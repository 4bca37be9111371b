"""Data sources: one loader per format, each returning a `modalrec.data.dataset.Dataset`.

    load_recbole(directory, name, ...)           RecBole atomic files, incl. the pre-split UniSRec form
    load_table(path, user_col, item_col, ...)    CSV / TSV / Parquet with a column mapping
    load_movielens(directory, ...)               MovieLens 100K (+ TMDB plots, posters)
    load_amazon_iisan(users_tsv, items_tsv, ...) the IISAN Amazon TSVs
    load_amazon_json(reviews, meta, image_dir)   Amazon 2018 / 2014 reviews + metadata json(.gz)
    synthetic.generate(...)                      the built-in multimodal dataset

`load_dataset(kind, **kwargs)` dispatches through the explicit `LOADERS` table below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modalrec.data.dataset import Dataset
from modalrec.data.sources.amazon_iisan import load_amazon_iisan
from modalrec.data.sources.amazon_json import load_amazon_json
from modalrec.data.sources.movielens import load_movielens
from modalrec.data.sources.recbole import load_recbole
from modalrec.data.sources.tabular import load_table
from modalrec.errors import ConfigError


def load_synthetic(**kwargs: Any) -> Dataset:
    """The built-in generator (imported on use)."""
    from modalrec.data.sources.synthetic import generate

    return generate(**kwargs)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "recbole": load_recbole,
    "table": load_table,
    "movielens": load_movielens,
    "amazon_iisan": load_amazon_iisan,
    "amazon_json": load_amazon_json,
    "synthetic": load_synthetic,
}


def load_dataset(kind: str, **kwargs: Any) -> Dataset:
    """Call the loader registered as `kind` in LOADERS with `kwargs`."""
    try:
        loader = LOADERS[kind]
    except KeyError:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose one of {sorted(LOADERS)}") from None
    return loader(**kwargs)


__all__ = [
    "LOADERS",
    "load_amazon_iisan",
    "load_amazon_json",
    "load_dataset",
    "load_movielens",
    "load_recbole",
    "load_synthetic",
    "load_table",
]
