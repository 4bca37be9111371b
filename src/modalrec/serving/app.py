"""HTTP service over a Recommender (FastAPI + uvicorn, imported only when an app is made).

    POST   /recommend                 {history: [ids] | user_id, k, exclude_seen, filters} -> top-k
    GET    /items/{item_id}           an item's fields
    GET    /items/{item_id}/similar   ?k=  items with the most similar embeddings
    POST   /items                     {items: [{id, fields: {...}, image}]}  add new items (API key)
    DELETE /items/{item_id}           never recommend this item again (API key)
    GET    /health, GET /metrics, GET /openapi.json (schema), GET /docs

Item ids in paths are percent-encoded (an id containing "/" is sent as %2F). Requests are validated by
pydantic with size limits; an oversized body is refused before it is read, a body that stalls is cut
off after `body_timeout_s`, and JSON with NaN / Infinity or unpaired surrogates is a 422. Errors are JSON
{"detail": message} and never echo more than a short prefix of the input nor a server path: unknown ids
404 (with "unknown_ids"), duplicates 409, invalid content 422, missing / wrong API key 401, a full write
queue 503. Image paths of new items must resolve (symlinks included) to a file inside `image_root`.
Writes run on one writer thread (`modalrec.serving.writer`), so reads never wait behind them; /health
answers 503 until the encoders are loaded, and whenever the catalogue cannot be synced.
"""
# No `from __future__ import annotations` here: FastAPI must resolve the request models defined inside
# `create_app` from real annotation objects.

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote

from modalrec.errors import ConfigError, DataError, MismatchError, UnknownIdError
from modalrec.serving.catalogue import MAX_ID_CHARS, DuplicateIdError, is_postgres_url, normalise_id
from modalrec.serving.metrics import Metrics, MetricsMiddleware
from modalrec.serving.recommender import NotSupportedError, Recommender
from modalrec.serving.writer import CatalogueWriter, WriterBusyError

log = logging.getLogger(__name__)
# HTTP status of each library error a request can raise (a subclass listed separately gets its own status).
ERROR_STATUS: dict[type[Exception], int] = {
    UnknownIdError: 404, DuplicateIdError: 409, NotSupportedError: 400, DataError: 422, ConfigError: 422,
    WriterBusyError: 503,
    MismatchError: 500,  # the artifact and its feature files disagree: the server's fault, not the request's
}
MAX_DETAIL_CHARS = 300  # error messages are cut here: a response never carries more than a prefix of the input
MAX_ECHOED_IDS = 20


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PathScrubber:
    """Replaces the server's own directories in messages (artifact, image root, catalogue, temp, cwd)."""

    def __init__(self, *roots: object) -> None:
        seen: set[str] = set()
        for r in roots:
            if r is None or is_postgres_url(str(r)):
                continue
            for form in (str(r), str(Path(str(r)).resolve())):
                if len(form) > 1:
                    seen.add(form.rstrip("/"))
        self.roots = sorted(seen, key=len, reverse=True)  # longest first: nested roots stay anonymous

    def __call__(self, text: str) -> str:
        for root in self.roots:
            text = text.replace(root + "/", "").replace(root, "<server path>")
        return text


