"""Atomic file writes and directory swaps: a crash never leaves a half-written file or directory under the
final name."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n").encode())


def temp_dir_beside(final: str | Path) -> Path:
    """A new empty directory next to `final` (same filesystem, so `swap_dir` can rename it into place)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def swap_dir(tmp: str | Path, final: str | Path) -> None:
    """Replace directory `final` by the finished directory `tmp` with two renames. Between them the old copy
    survives beside it (`.NAME.old-*`, see `surviving_dir`); it is deleted only after the new one is in place."""
    tmp, final = Path(tmp), Path(final)
    _fsync_dir(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def surviving_dir(final: str | Path) -> Path:
    """`final`, or, when a `swap_dir` was interrupted between its renames, the old copy it left beside it."""
    final = Path(final)
    if final.exists():
        return final
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    return olds[-1] if olds else final


def restore_dir(final: str | Path) -> None:
    """Undo an interrupted `swap_dir`: rename the surviving old copy back to `final` (before writing to it)."""
    final = Path(final)
    survivor = surviving_dir(final)
    if survivor != final:
        log.warning("restoring %s from %s (an earlier swap was interrupted)", final, survivor)
        os.rename(survivor, final)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # not supported on every filesystem; the renames are still atomic
        pass


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
