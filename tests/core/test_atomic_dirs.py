"""Directory swaps (modalrec.io): a finished temporary directory replaces the old one with renames, and a
swap interrupted between its two renames leaves the old copy where readers and writers find it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from modalrec.io import restore_dir, surviving_dir, swap_dir, temp_dir_beside


def _write(directory: Path, text: str) -> None:
    (directory / "x.txt").write_text(text)


def test_swap_replaces_the_directory_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    final = tmp_path / "store"
    for text in ("one", "two"):
        tmp = temp_dir_beside(final)
        _write(tmp, text)
        swap_dir(tmp, final)
        assert (final / "x.txt").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_an_interrupted_swap_is_found_and_restored(tmp_path: Path) -> None:
    final = tmp_path / "store"
    final.mkdir()
    _write(final, "old")
    os.rename(final, tmp_path / ".store.old-1234")  # the first rename of a swap, then a crash
    assert surviving_dir(final) == tmp_path / ".store.old-1234"
    restore_dir(final)
    assert (final / "x.txt").read_text() == "old" and surviving_dir(final) == final


def test_checkpoints_read_through_an_interrupted_swap(tmp_path: Path) -> None:
    from modalrec.training.checkpoint import load_state, read_config, save_checkpoint

    model = torch.nn.Linear(2, 3)
    save_checkpoint(tmp_path / "m", model, {"dim": 2})
    os.rename(tmp_path / "m", tmp_path / ".m.old-abcd")  # a second save got as far as moving it aside
    assert read_config(tmp_path / "m")["config"] == {"dim": 2}
    other = torch.nn.Linear(2, 3)
    load_state(tmp_path / "m", other)
    assert torch.equal(other.weight, model.weight)
