"""Request metrics for the HTTP service: counts by status and latency percentiles per endpoint.

`MetricsMiddleware` is a plain ASGI middleware (no per-request task overhead); endpoints are named by
their route template ("GET /items/{item_id}/similar") and a standard HTTP method; any other method is
counted as "OTHER" and any path that matched no route as "(unmatched)", so clients cannot grow the
table. Latencies are kept in a bounded window per endpoint (the most recent `window` requests).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self, window: int = 10_000) -> None:
        self.window = int(window)
        self.started = time.time()
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._status: dict[str, dict[str, int]] = {}
        self._lat: dict[str, deque[float]] = {}

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._count[endpoint] = self._count.get(endpoint, 0) + 1
            by = self._status.setdefault(endpoint, {})
            by[str(status)] = by.get(str(status), 0) + 1
            self._lat.setdefault(endpoint, deque(maxlen=self.window)).append(seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            rows = {ep: (n, dict(self._status[ep]), np.asarray(self._lat[ep], dtype=np.float64))
                    for ep, n in self._count.items()}
        endpoints = {}
        for ep, (n, status, lat) in sorted(rows.items()):
            ms = lat * 1000.0
            endpoints[ep] = {
                "count": n,
                "errors_4xx": sum(v for s, v in status.items() if s.startswith("4")),
                "errors_5xx": sum(v for s, v in status.items() if s.startswith("5")),
                "status": status,
                "latency_ms": {"window": len(ms), "mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                               "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
                               "max": float(ms.max())},
            }
        return {"uptime_s": round(time.time() - self.started, 3),
                "requests": sum(r[0] for r in rows.values()), "endpoints": endpoints}


class MetricsMiddleware:
    """ASGI middleware: time every HTTP request until its response is complete, by route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = _route_path(scope)
            method = scope.get("method")
            self.metrics.record(f"{method if method in METHODS else 'OTHER'} {path}", status["code"],
                                time.perf_counter() - t0)


def _route_path(scope: dict[str, Any]) -> str:
    """The template of the route this request matched, or would have matched had a middleware not
    answered first (a 413 for POST /items is counted there); "(unmatched)" otherwise."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    app = scope.get("app")
    for r in getattr(getattr(app, "router", None), "routes", ()):
        try:
            match, _ = r.matches(scope)
        except Exception:  # noqa: BLE001, S112 - a route type that cannot match this scope
            continue
        if match.name != "NONE":
            return str(r.path)
    return "(unmatched)"
