"""Checkpoints: round trip, tied weights, atomic replacement, optimizer state without pickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from train_testdata import context, cyclic_split

from modalrec.errors import MismatchError
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.training.checkpoint import (
    bytes_to_tensors,
    load_state,
    optimizer_from_parts,
    optimizer_to_parts,
    read_config,
    read_extra,
    save_checkpoint,
    tensors_to_bytes,
)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight  # tied
        self.register_buffer("table", torch.arange(12.0).reshape(4, 3))
        self.register_buffer("row", self.table[1])  # a view into another buffer's storage


def test_round_trip_config_extra_and_dataclass_config(tmp_path: Path) -> None:
    split = cyclic_split(n_items=12, n_users=6)
    cfg = SASRecConfig(dim=8, n_layers=1, max_len=6)
    model = SASRec.build(cfg, context(split, seed=3))
    out = save_checkpoint(tmp_path / "m", model, cfg, {"metrics": {"ndcg@10": 0.25}, "manifest": {"seed": 3}})
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "manifest.json",
        "metrics.json",
        "model.safetensors",
    ]
    conf = read_config(out)
    assert (
        conf["model_class"] == "SASRec"
        and conf["config"]["dim"] == 8
        and conf["config"]["tower"]["kind"] == "id"
    )
    assert read_extra(out, "metrics") == {"ndcg@10": 0.25}
    fresh = load_state(out, SASRec.build(cfg, context(split, seed=4)))
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True)
    )
    assert b"pickle" not in (out / "model.safetensors").read_bytes()[:2000]


def test_tied_and_shared_storage_tensors(tmp_path: Path) -> None:
    a = Tied()
    with torch.no_grad():
        a.emb.weight.mul_(2.0)
    save_checkpoint(tmp_path / "t", a, {"model": "tied"})
    b = load_state(tmp_path / "t", Tied())
    assert torch.equal(b.emb.weight, a.emb.weight)
    assert b.out.weight is b.emb.weight  # still tied after loading
    assert torch.equal(b.row, a.table[1])
    tensors, meta = bytes_to_tensors(tensors_to_bytes(a.state_dict(), {"k": "v"}))
    assert meta == {"k": "v"} and set(tensors) == set(a.state_dict())


def test_failed_save_keeps_the_old_checkpoint(tmp_path: Path) -> None:
    a, b = Tied(), Tied()
    with torch.no_grad():
        b.emb.weight.add_(1.0)
    save_checkpoint(tmp_path / "c", a, {"v": 1})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c", b, {"v": 2}, {"metrics": {"bad": object()}})  # not JSON
    assert read_config(tmp_path / "c")["config"] == {"v": 1}
    assert torch.equal(load_state(tmp_path / "c", Tied()).emb.weight, a.emb.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary directory left behind
    save_checkpoint(tmp_path / "c", b, {"v": 2})  # replacing works
    assert read_config(tmp_path / "c")["config"] == {"v": 2}


def test_mismatch_names_the_offending_key(tmp_path: Path) -> None:
    split = cyclic_split(n_items=12, n_users=6)
    save_checkpoint(tmp_path / "s", SASRec.build(SASRecConfig(dim=8, n_layers=1), context(split)), {})
    with pytest.raises(
        MismatchError, match=r"shape of blocks.0.ffn.0.bias: checkpoint \(32,\) vs model \(64,\)"
    ):
        load_state(tmp_path / "s", SASRec.build(SASRecConfig(dim=16, n_layers=1), context(split)))
    with pytest.raises(MismatchError, match=r"missing \['blocks.1."):
        load_state(tmp_path / "s", SASRec.build(SASRecConfig(dim=8, n_layers=2), context(split)))


def test_optimizer_state_round_trip_continues_identically() -> None:
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.8, 0.95))

    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    m1, o1 = make()
    for _ in range(3):
        o1.zero_grad()
        m1(x).pow(2).mean().backward()
        o1.step()
    tensors, payload = optimizer_to_parts(o1)
    tensors, _ = bytes_to_tensors(tensors_to_bytes(tensors))  # through safetensors bytes
    m2, o2 = make()
    m2.load_state_dict(m1.state_dict())
    optimizer_from_parts(o2, tensors, payload)
    assert o2.param_groups[0]["betas"] == (0.8, 0.95)
    for m, o in ((m1, o1), (m2, o2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=True))
