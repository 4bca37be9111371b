"""The server's one writer thread: every add and removal happens here, off request threads.

It loads the encoders first (so the first add does not pay for it, and /health can say when they are
ready), then runs add / remove jobs in arrival order. Request handlers only wait for their job's result
(asynchronously: a queued write holds no worker thread), so reads never wait behind writes. The thread
runs at a lower CPU priority: encoding a large batch yields the cores to requests. A second thread applies
what other processes committed to the shared catalogue every `poll_s`, also while a long add is encoding.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from modalrec.errors import ModalrecError

log = logging.getLogger(__name__)


class WriterBusyError(ModalrecError):
    """The write queue is full, or a queued write did not start within its timeout (nothing was done)."""


class _Job:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.future = fn, Future()


class CatalogueWriter:
    def __init__(self, recommender: Any, poll_s: float = 0.2, max_pending: int = 64, nice: int = 10) -> None:
        self.rec, self.poll_s, self.nice = recommender, float(poll_s), int(nice)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_pending)
        self.encoders = "loading" if recommender.content else "not needed (ID-only model)"
        self.sync_error: str | None = None
        self.synced_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalogue-writer", daemon=True)
        self._sync_thread = threading.Thread(target=self._follow, name="catalogue-sync", daemon=True)

    def start(self) -> CatalogueWriter:
        self._thread.start()
        self._sync_thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self._sync_thread.is_alive():
            self._sync_thread.join(timeout)

    @property
    def healthy(self) -> bool:
        return self.encoders in ("ready", "not needed (ID-only model)") and self.sync_error is None

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Queue `fn` for the writer thread; its Future carries the result or the exception."""
        job = _Job(fn)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise WriterBusyError(f"{self._queue.maxsize} writes are already waiting; retry later") from None
        return job.future

    def _run(self) -> None:
        try:  # Linux: a thread is a task with its own nice value; elsewhere this is a no-op
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError) as exc:
            log.debug("could not lower the writer thread's priority: %s", exc)
        if self.rec.content:
            try:
                self.rec.load_encoders()
                self.encoders = "ready"
            except Exception as exc:  # noqa: BLE001 - reported by /health; adds then fail with the same error
                self.encoders = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                log.error("loading the encoders failed: %s", exc)
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # the request gave up before the job started: nothing to undo
            try:
                job.future.set_result(job.fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                job.future.set_exception(exc)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.rec.sync()
                self.sync_error, self.synced_at = None, time.time()
            except Exception as exc:  # noqa: BLE001 - reported by /health (503) and retried every poll
                if self.sync_error is None:
                    log.error("catalogue sync failed: %s", exc)
                self.sync_error = f"{type(exc).__name__}: {str(exc)[:200]}"
