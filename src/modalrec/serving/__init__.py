"""Serving: artifacts, the Recommender facade, top-K indices and the HTTP service.

    export_artifact(run_dir, out_dir)       a self-contained serving directory from a training run
    Recommender.load(artifact_dir)          recommend / similar_items / add_items / remove_items
    create_app(recommender, api_key=...)    FastAPI app (FastAPI and uvicorn are imported lazily)
"""

from modalrec.serving.app import RunningServer, create_app, serve
from modalrec.serving.artifact import Artifact, export_artifact, load_artifact
from modalrec.serving.index import ExactIndex, FaissIndex, build_index, recall_at_k, recall_vs_exact
from modalrec.serving.recommender import (
    DuplicateIdError,
    NotSupportedError,
    Recommendation,
    Recommender,
)

__all__ = [
    "Artifact",
    "DuplicateIdError",
    "ExactIndex",
    "FaissIndex",
    "NotSupportedError",
    "Recommendation",
    "Recommender",
    "RunningServer",
    "build_index",
    "create_app",
    "export_artifact",
    "load_artifact",
    "recall_at_k",
    "recall_vs_exact",
    "serve",
]
