"""IISAN / IISAN-Versa: decoupled side adapter networks over cached hidden states, in a SASRec recommender.

Item tower: per-layer pooled hidden states of frozen text (and image) encoders, read from the hidden-state
cache, go through an intra-modal SAN per modality and (with both modalities) an inter-modal SAN; a fusion
layer maps [image : inter : text] to the item embedding. The sequence model is SASRec over those item
embeddings, trained with in-batch debiased cross-entropy (logQ popularity correction).

Default IISAN-Versa differs from the papers in one place: its item vectors have a fixed length
(`item_norm="auto"` -> VERSA_ITEM_NORM), chosen on VALID of ML-100K and the built-in data
(benchmarks/iisan_versa.py). The papers' variant (item vectors as the fusion layer outputs them) is
`item_norm=None`.

Because the encoders are never run during training (their outputs are cached once), training time and
memory scale with the small adapters only. `efficiency_report` measures that per run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from modalrec.costs import PeakMemory, dir_size_bytes, total_parameters, trainable_parameters
from modalrec.errors import ConfigError, MismatchError
from modalrec.features.hidden_cache import HiddenStateCache
from modalrec.models.base import ItemTower, ModelContext
from modalrec.models.iisan.adapters import AdapterBlock, InterSAN, IntraSAN, StageProjection, layerdrop_layers
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig

log = logging.getLogger(__name__)

VERSA_ITEM_NORM = 3.0  # IISAN-Versa's item-vector length (item_norm="auto"); the content tower's default scale


@dataclass
class LayerStates:
    """One modality's cached hidden states: `array` [n_items + 1, S, d] holding encoder layers `layers`
    (len S, ascending, must include 0 = embedding layer) of an encoder with `depth` transformer layers."""

    array: torch.Tensor | np.ndarray
    layers: list[int]
    depth: int
    missing: torch.Tensor | None = None  # [n_items + 1] bool, item has no content for this modality
    dims: list[int] | None = None  # true width of each cached slot (CNN stages are zero-padded); None = all equal

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise MismatchError(f"hidden states must be [n_items + 1, n_layers, d]; got shape {tuple(self.array.shape)}")
        if len(self.layers) != self.array.shape[1]:
            raise MismatchError(f"{len(self.layers)} layer indices for {self.array.shape[1]} cached layers")
        if 0 not in self.layers:
            raise MismatchError(f"the cache must hold layer 0 (embedding layer); it holds {self.layers}")
        if self.dims is not None and (len(self.dims) != len(self.layers) or max(self.dims) > self.array.shape[2]):
            raise MismatchError(f"slot widths {self.dims} do not fit {len(self.layers)} slots of width {self.array.shape[2]}")

    def take(self, layers: Sequence[int]) -> torch.Tensor:
        """[n_items + 1, len(layers), d] for the given encoder layers (a copy; float16 stays float16)."""
        slot = {layer: i for i, layer in enumerate(self.layers)}
        absent = [layer for layer in layers if layer not in slot]
        if absent:
            raise MismatchError(f"layers {absent} are not in the hidden-state cache (it holds {self.layers})")
        arr = self.array[:, [slot[layer] for layer in layers]]
        out = torch.as_tensor(np.ascontiguousarray(arr)) if isinstance(arr, np.ndarray) else arr.contiguous()
        return out if out.dtype in (torch.float16, torch.bfloat16) else out.float()

    def widths(self, layers: Sequence[int]) -> list[int]:
        """True width of each of `layers` (the cache width where slot widths are not recorded)."""
        if self.dims is None:
            return [int(self.array.shape[2])] * len(layers)
        slot = {layer: i for i, layer in enumerate(self.layers)}
        return [self.dims[slot[layer]] for layer in layers]


@dataclass
class IISANConfig(SASRecConfig):
    """SASRec hyper-parameters plus the adapters'. `tower` is ignored (IISAN brings its own item tower)."""

    loss: str = "inbatch"  # in-batch debiased cross-entropy (logQ), as in the IISAN papers
    bottleneck: int = 64  # adapter width
    adapter_dropout: float = 0.1
    gate_init: float = 0.5
    layerdrop: str = "auto"  # auto | symmetric | group | all (see adapters.layerdrop_layers)
    n_blocks: int | None = None
    text_layers: list[int] | None = None  # explicit LayerDrop selections override `layerdrop`
    image_layers: list[int] | None = None
    use_image: bool = True  # use the image cache when one is given
    use_inter: bool = True  # inter-modal SAN (needs both modalities)
    chunk_size: int = 4096  # items per chunk when computing the whole catalogue
    stage_width: int = 256  # width that cached layers of unequal widths (CNN stages) are projected to
    # L2-normalise item vectors to this length; None: the fusion output as is (the IISAN papers). "auto": VERSA_ITEM_NORM
    # with an image tower (IISAN-Versa; chosen on VALID NDCG@10 of ML-100K and the built-in data, where the papers'
    # unnormalised vectors let popular items win on length), None for text-only IISAN
    item_norm: float | Literal["auto"] | None = "auto"
    modalities: list[str] = field(default_factory=lambda: ["text", "image"])


