"""Model checkpoints as a directory: config.json, model.safetensors and one JSON file per `extra` key.

Never pickle. Tensors go through safetensors; everything else is JSON. A checkpoint directory is
written to a temporary sibling and swapped in, so a crash leaves either the old or the new one.
Tensors that share storage (tied weights) are stored once and recorded as aliases.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from modalrec.errors import MismatchError
from modalrec.io import surviving_dir, swap_dir, temp_dir_beside, write_bytes_atomic, write_json_atomic

FORMAT = 1
_ALIAS_PREFIX = "alias:"


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes for `tensors`; tensors sharing storage are written once (others become aliases)."""
    out: dict[str, torch.Tensor] = {}
    meta = dict(metadata or {})
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    for name, t in tensors.items():
        t = t.detach()
        if t.numel():
            key = (
                t.untyped_storage().data_ptr(),
                t.storage_offset(),
                tuple(t.shape),
                tuple(t.stride()),
                t.dtype,
            )
            if key in seen:  # the very same view again (tied weights): store a pointer, not a copy
                meta[_ALIAS_PREFIX + name] = seen[key]
                continue
            seen[key] = name
        t = t.cpu().contiguous()
        if t.numel():
            # Another view of an already-stored storage must be copied: safetensors refuses shared memory.
            if t.untyped_storage().data_ptr() in storages:
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
        out[name] = t
    return st_save(out, metadata=meta or None)


def bytes_to_tensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Inverse of `tensors_to_bytes`: (tensors with aliases resolved, remaining metadata)."""
    tensors = st_load(data)
    meta = _metadata(data)
    for key, target in list(meta.items()):
        if key.startswith(_ALIAS_PREFIX):
            tensors[key[len(_ALIAS_PREFIX) :]] = tensors[target]
            del meta[key]
    return tensors, meta


def _metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return dict(header.get("__metadata__", {}) or {})


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    write_bytes_atomic(path, tensors_to_bytes(tensors, metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return bytes_to_tensors(Path(path).read_bytes())[0]


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's persistent state (parameters + persistent buffers)."""
    return dict(model.state_dict())


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: object = "") -> None:
    """Strict load with an error that names what does not match. A stored copy of a buffer the model rebuilds
    from its data instead (non-persistent: content tables, made persistent by earlier versions) is dropped."""
    expected = model.state_dict()
    rebuilt = {name for name, _ in model.named_buffers()} - set(expected)
    tensors = {k: v for k, v in tensors.items() if k not in rebuilt}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad_shape = sorted(
        k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape)
    )
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
            if any(k.endswith("log_scale") for k in missing):  # made before content towers learned their length
                parts.append("a content tower learns its item-vector length by default now; a checkpoint made "
                             "with the earlier fixed length loads with tower.options learn_scale=false, scale=3.0")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if bad_shape:
            k = bad_shape[0]
            parts.append(
                f"shape of {k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
            )
        raise MismatchError(f"{source}: checkpoint does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(tensors, strict=True)


def _jsonable_config(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return config


def save_checkpoint(
    dir: str | Path, model: torch.nn.Module, config: dict[str, Any] | Any, extra: dict[str, Any] | None = None
) -> Path:
    """Write `dir`/{config.json, model.safetensors, <key>.json for each `extra` key} atomically.

    `config` is a dict (or a config dataclass) describing how to rebuild the model, e.g.
    {"model": "sasrec", "model_config": {...}}; it is stored under "config" next to the model class.
    `extra` maps file stems to JSON payloads, e.g. {"metrics": {...}, "manifest": {...}}.
    """
    dest = Path(dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    for key in extra:
        if not key or "/" in key or key.startswith(".") or key in ("config", "model"):
            raise ValueError(f"extra key {key!r} is not a usable file name (and may not be 'config'/'model')")
    tmp = temp_dir_beside(dest)
    try:
        write_bytes_atomic(
            tmp / "model.safetensors", tensors_to_bytes(model_state(model), {"format": str(FORMAT)})
        )
        payload = {"format": FORMAT, "model_class": type(model).__name__, "config": _jsonable_config(config)}
        write_json_atomic(tmp / "config.json", payload)
        for key, value in extra.items():
            write_json_atomic(tmp / f"{key}.json", value)
        swap_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_config(dir: str | Path) -> dict[str, Any]:
    """The full config.json payload: {"format", "model_class", "config"}."""
    path = surviving_dir(dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a modalrec checkpoint (no config.json)")
    return json.loads(path.read_text())


def read_extra(dir: str | Path, key: str) -> Any:
    return json.loads((surviving_dir(dir) / f"{key}.json").read_text())


def load_state(
    dir: str | Path, model: torch.nn.Module, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load model.safetensors from `dir` into `model` (strict); returns the model."""
    path = surviving_dir(dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint has no model.safetensors")
    tensors = {k: v.to(map_location) for k, v in load_tensors(path).items()}
    load_model_state(model, tensors, source=path)
    return model


# --- optimizer state without pickle: tensors to safetensors, everything else to JSON -----------------


def optimizer_to_parts(
    optimizer: torch.optim.Optimizer, prefix: str = "optim."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into ({prefix<param id>.<name>: tensor}, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_parts(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    payload: dict[str, Any],
    prefix: str = "optim.",
) -> None:
    """Inverse of `optimizer_to_parts`: load the saved state into `optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, name = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in payload.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    groups = []
    for g in payload["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
