"""Bring your own data: files as a shop or a benchmark ships them, one config file, and the CLI from
`data inspect` to `recommend`, with no code in between."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modalrec.cli.main import main

CONFIG = """\
name: byod
output_dir: runs
data:
  source: table
  options:
    train_path: shop/train.tsv
    valid_path: shop/dev.tsv
    test_path: shop/test.tsv
    user_col: user_id
    item_col: item_id
    time_col: timestamp
    parse_dates: true
    item_map_path: shop/asin2index.tsv
    item_map_columns: [asin, item_id]
    items_path: shop/text.tsv
    item_columns: [asin, title]
    item_id_col: asin
    text_cols: [title]
    image_root: shop/images
    image_template: "{id:.3}/{id}.jpg"
split: {kind: presplit}
features: {text: "hashing:64", image: stats, template: "{title}", cache_dir: cache}
model: {name: sasrec, params: {dim: 16, n_layers: 1, max_len: 8, tower: {kind: text+image, fusion: gated}}}
train: {epochs: 2, batch_size: 32, progress: false}
eval: {ks: [5, 10]}
"""


def make_shop(root: Path, n_users: int = 40, n_items: int = 30) -> None:
    """Users walk the catalogue in steps of one (learnable order); asins map to 1-based item indices; items
    0..n-3 have a photo, the last two none; the last test events use an item no one trained on."""
    from PIL import Image

    rng = np.random.default_rng(0)
    shop = root / "shop"
    (shop / "images").mkdir(parents=True)
    asins = [f"B0{i:08d}" for i in range(n_items)]
    (shop / "asin2index.tsv").write_text("".join(f"{a}\t{i + 1}\n" for i, a in enumerate(asins)))
    (shop / "text.tsv").write_text("".join(f"{a}\tItem {i} of colour {i % 5}\n" for i, a in enumerate(asins)))
    for i, a in enumerate(asins[:-2]):
        path = shop / "images" / a[:3] / f"{a}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    header = "user_id\titem_id\ttimestamp\n"
    parts = {"train": [], "dev": [], "test": []}
    for u in range(n_users):
        start = int(rng.integers(0, n_items - 2))
        seq = [(start + k) % (n_items - 1) + 1 for k in range(8)]  # item n_items stays out of training
        if u % 10 == 0:
            seq[-1] = n_items  # a cold item in TEST
        days = [f"2024-01-{d + 1:02d}" for d in range(8)]
        rows = [f"user{u:03d}\t{i}\t{d}\n" for i, d in zip(seq, days)]
        parts["train"] += rows[:6]
        parts["dev"].append(rows[6])
        parts["test"].append(rows[7])
    parts["test"].append("newcomer\t3\t2024-01-09\n")  # a cold user
    for name, rows in parts.items():
        (shop / f"{name}.tsv").write_text(header + "".join(rows))


def test_files_to_recommendations_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    make_shop(tmp_path)
    (tmp_path / "shop.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)

    assert main(["data", "inspect", "-c", "shop.yaml"]) == 0
    out = capsys.readouterr().out
    assert "shop (table): 41 users, 30 items with events" in out
    assert "2024-01-01 00:00 .. 2024-01-09 00:00" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert rows["VALID"] == ["40", "0", "(0.0%)", "0", "(0.0%)"]
    assert rows["TEST"] == ["41", "4", "(9.8%)", "1", "(2.4%)"]  # 4 of 41 targets never trained on, 1 new user
    assert "2 of 30 items without image" in out and "0 of 30 items without text" in out
    assert not (tmp_path / "cache").exists()  # inspect encodes nothing

    assert main(["train", "-c", "shop.yaml"]) == 0
    capsys.readouterr()
    manifest = json.loads((tmp_path / "runs" / "byod" / "manifest.json").read_text())
    assert manifest["split"]["test"]["cold_item"] == 4 and manifest["split"]["test"]["cold_user"] == 1
    assert manifest["dataset"]["presplit_rows"] == {"train": 240, "valid": 40, "test": 41}

    assert main(["export", "--run", "runs/byod", "--out", "artifact"]) == 0
    assert main(["recommend", "--artifact", "artifact", "--history", "3,4,5", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert all(line.lstrip()[0] in "123" and "Item " in line for line in lines), lines
    assert main(["recommend", "--artifact", "artifact", "--user", "user001", "-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
