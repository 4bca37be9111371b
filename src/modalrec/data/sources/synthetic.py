"""The built-in multimodal dataset: a deterministic, seeded simulation of a small shop.

How the data is made (each step has its own seeded generator, see `modalrec.seeding`):

1. **Catalogue.** Every item has latent attributes (category, colour, material, style, price band), a
   brand (brands lean towards one style), a price inside its band, a hidden popularity and a launch
   time. A share `launch_fraction` of items launches during the timeline (uniformly), the rest exist
   from the start, so the last part of the timeline holds items a model trained on the past never saw.
   Text (title, description, department, brand) is written from varied templates and synonyms
   (`synthetic_text`); pictures follow colour / shape / texture / background (`synthetic_images`).
2. **Users.** Each user prefers a few categories, colours, a style, a material and a price band;
   preferences drift from a start profile to an end profile over the user's active window.
3. **Sequences.** At each event the next item is drawn (vectorised over users) with probability
   proportional to exp(user preference at that time + similarity to the last few items (shared
   attributes, decaying with lag) + hidden item popularity) x (1 + a novelty boost that fades after
   launch). Only launched, not-yet-consumed items can be drawn. Attribute effects are visible to
   content models; popularity and novelty are not (a fair split: IDs can learn the popularity of warm
   items, only content can place an unseen item).

Timestamps are integer unix seconds, strictly increasing per user. The generator's latent state can
be recovered with `item_attributes(ds)` / `item_launch_ts(ds)` (recomputed from the seed, so the
summary stays small and no attribute leaks into the item text fields).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.data.dataset import Dataset
from modalrec.data.interactions import Interactions
from modalrec.data.items import ItemTable
from modalrec.data.sources.synthetic_text import (
    ATTRIBUTE_NAMES,
    ATTRIBUTE_VALUES,
    BRANDS,
    PRICE_RANGES,
    render_item_text,
)
from modalrec.data.vocab import Vocabulary
from modalrec.errors import ConfigError, DataError
from modalrec.seeding import numpy_rng

log = logging.getLogger(__name__)

GENERATOR = "modalrec.synthetic/v1"
N_VALUES: tuple[int, ...] = tuple(len(ATTRIBUTE_VALUES[a]) for a in ATTRIBUTE_NAMES)  # (8, 8, 6, 5, 4)
_DAY = 86_400


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator. Defaults give the demo dataset (600 users, 800 items, ~12k events)."""

    n_users: int = 600
    n_items: int = 800
    seed: int = 0
    image_size: int = 32
    avg_seq_len: float = 20.0  # mean events per user (approximate; `describe()` reports the realised one)
    min_seq_len: int = 3
    max_seq_len: int = 200
    launch_fraction: float = 0.6  # items launched during the timeline; the rest exist at the start
    timeline_days: int = 365
    start_ts: int = 1_600_000_000
    user_span: float = 0.7  # typical share of the timeline one user is active
    last_arrival: float = 0.85  # latest start of a user's window (fraction of the timeline)
    # Logit weights. Preference strengths per attribute, favourites per attribute, share of favourites
    # replaced between the start and end profile (drift), similarity to the recent items per attribute.
    pref_strength: tuple[float, ...] = (2.0, 1.5, 0.6, 1.2, 1.0)
    pref_favourites: tuple[int, ...] = (2, 2, 1, 1, 1)
    drift: float = 0.5
    seq_strength: tuple[float, ...] = (2.0, 1.5, 0.7, 1.0, 0.6)
    seq_lag_decay: tuple[float, ...] = (1.0, 0.5, 0.25)
    popularity_sigma: float = 0.8
    novelty_boost: float = 3.0  # an item just launched gets log(1 + 3) extra logit, fading with:
    novelty_days: float = 20.0
    text_colour_prob: float = 0.85  # share of items whose text names the colour (else only the image does)
    text_material_prob: float = 0.7

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 2:
            raise ConfigError(f"need n_users >= 1 and n_items >= 2, got {self.n_users}, {self.n_items}")
        if not 0.0 <= self.launch_fraction <= 1.0:
            raise ConfigError(f"launch_fraction must lie in [0, 1], got {self.launch_fraction}")
        if not 1 <= self.min_seq_len <= self.avg_seq_len <= self.max_seq_len:
            raise ConfigError("need 1 <= min_seq_len <= avg_seq_len <= max_seq_len")
        if not 0.0 < self.user_span <= 1.0 or not 0.0 <= self.last_arrival <= 1.0:
            raise ConfigError("user_span must lie in (0, 1] and last_arrival in [0, 1]")
        if not self.timeline_days * 0.002 <= self.novelty_days or self.novelty_boost < 0:
            raise ConfigError("need novelty_boost >= 0 and novelty_days >= timeline_days / 500")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
        for name in ("pref_strength", "pref_favourites", "seq_strength"):
            if len(getattr(self, name)) != len(ATTRIBUTE_NAMES):
                raise ConfigError(f"{name} needs one value per attribute {ATTRIBUTE_NAMES}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SyntheticConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ConfigError(f"unknown synthetic config keys {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload.items()})


