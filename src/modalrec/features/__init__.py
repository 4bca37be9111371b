"""Item content features: encoders, the versioned FeatureStore, the per-layer hidden-state cache, and
the resumable encoding job (`encode_catalogue`, `encode_hidden_cache`)."""

from modalrec.features.build import EncodeSummary, ModalitySummary, encode_catalogue, encode_hidden_cache
from modalrec.features.encoders import build_encoder
from modalrec.features.hidden_cache import HiddenStateCache, cached_layers
from modalrec.features.store import FeatureStore

__all__ = [
    "EncodeSummary",
    "FeatureStore",
    "HiddenStateCache",
    "ModalitySummary",
    "build_encoder",
    "cached_layers",
    "encode_catalogue",
    "encode_hidden_cache",
]
