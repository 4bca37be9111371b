"""Models. `MODELS` is the only registry: name -> (model class, config dataclass).

Every model class derives from `models.base.Recommender` (the contract: how it is trained, whether its
scores are dot products, its history length) and has `classmethod build(cfg, ctx: ModelContext)`. To add a
model, import it here, add one entry, and add its case to tests/models/test_contract.py.
"""

from __future__ import annotations

from typing import Any

from modalrec.errors import ConfigError
from modalrec.models.base import ModelContext
from modalrec.models.coldstart import (
    ContentKNN,
    ContentKNNConfig,
    NewestFirst,
    NewestFirstConfig,
    RepeatHistory,
    RepeatHistoryConfig,
)
from modalrec.models.graph.lightgcn import LightGCN, LightGCNConfig
from modalrec.models.graph.mmgcn import MMGCN, MMGCNConfig
from modalrec.models.graph.vbpr import VBPR, VBPRConfig
from modalrec.models.iisan.model import IISAN, IISANConfig
from modalrec.models.iisan.peft_baselines import (
    EncoderFinetune,
    EncoderFinetuneConfig,
    FrozenBackbone,
    FrozenBackboneConfig,
)
from modalrec.models.popularity import Pop, PopConfig, RecentPop, RecentPopConfig
from modalrec.models.recformer.model import RecformerConfig, RecformerModel
from modalrec.models.sequential.bert4rec import BERT4Rec, BERT4RecConfig
from modalrec.models.sequential.gru4rec import GRU4Rec, GRU4RecConfig
from modalrec.models.sequential.knn_start import KNNSASRec, KNNSASRecConfig
from modalrec.models.sequential.sasrec import SASRec, SASRecConfig
from modalrec.models.tgn.model import TGN, TGNConfig

MODELS: dict[str, tuple[type, type]] = {
    "pop": (Pop, PopConfig),
    "recent_pop": (RecentPop, RecentPopConfig),
    "newest_first": (NewestFirst, NewestFirstConfig),
    "content_knn": (ContentKNN, ContentKNNConfig),
    "repeat_history": (RepeatHistory, RepeatHistoryConfig),
    "sasrec": (SASRec, SASRecConfig),
    "knn_sasrec": (KNNSASRec, KNNSASRecConfig),  # SASRec residual over content-kNN, untrained = content-kNN
    "gru4rec": (GRU4Rec, GRU4RecConfig),
    "bert4rec": (BERT4Rec, BERT4RecConfig),
    "lightgcn": (LightGCN, LightGCNConfig),
    "mmgcn": (MMGCN, MMGCNConfig),
    "vbpr": (VBPR, VBPRConfig),
    "iisan": (IISAN, IISANConfig),
    "iisan_frozen": (FrozenBackbone, FrozenBackboneConfig),
    "iisan_finetune": (EncoderFinetune, EncoderFinetuneConfig),  # mode "full" (FFT) or "lora"
    "recformer": (RecformerModel, RecformerConfig),
    "tgn": (TGN, TGNConfig),
}


def build_model(name: str, cfg: Any, ctx: ModelContext) -> Any:
    """Build registered model `name` from its config dataclass (None = defaults)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    model_cls, cfg_cls = MODELS[name]
    if cfg is None:
        cfg = cfg_cls()
    if not isinstance(cfg, cfg_cls):
        raise ConfigError(f"model {name!r} needs a {cfg_cls.__name__}, got {type(cfg).__name__}")
    return model_cls.build(cfg, ctx)


def model_name(model: object) -> str:
    """The registry name of a model instance's class."""
    for name, (model_cls, _) in MODELS.items():
        if type(model) is model_cls:
            return name
    raise KeyError(f"{type(model).__name__} is not in MODELS")


__all__ = ["MODELS", "build_model", "model_name"]