@dataclass(frozen=True)
class Catalogue:
    """Latent item state, row 0 = PAD (attributes -1)."""

    attrs: np.ndarray  # [n_items + 1, 5] int64
    brand: np.ndarray  # [n_items + 1] int64
    price: np.ndarray  # [n_items + 1] float64
    popularity: np.ndarray  # [n_items + 1] float64 hidden log-popularity
    launch: np.ndarray  # [n_items + 1] float64 launch time as a fraction of the timeline (0 = at start)


def build_catalogue(cfg: SyntheticConfig) -> Catalogue:
    rng = numpy_rng(cfg.seed, "synthetic/items")
    n = cfg.n_items
    attrs = np.full((n + 1, len(N_VALUES)), -1, dtype=np.int64)
    for a, k in enumerate(N_VALUES):
        weights = rng.dirichlet(np.full(k, 8.0))  # mildly uneven attribute frequencies
        attrs[1:, a] = rng.choice(k, size=n, p=weights)
    brand_style = rng.integers(N_VALUES[3], size=len(BRANDS))
    brand = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):  # 70% of items come from a brand of their own style
        same = np.flatnonzero(brand_style == attrs[i, 3])
        pool = same if len(same) and rng.random() < 0.7 else np.arange(len(BRANDS))
        brand[i] = pool[rng.integers(len(pool))]
    lo, hi = np.array(PRICE_RANGES).T  # [4] each
    band = attrs[1:, 4]
    price = np.zeros(n + 1)
    price[1:] = np.round(np.exp(rng.uniform(np.log(lo[band]), np.log(hi[band]))), 2) - 0.01
    prestige = rng.normal(0.0, 0.3, len(BRANDS))
    popularity = np.zeros(n + 1)
    band_effect = np.array([0.3, 0.15, 0.0, -0.3])  # cheaper sells more
    popularity[1:] = rng.normal(0.0, cfg.popularity_sigma, n) + prestige[brand[1:]] + band_effect[band]
    launch = np.zeros(n + 1)
    later = rng.random(n) < cfg.launch_fraction
    launch[1:][later] = rng.uniform(0.0, 1.0, int(later.sum()))
    return Catalogue(attrs, brand, price, popularity, launch)


@dataclass(frozen=True)
class Users:
    pref_start: np.ndarray  # [n_users + 1, D] preference logits over the one-hot attribute space
    pref_end: np.ndarray  # [n_users + 1, D]
    times: list[np.ndarray]  # per user (index u - 1): [L_u] event times as fractions of the timeline
    window: np.ndarray  # [n_users + 1, 2] (start, span) of each user's active window


def _onehot_offsets() -> np.ndarray:
    return np.concatenate([[0], np.cumsum(N_VALUES)])  # [6]


def item_onehots(attrs: np.ndarray) -> np.ndarray:
    """[n, D] 0/1 matrix of attribute values, D = sum(N_VALUES) (PAD rows are all zero)."""
    off = _onehot_offsets()
    out = np.zeros((len(attrs), int(off[-1])))
    for a in range(len(N_VALUES)):
        ok = attrs[:, a] >= 0
        out[np.flatnonzero(ok), off[a] + attrs[ok, a]] = 1.0
    return out