class IISANItemTower(ItemTower):
    """Item vectors from cached hidden states: intra-modal SANs (+ inter-modal SAN) + fusion layer.

    The cache slices for the selected layers are kept as non-persistent buffers (not in checkpoints);
    `forward(items)` gathers only the batch's unique items' rows.
    """

    def __init__(self, states: dict[str, LayerStates], cfg: IISANConfig, dim: int):
        super().__init__()
        if "text" not in states:
            raise ConfigError(f"IISAN needs a text hidden-state cache; got modalities {sorted(states)}")
        text, image = states["text"], states.get("image") if cfg.use_image else None
        if image is not None and image.array.shape[0] != text.array.shape[0]:
            raise MismatchError(f"text cache has {text.array.shape[0]} rows, image cache {image.array.shape[0]}")
        self.text_layers, self.image_layers = layerdrop_layers(
            text.depth, image.depth if image is not None else None, mode=cfg.layerdrop, n_blocks=cfg.n_blocks,
            text_select=cfg.text_layers, image_select=cfg.image_layers,
        )
        log.info("IISAN LayerDrop: text layers %s, image layers %s", self.text_layers, self.image_layers)
        self.dim = int(dim)
        self.chunk_size = cfg.chunk_size
        self.has_image = image is not None
        item_norm = cfg.item_norm
        if item_norm == "auto":
            item_norm = VERSA_ITEM_NORM if self.has_image else None
        if item_norm is not None and (isinstance(item_norm, str) or item_norm <= 0):
            raise ConfigError(f"item_norm must be > 0, 'auto' or None; got {cfg.item_norm!r}")
        self.item_norm = item_norm
        self.has_inter = self.has_image and cfg.use_inter
        self._register_states(text, image)
        # unequal slot widths (CNN stages) -> per-slot LayerNorm + projection to one width; else the cache width
        self.text_proj = _stage_projection(text, [0, *self.text_layers], cfg.stage_width)
        d_t = cfg.stage_width if self.text_proj is not None else int(text.array.shape[2])
        n = len(self.text_layers)
        widths = [d_t]
        self.text_san = IntraSAN(d_t, n, cfg.bottleneck, cfg.adapter_dropout, cfg.gate_init)
        if image is not None:
            self.image_proj = _stage_projection(image, [0, *self.image_layers], cfg.stage_width)
            d_v = cfg.stage_width if self.image_proj is not None else int(image.array.shape[2])
            self.image_san = IntraSAN(d_v, n, cfg.bottleneck, cfg.adapter_dropout, cfg.gate_init)
            widths.append(d_v)
            if self.has_inter:
                self.inter_san = InterSAN(d_t, d_v, n, cfg.bottleneck, cfg.adapter_dropout, cfg.gate_init)
                widths.append(d_v)
        # per-branch LayerNorm: hidden-state scales differ a lot between encoders (and the inter chain sums)
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in widths)
        self.fusion = nn.Linear(sum(widths), self.dim)  # concat [image : inter : text] -> item vector
        self._table: torch.Tensor | None = None  # all() cached while in eval mode without grad
        self.register_load_state_dict_post_hook(_drop_table)  # loaded weights invalidate the cached table

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """After SASRec's N(0, std) init: adapters start as identity (zero up-projection)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, AdapterBlock):
                    m.up.weight.zero_()
                    m.up.bias.zero_()

    def train(self, mode: bool = True) -> IISANItemTower:
        self._table = None  # weights may change again
        return super().train(mode)

    def _register_states(self, text: LayerStates, image: LayerStates | None) -> None:
        n_rows = int(text.array.shape[0])
        self.register_buffer("text_h", text.take([0, *self.text_layers]), persistent=False)  # [N+1, 1+n, d_t]
        self.register_buffer("text_missing", _missing(text.missing, n_rows), persistent=False)  # [N+1]
        if image is not None:
            self.register_buffer("image_h", image.take([0, *self.image_layers]), persistent=False)  # [N+1, 1+n, d_v]
            self.register_buffer("image_missing", _missing(image.missing, n_rows), persistent=False)

    @property
    def n_rows(self) -> int:
        return int(self.text_h.shape[0])

    def encode_rows(self, rows: torch.Tensor) -> torch.Tensor:  # [M] int64 -> [M, d]
        """Item vectors for cache rows `rows` (PAD row 0 gives zeros)."""
        text = self.text_h[rows].float()  # [M, 1+n, d_t]
        if self.text_proj is not None:
            text = self.text_proj(text)  # [M, 1+n, stage_width]
        keep_t = (~self.text_missing[rows]).unsqueeze(-1).float()  # [M, 1]
        text_out = self.norms[0](self.text_san(text)) * keep_t  # [M, d_t]
        parts = [text_out]
        if self.has_image:
            image = self.image_h[rows].float()  # [M, 1+n, d_v]
            if self.image_proj is not None:
                image = self.image_proj(image)  # [M, 1+n, stage_width]
            keep_v = (~self.image_missing[rows]).unsqueeze(-1).float()  # [M, 1]
            parts = [self.norms[1](self.image_san(image)) * keep_v]  # [M, d_v]
            if self.has_inter:
                parts.append(self.norms[2](self.inter_san(text, image)))  # [M, d_v]
            parts.append(text_out)  # fusion input order [image : inter : text], as in the paper
        out = self.fusion(torch.cat(parts, dim=-1))  # [M, d]
        if self.item_norm is not None:  # fixed length: popular items cannot win on vector norm alone
            out = nn.functional.normalize(out, dim=-1) * self.item_norm
        return out * (rows != 0).unsqueeze(-1).to(out.dtype)  # PAD -> 0

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        uniq, inverse = torch.unique(items, return_inverse=True)  # only the batch's items are computed
        return self.encode_rows(uniq)[inverse]  # [..., d]

    def all(self) -> torch.Tensor:  # [n_items + 1, d]
        cacheable = not self.training and not torch.is_grad_enabled()  # evaluation calls all() per batch
        if cacheable and self._table is not None:
            return self._table
        rows = torch.arange(self.n_rows, device=self.text_h.device)
        table = torch.cat([self.encode_rows(rows[i : i + self.chunk_size]) for i in range(0, self.n_rows, self.chunk_size)])
        self._table = table if cacheable else None
        return table

    def gate_values(self) -> dict[str, list[float]]:
        out = {"text_mu": self.text_san.gate_values()}
        if self.has_image:
            out["image_mu"] = self.image_san.gate_values()
            if self.has_inter:
                out["inter_beta"] = self.inter_san.gate_values()
        return out

    def set_hidden_states(self, states: dict[str, LayerStates]) -> None:
        """Replace the cache slices (e.g. after new items were encoded); selections and weights stay."""
        text, image = states["text"], states.get("image") if self.has_image else None
        if self.has_image and image is None:
            raise MismatchError("this IISAN tower was built with an image cache; new states lack one")
        device = self.text_h.device
        self._register_states(text, image)
        self.to(device)
        self._table = None

    def set_item_features(self, features: dict[str, torch.Tensor], missing: dict[str, torch.Tensor]) -> None:
        raise TypeError("IISAN items come from hidden-state caches; use set_hidden_states(states)")


def _stage_projection(states: LayerStates, layers: list[int], width: int) -> StageProjection | None:
    dims = states.widths(layers)
    return StageProjection(dims, width) if len(set(dims)) > 1 else None


def _drop_table(module: nn.Module, _keys: object) -> None:
    module._table = None  # type: ignore[assignment]


def _missing(mask: torch.Tensor | np.ndarray | None, n_rows: int) -> torch.Tensor:
    if mask is None:
        return torch.zeros(n_rows, dtype=torch.bool)
    out = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
    if out.shape != (n_rows,):
        raise MismatchError(f"missing mask has shape {tuple(out.shape)}, expected ({n_rows},)")
    return out


class IISAN(SASRec):
    """IISAN (symmetric) / IISAN-Versa (asymmetric): SASRec over an IISANItemTower, in-batch logQ CE."""

    tower: IISANItemTower

    def __init__(self, cfg: IISANConfig, ctx: ModelContext, states: dict[str, LayerStates] | None = None) -> None:
        states = resolve_states(cfg.modalities, ctx, states)
        super().__init__(cfg, ctx, tower=IISANItemTower(states, cfg, cfg.dim))

    @classmethod
    def build(cls, cfg: IISANConfig, ctx: ModelContext, states: dict[str, LayerStates] | None = None) -> IISAN:
        """`states` from `states_from_cache(HiddenStateCache)`. Without it, 3-D tensors in
        ctx.item_features ([n + 1, L + 1, d], every layer 0..L) are used."""
        return cls(cfg, ctx, states)

    def set_hidden_states(self, states: dict[str, LayerStates]) -> None:
        self.tower.set_hidden_states(states)


def resolve_states(
    modalities: Sequence[str], ctx: ModelContext, states: dict[str, LayerStates] | None
) -> dict[str, LayerStates]:
    """`states` restricted to `modalities`; when None, taken from `ctx.hidden_states` if the context
    carries one (a HiddenStateCache or a dict of LayerStates), else from the 3-D tensors in
    ctx.item_features ([n + 1, L + 1, d] holding every layer 0..L). Row counts are checked."""
    if states is None:
        carried = getattr(ctx, "hidden_states", None)
        if isinstance(carried, HiddenStateCache):
            states = states_from_cache(carried, modalities)
        elif carried is not None:
            states = dict(carried)
    if states is None:
        states = {
            m: LayerStates(t, list(range(t.shape[1])), t.shape[1] - 1, ctx.feature_missing.get(m))
            for m, t in ctx.item_features.items() if t.dim() == 3
        }
    states = {m: s for m, s in states.items() if m in modalities}
    n_rows = ctx.n_items + 1
    for m, s in states.items():
        if s.array.shape[0] != n_rows:
            raise MismatchError(f"{m} hidden states have {s.array.shape[0]} rows; the split has {n_rows} (incl. PAD)")
    return states


def states_from_cache(cache: HiddenStateCache, modalities: Sequence[str] = ("text", "image")) -> dict[str, LayerStates]:
    """LayerStates per modality from an opened features.hidden_cache.HiddenStateCache (memmaps, not copied
    until the model slices the layers it uses). Encoder depth = meta `n_encoder_layers` - 1."""
    out: dict[str, LayerStates] = {}
    for m in modalities:
        if m not in cache.modalities:
            continue
        layers = cache.layers(m)
        n_hidden = cache.meta["modalities"][m].get("n_encoder_layers")
        depth = int(n_hidden) - 1 if n_hidden is not None else max(layers)
        out[m] = LayerStates(cache.array(m), layers, depth, torch.from_numpy(np.array(cache.missing(m))),
                             cache.layer_dims(m))
    return out


# ---- efficiency report ------------------------------------------------------------------------
def efficiency_report(
    model: nn.Module, *, seconds_per_epoch: float | None, memory: PeakMemory | None = None,
    cache_paths: Sequence[str | Path] = (), extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """What the run manifest records about cost: trainable / total parameters, seconds per epoch, peak
    memory (see PeakMemory) and the size of the feature / hidden-state caches the model reads."""
    trainable, total = trainable_parameters(model), total_parameters(model)
    out: dict[str, object] = {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / max(total, 1),
        "seconds_per_epoch": seconds_per_epoch,
        **(memory.as_dict() if memory is not None else {}),
        "cache_size_mb": dir_size_bytes(cache_paths) / 2**20,
    }
    if isinstance(getattr(model, "tower", None), IISANItemTower):
        tower = model.tower  # type: ignore[union-attr]
        out["layers"] = {"text": tower.text_layers, "image": tower.image_layers}
        out["gates"] = tower.gate_values()
    out.update(extra or {})
    return out
