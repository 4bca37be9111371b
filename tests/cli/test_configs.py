"""Every shipped config names real keys, models, towers and files (paths read against the shared data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modalrec.config import from_dict, load_file
from modalrec.config_keys import check_keys
from modalrec.experiment import ExperimentConfig
from modalrec.validation import check_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _relocated(node: object, shared: Path) -> object:
    """Paths are written relative to the project root (../shared/data); point them at the fixture's folder."""
    if isinstance(node, dict):
        return {k: _relocated(v, shared) for k, v in node.items()}
    if isinstance(node, str) and node.startswith("../shared/data"):
        return str(shared) + node.removeprefix("../shared/data")
    return node


def test_a_config_for_every_shared_dataset(shared_data: Path) -> None:
    used = {re.search(r"\.\./shared/data/([\w.-]+)", p.read_text()).group(1) for p in CONFIGS}  # type: ignore[union-attr]
    assert used == {d.name for d in shared_data.iterdir() if d.is_dir()}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid(path: Path, shared_data: Path) -> None:
    data = _relocated(load_file(path), shared_data)
    check_keys(data)
    checked = check_experiment(from_dict(ExperimentConfig, data))
    assert checked.modalities  # every shipped config shows a content model