def build_users(cfg: SyntheticConfig) -> Users:
    rng = numpy_rng(cfg.seed, "synthetic/users")
    off, n = _onehot_offsets(), cfg.n_users
    start = np.zeros((n + 1, int(off[-1])))
    end = np.zeros_like(start)
    for a, k in enumerate(N_VALUES):
        s = cfg.pref_strength[a]
        for u in range(1, n + 1):
            favs = rng.choice(k, size=min(cfg.pref_favourites[a], k), replace=False)
            moved = favs.copy()
            drift = rng.random(len(favs)) < cfg.drift
            moved[drift] = rng.integers(k, size=int(drift.sum()))
            start[u, off[a] + favs] += s
            end[u, off[a] + moved] += s
        start[1:, off[a] : off[a + 1]] += rng.normal(0.0, 0.3, (n, k))
        end[1:, off[a] : off[a + 1]] += rng.normal(0.0, 0.3, (n, k))
    # Active windows: a user's window of length `span` starts uniformly in [-span, last_arrival], and
    # events outside the timeline [0, 1) are dropped, so event density is about flat in time, some users
    # are active from the start and late arrivals become cold users. Event counts are negative binomial,
    # inflated by the expected clipped share so that the realised mean is about `avg_seq_len`.
    times: list[np.ndarray] = []
    window = np.zeros((n + 1, 2))
    for u in range(1, n + 1):
        span = float(np.clip(cfg.user_span * rng.lognormal(0.0, 0.3), 0.05, 1.0))
        mean = cfg.avg_seq_len / _inside_share(span, cfg.last_arrival)
        want = int(min(rng.negative_binomial(2, 2.0 / (2.0 + mean)), cfg.max_seq_len))
        want = max(want, cfg.min_seq_len)
        for attempt in range(50):
            last = attempt == 49  # fall back to a window fully inside the timeline
            lo = rng.uniform(0.0, max(0.0, 1.0 - span)) if last else rng.uniform(-span, cfg.last_arrival)
            t = np.sort(rng.uniform(lo, lo + span, want))
            t = t[(t >= 0.0) & (t < 1.0)]
            if len(t) >= cfg.min_seq_len:
                break
        times.append(t)
        window[u] = (lo, span)
    return Users(start, end, times, window)


def _inside_share(span: float, last_arrival: float) -> float:
    """Expected share of a window [lo, lo + span], lo ~ U(-span, last_arrival), that lies inside [0, 1]."""
    lo = np.linspace(-span, last_arrival, 257)
    inside = np.clip(np.minimum(lo + span, 1.0) - np.maximum(lo, 0.0), 0.0, None) / span
    return float(max(inside.mean(), 0.05))


def simulate(cfg: SyntheticConfig, cat: Catalogue, users: Users) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw every user's sequence. Returns (user, item, time fraction) arrays [E], user-major order."""
    rng = numpy_rng(cfg.seed, "synthetic/sequences")
    n_users, n_items = cfg.n_users, cfg.n_items
    onehot = item_onehots(cat.attrs)  # [N+1, D]
    seq_w = np.concatenate([np.full(k, cfg.seq_strength[a]) for a, k in enumerate(N_VALUES)])  # [D]
    lengths = np.array([0] + [len(t) for t in users.times])  # [U+1]
    max_len = int(lengths.max())
    times = np.full((n_users + 1, max_len), np.inf)  # [U+1, Lmax]
    for u, t in enumerate(users.times, start=1):
        times[u, : len(t)] = t
    chosen = np.zeros((n_users + 1, max_len), dtype=np.int64)  # [U+1, Lmax]
    consumed = np.zeros((n_users + 1, n_items + 1), dtype=bool)  # [U+1, N+1]
    consumed[:, 0] = True  # PAD is never drawn
    tau = cfg.novelty_days / cfg.timeline_days
    pop_w = np.exp(cat.popularity)[None, :]  # [1, N+1]
    launch_w = np.exp(cat.launch / tau)  # [N+1] at most e^(timeline/novelty_days): no overflow
    for s in range(max_len):
        act = np.flatnonzero(lengths > s)  # [A]
        t = times[act, s]  # [A]
        alpha = np.clip((t - users.window[act, 0]) / users.window[act, 1], 0.0, 1.0)[:, None]  # [A, 1]
        ctx = (1.0 - alpha) * users.pref_start[act] + alpha * users.pref_end[act]  # [A, D]
        for lag, w in enumerate(cfg.seq_lag_decay, start=1):
            if s - lag < 0:
                break
            ctx = ctx + w * seq_w * onehot[chosen[act, s - lag]]  # [A, D]
        logits = ctx @ onehot.T  # [A, N+1]
        # Weights = exp(logits + popularity) * (1 + boost * exp(-age / tau)); the novelty factor is an
        # outer product (exp(-t/tau) * exp(launch/tau)) so no per-element exp is needed for it.
        weight = np.exp(logits - logits.max(axis=1, keepdims=True)) * pop_w  # [A, N+1]
        weight *= 1.0 + np.outer(cfg.novelty_boost * np.exp(-t / tau), launch_w)
        weight[(cat.launch[None, :] > t[:, None]) | consumed[act]] = 0.0  # not launched yet / already had
        # Inverse-CDF sampling: one uniform per row instead of a Gumbel per (row, item).
        cum = np.cumsum(weight, axis=1)  # [A, N+1]
        u = (1.0 - rng.random(len(act))) * cum[:, -1]  # in (0, total]
        pick = np.minimum((cum < u[:, None]).sum(axis=1), n_items)  # [A] first index with cum >= u
        pick[cum[:, -1] <= 0] = 0  # nothing left to draw (tiny catalogues): event dropped
        chosen[act, s] = pick
        consumed[act, pick] = True
    mask = (np.arange(max_len)[None, :] < lengths[:, None]) & (chosen > 0)  # [U+1, Lmax]
    user = np.broadcast_to(np.arange(n_users + 1)[:, None], mask.shape)[mask]
    return user, chosen[mask], times[mask]


