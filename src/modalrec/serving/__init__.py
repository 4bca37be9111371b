"""Serving: artifacts, the live catalogue, the Recommender facade, top-K indices and the HTTP service.

    export_artifact(run_dir, out_dir)       an immutable, hashed serving directory from a training run
    Recommender.load(artifact_dir)          recommend / similar_items / add_items / remove_items
    create_app(recommender, api_key=...)    FastAPI app (FastAPI and uvicorn are imported lazily)

Names are imported on first use, so `modalrec.serving.catalogue` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "RunningServer": "app", "create_app": "app", "serve": "app",
    "Artifact": "artifact", "export_artifact": "artifact", "load_artifact": "artifact",
    "ExactIndex": "index", "FaissIndex": "index", "build_index": "index", "recall_at_k": "index",
    "recall_vs_exact": "index",
    "DuplicateIdError": "catalogue", "open_catalogue": "catalogue",
    "NotSupportedError": "artifact", "Recommendation": "recommender", "Recommender": "recommender",
}
__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'modalrec.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"modalrec.serving.{_HOME[name]}"), name)
