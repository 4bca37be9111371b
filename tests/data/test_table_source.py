"""The `table` source on the layouts real datasets ship: presplit files, header-less files, an id map between
the item table and the interactions, images named after the item id, date strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalrec.data.sources import load_table
from modalrec.data.splits import from_presplit
from modalrec.errors import ConfigError, DataError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def amazon_layout(root: Path) -> dict:
    """train / dev / test TSVs over item indices, an asin -> index map, asin -> title, images by asin."""
    write(root / "train.tsv", "u1\t1\t2024-01-01\nu1\t2\t2024-01-02\nu2\t2\t2024-01-01\nu2\t3\t2024-01-03\n")
    write(root / "dev.tsv", "u1\t3\t2024-01-05\nu2\t1\t2024-01-06\n")
    write(root / "test.tsv", "u1\t4\t2024-01-07\nu3\t1\t2024-01-08\n")
    write(root / "asin2index.tsv", "B000A\t1\nB000B\t2\nB000C\t3\nB000D\t4\n")
    write(root / "text.tsv", "B000A\tRed pen\nB000C\tBlue ink\nB000B\tPad\nB999Z\tunsold\n")
    for asin in ("B000A", "B000C"):
        write(root / "images" / asin[:3] / f"{asin}.jpg", "jpeg")
    return {"train_path": root / "train.tsv", "valid_path": root / "dev.tsv", "test_path": root / "test.tsv",
            "columns": ["user", "item", "date"], "user_col": "user", "item_col": "item", "time_col": "date",
            "parse_dates": True, "items_path": root / "text.tsv", "item_columns": ["asin", "title"],
            "item_id_col": "asin", "text_cols": ["title"], "item_map_path": root / "asin2index.tsv",
            "item_map_columns": ["asin", "item"], "image_root": root / "images", "image_template": "{id:.3}/{id}.jpg"}


def test_presplit_files_with_id_map_template_images_and_dates(tmp_path: Path) -> None:
    ds = load_table(**amazon_layout(tmp_path))
    assert ds.summary["presplit_rows"] == {"train": 4, "valid": 2, "test": 2}
    split = from_presplit(ds.interactions, ds.presplit["valid_rows"], ds.presplit["test_rows"])
    vocab = ds.item_vocab.raw
    assert len(split.train) == 4 and len(split.valid) == 2 and len(split.test) == 2
    u1 = ds.user_vocab.index("u1")
    (e,) = [i for i in range(len(split.test)) if split.test.user[i] == u1]
    assert vocab(int(split.test.target[e])) == "4"
    assert [vocab(int(i)) for i in split.test.history(e)] == ["1", "2", "3"]  # train + dev events, by date
    assert split.test.cold_item.tolist() == [True, False] or split.test.cold_item.tolist() == [False, True]
    assert bool(split.test.cold_user[next(i for i in range(2) if i != e)])  # u3 never trained
    assert ds.interactions.ts.min() == 1704067200  # 2024-01-01 UTC
    # item text reached through the map; B999Z is not in the map
    assert ds.items.record(ds.item_vocab.index("3")) == {"title": "Blue ink"}
    assert ds.items.record(ds.item_vocab.index("4")) == {"title": ""}
    assert ds.items.image_path(ds.item_vocab.index("1")) == f"{tmp_path / 'images'}/B00/B000A.jpg"
    assert ds.items.image_path(ds.item_vocab.index("2")) is None  # no file: counted as an item without image
    assert ds.summary["items_with_image"] == 2 and ds.summary["items_with_text"] == 3
    assert any("B999Z" not in n and "left out" in n for n in ds.summary["notes"])


def test_string_ids_stay_strings_and_order_is_the_clock(tmp_path: Path) -> None:
    write(tmp_path / "log.csv", "customer,article\n007,0111565001\n7,0111565001\n007,0222\n")
    ds = load_table(tmp_path / "log.csv", "customer", "article")
    assert ds.user_vocab.raw_ids == ["007", "7"] and "0111565001" in ds.item_vocab
    assert ds.summary["time"] == "order"


def test_template_without_item_table_uses_the_interaction_id(tmp_path: Path) -> None:
    write(tmp_path / "tx.csv", "t_dat,customer_id,article_id\n2020-09-01,c1,0111565001\n2020-09-02,c1,0222333001\n")
    write(tmp_path / "images" / "011" / "0111565001.jpg", "jpeg")
    ds = load_table(tmp_path / "tx.csv", "customer_id", "article_id", "t_dat", date_format="%Y-%m-%d",
                    image_root=tmp_path / "images", image_template="{id:.3}/{id}.jpg")
    assert ds.items.image_path(ds.item_vocab.index("0111565001")).endswith("images/011/0111565001.jpg")
    assert ds.items.image_path(ds.item_vocab.index("0222333001")) is None
    assert ds.interactions.ts.tolist() == [1598918400, 1599004800]


@pytest.mark.parametrize("change, error, named", [
    ({"test_path": None}, ConfigError, "missing ['test_path']"),
    ({"path": "x.tsv"}, ConfigError, "either path"),
    ({"image_col": "img"}, ConfigError, "image_col or image_template"),
    ({"image_template": "{asin}/{id}.jpg", "item_columns": ["asin", "title"]}, ConfigError, "names 'asin'"),
])
def test_bad_options_are_named(tmp_path: Path, change: dict, error: type, named: str) -> None:
    opts = {**amazon_layout(tmp_path), **change}
    with pytest.raises(error) as err:
        load_table(**opts)
    assert named in str(err.value)


@pytest.mark.parametrize("fname, text, line, field", [
    ("dev.tsv", "u1\t3\t2024-01-05\nu2\t9\t2024-01-06\n", "line 2", "'item'"),  # index not in the map
    ("dev.tsv", "u1\t3\t2024-13-45\n", "line 1", "'date'"),  # not a date
    ("test.tsv", "u1\t4\t2024-01-07\tx\n", "line 1", None),  # an extra field in a header-less file
    ("asin2index.tsv", "B000A\t1\nB000B\t1\n", "line 2", "'item'"),  # two asins on one index
])
def test_malformed_files_name_file_line_field(tmp_path: Path, fname: str, text: str, line: str,
                                             field: str | None) -> None:
    opts = amazon_layout(tmp_path)
    write(tmp_path / fname, text)
    with pytest.raises(DataError) as err:
        load_table(**opts)
    message = str(err.value)
    assert fname in message and line in message and (field is None or field in message), message