def _to_seconds(cfg: SyntheticConfig, user: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Integer unix seconds, strictly increasing within each user (input is user-major, time-sorted)."""
    sec = cfg.start_ts + np.floor(frac * cfg.timeline_days * _DAY).astype(np.int64)
    first = np.r_[True, user[1:] != user[:-1]]
    # Per user: s_k = max(s_k, s_{k-1} + 1) == running max of (s_k - k) + k.
    k = np.arange(len(sec)) - np.maximum.accumulate(np.where(first, np.arange(len(sec)), 0))
    shifted = sec - k
    run = shifted.copy()
    for_seg = np.flatnonzero(first)
    for a, b in zip(for_seg, np.r_[for_seg[1:], len(sec)]):
        run[a:b] = np.maximum.accumulate(shifted[a:b])
    return run + k


def generate(
    n_users: int = 600,
    n_items: int = 800,
    seed: int = 0,
    image_dir: str | Path | None = None,
    image_size: int = 32,
    avg_seq_len: float = 20.0,
    launch_fraction: float = 0.6,
    **overrides: Any,
) -> Dataset:
    """The built-in dataset. Other `SyntheticConfig` fields may be passed as keywords.

    With `image_dir`, item pictures are written there as `<item id>.png` (files already holding the
    same bytes are left alone) and `ItemTable.image_paths` holds those names relative to
    `image_root = image_dir`; without it items have no image.
    """
    try:
        cfg = SyntheticConfig(n_users=n_users, n_items=n_items, seed=seed, image_size=image_size,
                              avg_seq_len=avg_seq_len, launch_fraction=launch_fraction, **overrides)
    except TypeError as exc:
        raise ConfigError(f"synthetic dataset: {exc}") from None
    return generate_from_config(cfg, image_dir)


def generate_from_config(cfg: SyntheticConfig, image_dir: str | Path | None = None) -> Dataset:
    t0 = time.perf_counter()
    cat = build_catalogue(cfg)
    users = build_users(cfg)
    user, item, frac = simulate(cfg, cat, users)
    ts = _to_seconds(cfg, user, frac)
    # The log is written in time order (ties by user): `row` is the position in that log.
    order = np.lexsort((user, ts))
    row = np.empty(len(order), dtype=np.int64)
    row[order] = np.arange(len(order))
    inter = Interactions.from_arrays(user, item, ts, row, n_users=cfg.n_users, n_items=cfg.n_items)

    item_ids = [f"item{i:05d}" for i in range(1, cfg.n_items + 1)]
    vocab = Vocabulary(item_ids, name="item")
    text_rng = numpy_rng(cfg.seed, "synthetic/text")
    texts = [render_item_text(cat.attrs[i], int(cat.brand[i]), float(cat.price[i]), text_rng,
                              p_colour=cfg.text_colour_prob, p_material=cfg.text_material_prob)
             for i in range(1, cfg.n_items + 1)]
    text_fields = ["title", "description", "category", "brand"]
    table_fields = {f: [""] + [t[f] for t in texts] for f in text_fields}
    image_paths: list[str | None] = [None] * (cfg.n_items + 1)
    images_written = 0
    if image_dir is not None:
        from modalrec.data.sources.synthetic_images import write_images

        names = [f"{raw}.png" for raw in item_ids]
        images_written, _ = write_images(image_dir, names, cat.attrs[1:], cfg.image_size,
                                         numpy_rng(cfg.seed, "synthetic/images"))
        image_paths = [None, *names]
    items = ItemTable(vocab, table_fields, image_paths, None if image_dir is None else str(image_dir),
                      [None, *(int(t) for t in _launch_seconds(cfg, cat.launch[1:]))])  # the catalogue's dates
    user_vocab = Vocabulary([f"user{u:05d}" for u in range(1, cfg.n_users + 1)], name="user")

    t_end = cfg.start_ts + cfg.timeline_days * _DAY
    summary: dict[str, Any] = {
        "source": "synthetic",
        "generator": GENERATOR,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "time": "unix_seconds",
        "timeline": [cfg.start_ts, t_end],
        "counts": {"users": cfg.n_users, "items": cfg.n_items, "interactions": len(inter),
                   "items_interacted": int((inter.item_counts()[1:] > 0).sum())},
        "filters": [],
        "text_fields": text_fields,
        "items_with_text": cfg.n_items,
        "items_with_image": cfg.n_items if image_dir is not None else 0,
        "images_written": images_written,
        "attributes": {a: ATTRIBUTE_VALUES[a] for a in ATTRIBUTE_NAMES},
        "items_launched_in_last_30pct": int((cat.launch[1:] >= 0.7).sum()),
        "notes": ["latent attributes: modalrec.data.sources.synthetic.item_attributes(ds)"],
    }
    log.info("synthetic dataset: %d users, %d items, %d events in %.2fs",
             cfg.n_users, cfg.n_items, len(inter), time.perf_counter() - t0)
    return Dataset("synthetic", inter, items, user_vocab, summary, None)


def config_of(ds: Dataset) -> SyntheticConfig:
    """The generator config recorded in a synthetic dataset's summary."""
    if ds.summary.get("generator") != GENERATOR:
        raise DataError(f"dataset {ds.name!r} was not made by {GENERATOR}", field="summary.generator")
    return SyntheticConfig.from_dict(ds.summary["config"])


def _generator_rows(ds: Dataset, cfg: SyntheticConfig) -> np.ndarray:
    """[n_items + 1] generator row of each vocabulary index (0 for PAD). Raw ids are `item<row>`, so this
    survives filtering or reordering of the vocabulary."""
    rows = np.zeros(len(ds.item_vocab), dtype=np.int64)
    for idx, raw in enumerate(ds.item_vocab.raw_ids, start=1):
        if not (raw.startswith("item") and raw[4:].isdigit() and 1 <= int(raw[4:]) <= cfg.n_items):
            raise DataError(f"item id {raw!r} was not made by {GENERATOR} (n_items={cfg.n_items})",
                            field="item")
        rows[idx] = int(raw[4:])
    return rows


def item_attributes(ds: Dataset) -> np.ndarray:
    """[n_items + 1, 5] int64 latent attributes (columns ATTRIBUTE_NAMES; row 0 = PAD = -1)."""
    cfg = config_of(ds)
    return build_catalogue(cfg).attrs[_generator_rows(ds, cfg)]


def item_launch_ts(ds: Dataset) -> np.ndarray:
    """[n_items + 1] int64 launch time (unix seconds) of each item; row 0 = 0."""
    cfg = config_of(ds)
    out = _launch_seconds(cfg, build_catalogue(cfg).launch[_generator_rows(ds, cfg)])
    out[0] = 0
    return out


def _launch_seconds(cfg: SyntheticConfig, launch: np.ndarray) -> np.ndarray:
    """Launch times as fractions of the timeline -> int64 unix seconds."""
    return cfg.start_ts + np.floor(launch * cfg.timeline_days * _DAY).astype(np.int64)