def create_app(recommender: Recommender, api_key: str | None = None, max_history: int = 500, max_k: int = 200,
               max_new_items: int = 1000, image_root: str | Path | None = None, max_text_chars: int = 20_000,
               max_body_bytes: int = 8 * 2**20, body_timeout_s: float = 30.0, write_timeout_s: float = 60.0,
               max_pending_writes: int = 64, sync_interval_s: float = 0.1) -> Any:
    """A FastAPI app serving `recommender`. `api_key` (if given) is required in X-API-Key for writes.

    Writes wait at most `write_timeout_s` to start (then 503, nothing done); other processes' commits to
    the shared catalogue are applied every `sync_interval_s`."""
    from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

    Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    Text = Annotated[str, StringConstraints(max_length=max_text_chars)]
    root = Path(image_root).resolve() if image_root is not None else None
    scrub = PathScrubber(recommender.artifact.directory, image_root,
                         getattr(recommender.store, "location", None), tempfile.gettempdir(), os.getcwd(),
                         Path.home())

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
        id: Id = Field(description="1-256 printable characters (NFC-normalised), no surrounding spaces")
        fields: dict[Id, Text] = Field(default_factory=dict, max_length=64)
        image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None

        @field_validator("id")
        @classmethod
        def _id(cls, v: str) -> str:
            return normalise_id(v)  # its DataError is a ValueError: pydantic reports it as a 422

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
            raise DataError("this server accepts no image paths (it was started without an image root)",
                            field="image")
        if "\x00" in path:
            raise DataError("image path contains a NUL byte", field="image")
        full = (root / path).resolve()  # an absolute `path` replaces root; resolve() follows symlinks and ".."
        if not full.is_relative_to(root):
            raise DataError(f"image path {clip(path, 80)!r} is outside the allowed image root", field="image")
        if not full.is_file():
            raise DataError(f"image {clip(path, 80)!r} not found under the image root", field="image")
        return str(full)

    writer = CatalogueWriter(recommender, poll_s=sync_interval_s, max_pending=max_pending_writes)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        writer.start()
        try:
            yield
        finally:
            await asyncio.to_thread(writer.stop)
            if recommender.encoder_process is not None:
                await asyncio.to_thread(recommender.encoder_process.close)

    app = FastAPI(title="modalrec", version="2", lifespan=lifespan,
                  description="Sequential recommendations from a modalrec artifact; new items are rankable at once.")
    metrics = Metrics()
    app.state.metrics, app.state.recommender, app.state.writer = metrics, recommender, writer

    async def error_response(_: Request, exc: Exception) -> JSONResponse:  # async: no thread-pool hop
        status = next(ERROR_STATUS[c] for c in type(exc).__mro__ if c in ERROR_STATUS)  # most specific class
        if status >= 500 and not isinstance(exc, WriterBusyError):
            log.error("%s: %s", type(exc).__name__, exc)
            return JSONResponse({"detail": "internal error: the artifact or its catalogue is inconsistent; "
                                           "see the server log"}, status_code=status)
        extra = {}
        if isinstance(exc, UnknownIdError):
            extra = {"unknown_ids": [clip(str(i), 80) for i in list(getattr(exc, "ids", []))[:MAX_ECHOED_IDS]]}
        return JSONResponse({"detail": clip(scrub(str(exc))), **extra}, status_code=status)

    for exc_class in ERROR_STATUS:
        app.add_exception_handler(exc_class, error_response)

    async def validation_response(_: Request, exc: RequestValidationError) -> JSONResponse:
        """The default handler echoes every offending input in full; this one names where and why only."""
        errors = [{"loc": [clip(str(x), 40) for x in e.get("loc", ())], "msg": clip(scrub(str(e.get("msg", ""))), 200),
                   "type": e.get("type")} for e in exc.errors()[:10]]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation_response)

    async def in_writer(fn: Any) -> Any:
        """Run fn on the writer thread; a job that has not started after write_timeout_s is withdrawn."""
        fut = writer.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), write_timeout_s)
        except asyncio.TimeoutError:
            if fut.cancel():
                raise WriterBusyError(f"the write did not start within {write_timeout_s:g} s (the writer is busy); "
                                      "nothing was changed, retry later") from None
            return await asyncio.wrap_future(fut)  # already running: its outcome is the answer

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> dict[str, Any]:
        recs = recommender.recommend(history=req.history, user_id=req.user_id, k=req.k,
                                     exclude_seen=req.exclude_seen, filters=req.filters)
        return {"items": [r.to_dict() for r in recs]}

    @app.get("/items/{item_id}")
    def get_item(item_id: str) -> dict[str, Any]:
        return recommender.item(unquote(item_id))

    @app.get("/items/{item_id}/similar", response_model=RecommendResponse)
    def similar(item_id: str, k: Annotated[int, Query(ge=1, le=max_k)] = 10) -> dict[str, Any]:
        return {"items": [r.to_dict() for r in recommender.similar_items(unquote(item_id), k)]}

    @app.post("/items", response_model=AddItemsResponse, status_code=201, dependencies=[Depends(require_key)])
    async def add_items(req: AddItemsRequest) -> dict[str, Any]:
        def job() -> dict[str, Any]:
            records = [{**it.fields, "id": it.id, "image": resolve_image(it.image) if it.image else None}
                       for it in req.items]
            return {"added": recommender.add_items(records), "items": recommender.n_items}

        return await in_writer(job)

    @app.delete("/items/{item_id}", dependencies=[Depends(require_key)])
    async def remove_item(item_id: str) -> dict[str, Any]:
        ids = [unquote(item_id)]
        return {"removed": await in_writer(lambda: recommender.remove_items(ids))}

    @app.get("/health")
    def health() -> JSONResponse:
        status = "ok" if writer.healthy else ("loading" if writer.encoders == "loading" else "degraded")
        error = writer.sync_error
        body = {"status": status, **recommender.describe(), "encoders": scrub(writer.encoders),
                "catalogue": {"synced_s_ago": round(time.time() - writer.synced_at, 3),
                              "error": scrub(error) if error else None}}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    def get_metrics() -> dict[str, Any]:
        return metrics.snapshot()

    app.add_middleware(BodyGuardMiddleware, limit=max_body_bytes, timeout_s=body_timeout_s)
    app.add_middleware(ItemPathMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: times everything, 413s included
    return app


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyGuardMiddleware:
    """Request bodies: refuse over `limit` bytes (413, from Content-Length, before reading) and bodies
    without a length (411: chunked would bypass the limit); cut off a body that does not arrive within
    `timeout_s` (408); refuse JSON that is invalid, not UTF-8, or holds NaN / Infinity or unpaired
    surrogates (422) — Python's json module accepts those, and they cannot be encoded back."""

    METHODS = ("POST", "PUT", "PATCH", "DELETE")

    def __init__(self, app: Any, limit: int, timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.timeout_s = app, int(limit), float(timeout_s)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in self.METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is None and b"chunked" in headers.get(b"transfer-encoding", b""):
            await _reply(send, 411, "send a Content-Length header (chunked request bodies are not accepted)")
            return
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _reply(send, 413, f"request body larger than {self.limit} bytes")
            return
        body, deadline = bytearray(), time.monotonic() + self.timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await _reply(send, 408, f"the request body did not arrive within {self.timeout_s:g} s")
                return
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if len(body) > self.limit:
                await _reply(send, 413, f"request body larger than {self.limit} bytes")
                return
            if not msg.get("more_body", False):
                break
        problem = _json_problem(bytes(body)) if body else None
        if problem is not None:
            await _reply(send, 422, problem)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid JSON number")


def _json_problem(body: bytes) -> str | None:
    """Why `body` is not strict JSON (None when it is)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"request body is not UTF-8 (byte {exc.start})"
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except ValueError as exc:
        return f"request body: {exc} (NaN and Infinity are not allowed)"
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(exc.object[exc.start])
        return f"request body holds an unpaired surrogate (U+{code:04X}); strings must be valid Unicode"
    return None


class ItemPathMiddleware:
    """Route /items/... on the raw (still percent-encoded) path, so an id containing "/" sent as %2F stays
    one path segment; the handlers percent-decode it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and raw.startswith(b"/items/"):
            scope["path"] = raw.decode("latin-1")  # in place: the metrics middleware reads the matched route
        await self.app(scope, receive, send)


class RunningServer:
    """A uvicorn server in a background thread (tests, benchmarks, notebooks). `stop()` shuts it down."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then (without it
        # every response waits ~40 ms for a delayed ACK between its header and body writes)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # port 0: the OS picks a free one, no race with other processes
        self.host, self.port, self.app = host, int(self.sock.getsockname()[1]), app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        writer = getattr(getattr(self.app, "state", None), "writer", None)
        while not self.server.started or (writer is not None and writer.encoders == "loading"):
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

    uvicorn.run(create_app(recommender, **app_options), host=host, port=port, log_level=log_level,
                timeout_keep_alive=5)
