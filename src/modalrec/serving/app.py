"""HTTP service over a Recommender (FastAPI + uvicorn, imported only when an app is made).

    POST   /recommend                 {history: [ids] | user_id, k, exclude_seen, filters} -> top-k
    GET    /items/{item_id}           an item's fields
    GET    /items/{item_id}/similar   ?k=  items with the most similar embeddings
    POST   /items                     {items: [{id, fields: {...}, image}]}  add new items (API key)
    DELETE /items/{item_id}           never recommend this item again (API key)
    GET    /health, GET /metrics, GET /openapi.json (schema), GET /docs

Requests are validated by pydantic with size limits; an oversized body is refused before it is read.
Errors are JSON {"detail": message}: unknown ids 404 (with "unknown_ids"), duplicates 409, invalid
content 422, missing / wrong API key 401. Image paths of new items must resolve (symlinks included)
to a file inside `image_root`; anything else is refused, so a client cannot make the server read
arbitrary files.
"""
# No `from __future__ import annotations` here: FastAPI must resolve the request models defined inside
# `create_app` from real annotation objects.

import hmac
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from modalrec.errors import ConfigError, DataError, MismatchError, UnknownIdError
from modalrec.serving.metrics import Metrics, MetricsMiddleware
from modalrec.serving.recommender import DuplicateIdError, NotSupportedError, Recommender

log = logging.getLogger(__name__)
# HTTP status of each library error a request can raise (a subclass listed separately gets its own status).
ERROR_STATUS: dict[type[Exception], int] = {
    UnknownIdError: 404, DuplicateIdError: 409, NotSupportedError: 400, DataError: 422, ConfigError: 422,
    MismatchError: 500,  # the artifact and its feature files disagree: the server's fault, not the request's
}

MAX_ID_CHARS = 256


def create_app(recommender: Recommender, api_key: str | None = None, max_history: int = 500, max_k: int = 200,
               max_new_items: int = 1000, image_root: str | Path | None = None, max_text_chars: int = 20_000,
               max_body_bytes: int = 8 * 2**20) -> Any:
    """A FastAPI app serving `recommender`. `api_key` (if given) is required in X-API-Key for writes."""
    from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

    Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    Text = Annotated[str, StringConstraints(max_length=max_text_chars)]
    root = Path(image_root).resolve() if image_root is not None else None

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[Id] | None = Field(None, max_length=max_history,
                                         description="raw item ids, oldest first")
        user_id: Id | None = Field(None, description="a user known to the artifact (their stored history)")
        k: int = Field(10, ge=1, le=max_k)
        exclude_seen: bool = True
        filters: dict[Id, Text | Annotated[list[Text], Field(max_length=1000)]] | None = Field(
            None, max_length=16, description="keep items whose field equals the value (or one of the values)")

    class ScoredItem(BaseModel):
        item_id: str
        score: float
        title: str

    class RecommendResponse(BaseModel):
        items: list[ScoredItem]

    class NewItem(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: Id
        fields: dict[Id, Text] = Field(default_factory=dict, max_length=64)
        image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None

        @field_validator("fields")
        @classmethod
        def _reserved(cls, v: dict[str, str]) -> dict[str, str]:
            bad = {"id", "image"} & set(v)
            if bad:
                raise ValueError(f"{sorted(bad)} are not item fields; give them at the top level of the item")
            return v

    class AddItemsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[NewItem] = Field(..., min_length=1, max_length=max_new_items)

    class AddItemsResponse(BaseModel):
        added: list[str]
        items: int

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if api_key is None:
            return
        if not x_api_key:
            raise HTTPException(401, "this endpoint needs an API key in the X-API-Key header")
        if not hmac.compare_digest(x_api_key.encode(), api_key.encode()):
            raise HTTPException(401, "invalid API key")

    def resolve_image(path: str) -> str:
        if root is None:
            raise HTTPException(422, "this server accepts no image paths (it was started without an image root)")
        if "\x00" in path:
            raise HTTPException(422, "image path contains a NUL byte")
        full = (root / path).resolve()  # an absolute `path` replaces root; resolve() follows symlinks and ".."
        if not full.is_relative_to(root):
            raise HTTPException(422, f"image path {path!r} is outside the allowed image root")
        if not full.is_file():
            raise HTTPException(422, f"image {path!r} not found under the image root")
        return str(full)

    app = FastAPI(title="modalrec", version="1",
                  description="Sequential recommendations from a modalrec artifact; new items are rankable at once.")
    metrics = Metrics()
    app.state.metrics, app.state.recommender = metrics, recommender

    async def error_response(_: Request, exc: Exception) -> JSONResponse:  # async: no thread-pool hop
        status = next(ERROR_STATUS[c] for c in type(exc).__mro__ if c in ERROR_STATUS)  # most specific class
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        extra = {"unknown_ids": list(getattr(exc, "ids", []))} if isinstance(exc, UnknownIdError) else {}
        return JSONResponse({"detail": str(exc), **extra}, status_code=status)

    for exc_class in ERROR_STATUS:
        app.add_exception_handler(exc_class, error_response)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> dict[str, Any]:
        recs = recommender.recommend(history=req.history, user_id=req.user_id, k=req.k,
                                     exclude_seen=req.exclude_seen, filters=req.filters)
        return {"items": [r.to_dict() for r in recs]}

    @app.get("/items/{item_id}")
    def get_item(item_id: str) -> dict[str, Any]:
        return recommender.item(item_id)

    @app.get("/items/{item_id}/similar", response_model=RecommendResponse)
    def similar(item_id: str, k: Annotated[int, Query(ge=1, le=max_k)] = 10) -> dict[str, Any]:
        return {"items": [r.to_dict() for r in recommender.similar_items(item_id, k)]}

    @app.post("/items", response_model=AddItemsResponse, status_code=201, dependencies=[Depends(require_key)])
    def add_items(req: AddItemsRequest) -> dict[str, Any]:
        records = [{**it.fields, "id": it.id, "image": resolve_image(it.image) if it.image else None}
                   for it in req.items]
        added = recommender.add_items(records)
        return {"added": added, "items": recommender.n_items}

    @app.delete("/items/{item_id}", dependencies=[Depends(require_key)])
    def remove_item(item_id: str) -> dict[str, Any]:
        return {"removed": recommender.remove_items([item_id])}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **recommender.describe()}

    @app.get("/metrics")
    def get_metrics() -> dict[str, Any]:
        return metrics.snapshot()

    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: times everything, 413s included
    return app


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes (413) from Content-Length, before reading them; bodies
    without a length (chunked) are refused with 411 so the limit cannot be bypassed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            problem = None
            if length is None and b"chunked" in headers.get(b"transfer-encoding", b""):
                problem = (411, "send a Content-Length header (chunked request bodies are not accepted)")
            elif length is not None and (not length.isdigit() or int(length) > self.limit):
                problem = (413, f"request body larger than {self.limit} bytes")
            if problem is not None:
                from fastapi.responses import JSONResponse

                await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RunningServer:
    """A uvicorn server in a background thread (tests, benchmarks, notebooks). `stop()` shuts it down."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # port 0: the OS picks a free one, no race with other processes
        self.host, self.port = host, int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "RunningServer":  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(recommender: Recommender, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          **app_options: Any) -> None:
    """Run the service in the foreground until interrupted (what `modalrec serve` calls)."""
    import uvicorn

    uvicorn.run(create_app(recommender, **app_options), host=host, port=port, log_level=log_level)
