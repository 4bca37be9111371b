"""Encoding new items in a child process, so a large add never competes with requests for the GIL.

The child (spawned, so it shares no locks or threads with the server) opens the artifact itself, builds
the encoders once, lowers its CPU priority, and then encodes batches on request; the server's writer
thread only waits for the result. Used by `modalrec serve` (disable with --no-encoder-process).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.errors import ModalrecError

_ARTIFACT: Any = None  # in the child: the opened artifact with its encoders


def _load(directory: str, device: str, trust_remote_code: bool, nice: int) -> None:
    global _ARTIFACT
    from modalrec.serving.artifact import load_artifact

    try:
        os.nice(nice)
    except (AttributeError, OSError):  # not on this platform: encoding then shares the CPU evenly
        pass
    art = load_artifact(directory)  # verifies the hashes again: the child encodes exactly what was served
    art.load_encoders(device, trust_remote_code)
    _ARTIFACT = art


def _encode(table: Any, idx: np.ndarray, device: str, trust_remote_code: bool,
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if _ARTIFACT is None:
        raise ModalrecError("the encoder process has not loaded its encoders")
    return _ARTIFACT.encode_items(table, idx, device, trust_remote_code=trust_remote_code)


class EncoderProcess:
    """One spawned worker holding the artifact's encoders; `encode` has the signature of
    `Artifact.encode_items`. A worker that died is replaced on the next call (the call itself fails)."""

    def __init__(self, directory: str | Path, device: str = "cpu", trust_remote_code: bool = False,
                 nice: int = 10) -> None:
        self.args = (str(directory), device, bool(trust_remote_code), int(nice))
        self._pool: ProcessPoolExecutor | None = None

    def _call(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            try:
                self._pool.submit(_load, *self.args).result()
            except BaseException:
                self.close()  # retried from scratch on the next call
                raise
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool:
            self.close()
            raise ModalrecError("the encoder process died (out of memory?); it is restarted on the next add") from None

    def load(self) -> None:
        self._call(int, 0)  # starts the worker and loads the encoders

    def encode(self, table: Any, idx: np.ndarray, device: str = "cpu", trust_remote_code: bool = False,
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self._call(_encode, table, idx, device, trust_remote_code)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
