"""ItemTable: per-item text fields, image path and launch time, aligned with the item vocabulary (row 0 = PAD)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modalrec.data.vocab import Vocabulary
from modalrec.errors import DataError


@dataclass
class ItemTable:
    """Content of every item. `fields[name][i]` is item index i's value ("" when absent; row 0 is PAD).

    Image paths are stored as given by the source (absolute, or relative to `image_root`).
    `launch_ts[i]` is item i's launch time in unix seconds from the source's metadata (a release date, a
    `launch` column), None when the source does not say; data/item_age.py combines it with the log.
    """

    vocab: Vocabulary
    fields: dict[str, list[str]] = field(default_factory=dict)
    image_paths: list[str | None] = field(default_factory=list)
    image_root: str | None = None
    launch_ts: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.vocab)
        if not self.image_paths:
            self.image_paths = [None] * n
        for name, values in self.fields.items():
            if len(values) != n:
                raise DataError(f"item field has {len(values)} rows, vocabulary has {n}", field=name)
        if len(self.image_paths) != n:
            raise DataError(f"{len(self.image_paths)} image paths for {n} vocabulary rows", field="image")
        if not self.launch_ts:
            self.launch_ts = [None] * n
        if len(self.launch_ts) != n:
            raise DataError(f"{len(self.launch_ts)} launch times for {n} vocabulary rows", field="launch_ts")

    @classmethod
    def from_records(
        cls,
        vocab: Vocabulary,
        records: Mapping[str, Mapping[str, object]],
        text_fields: Sequence[str],
        image_field: str | None = None,
        image_root: str | None = None,
        launch_field: str | None = None,
    ) -> ItemTable:
        """Build from {raw_id: {field: value}}; items of the vocabulary with no record get empty content.
        `launch_field` names the record key holding the launch time (int unix seconds or None)."""
        fields = {name: [""] * len(vocab) for name in text_fields}
        images: list[str | None] = [None] * len(vocab)
        launch: list[int | None] = [None] * len(vocab)
        for raw, rec in records.items():
            idx = vocab.get(raw)
            if idx == 0:
                continue
            for name in text_fields:
                value = rec.get(name)
                fields[name][idx] = "" if value is None else str(value)
            if image_field is not None and rec.get(image_field):
                images[idx] = str(rec[image_field])
            if launch_field is not None and rec.get(launch_field) is not None:
                launch[idx] = int(rec[launch_field])  # type: ignore[call-overload]
        return cls(vocab, fields, images, image_root, launch)

    @property
    def n_items(self) -> int:
        return self.vocab.size

    @property
    def field_names(self) -> list[str]:
        return list(self.fields)

    def record(self, idx: int) -> dict[str, str]:
        return {name: values[idx] for name, values in self.fields.items()}

    def text(self, idx: int, template: str | None = None) -> str:
        """Item text. `template` uses str.format fields, e.g. "Title: {title}. Genres: {genres}."
        Without a template, non-empty fields are joined as "name: value" pairs.
        """
        rec = self.record(idx)
        if template is not None:
            try:
                return template.format(**rec).strip()
            except KeyError as exc:
                raise DataError(f"template names unknown item field {exc.args[0]!r}; have {self.field_names}") from None
        return ". ".join(f"{k}: {v.strip().rstrip('.')}" for k, v in rec.items() if v.strip()).strip()

    def texts(self, template: str | None = None) -> list[str]:
        """Texts for indices 0..n (index 0, PAD, is the empty string)."""
        return [""] + [self.text(i, template) for i in range(1, len(self.vocab))]

    def image_path(self, idx: int) -> str | None:
        p = self.image_paths[idx]
        if p is None:
            return None
        if self.image_root and not p.startswith("/"):
            return f"{self.image_root.rstrip('/')}/{p}"
        return p

    def extended(self, records: Mapping[str, Mapping[str, object]], image_field: str | None = None,
                 launch_ts: int | None = None) -> ItemTable:
        """A table with new items appended (ids must be new); existing rows unchanged. `launch_ts` is the new
        items' launch time (e.g. when they were added to a served catalogue)."""
        new_ids = [str(r) for r in records]
        clash = [r for r in new_ids if r in self.vocab]
        if clash:
            raise DataError(f"items already exist: {clash[:5]}")
        vocab = self.vocab.extended(new_ids)
        fields = {name: list(values) for name, values in self.fields.items()}
        images = list(self.image_paths)
        for raw in new_ids:
            rec = records[raw]
            for name, column in fields.items():
                value = rec.get(name)
                column.append("" if value is None else str(value))
            images.append(str(rec[image_field]) if image_field and rec.get(image_field) else None)
        return ItemTable(vocab, fields, images, self.image_root, [*self.launch_ts, *[launch_ts] * len(new_ids)])

    def content_hash(self, idx: int) -> str:
        """Hash of one item's content (text fields + image path), used to detect stale features."""
        h = hashlib.sha256()
        for name, values in self.fields.items():
            h.update(name.encode() + b"=" + values[idx].encode() + b"\x00")
        h.update((self.image_paths[idx] or "").encode())
        return h.hexdigest()[:16]
