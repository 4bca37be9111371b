"""Key names of the config tree, read from the dataclass sources without importing them.

The config dataclasses live next to the torch code that uses them, and importing torch takes seconds.
Reading their field names from the source (`ast`) lets every command reject a misspelt key, including
one inside `model.params`, before torch is imported. The dataclasses stay the one home of each field:
`from_dict` later checks types and values on the real classes, and a test compares the names found
here with `dataclasses.fields` of every registered model config.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Any

from modalrec.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent
ROOT = ("modalrec.experiment", "ExperimentConfig")
REGISTRY = "modalrec.models"  # module whose MODELS maps a name to (model class, config class)


def check_keys(data: dict[str, Any]) -> None:
    """Raise ConfigError for the first unknown key (naming the valid ones) or unknown model name."""
    _check_section(data, ROOT, "")
    model = data.get("model")
    if not isinstance(model, dict):
        return
    configs = model_configs()
    name = model.get("name", _default(ROOT, "model", "name"))
    if name not in configs:
        raise ConfigError(f"model.name: unknown model {name!r}; available: {sorted(configs)}")
    params = model.get("params")
    if isinstance(params, dict):
        _check_section(params, configs[name], "model.params")


@cache
def model_configs() -> dict[str, tuple[str, str]]:
    """{model name: (module, config class)} from the MODELS table's source."""
    tree, imports = _module(REGISTRY)
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "MODELS" and isinstance(node.value, ast.Dict):
            out = {}
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Tuple):
                    out[key.value] = _resolve(REGISTRY, value.elts[1].id, imports)  # type: ignore[attr-defined]
            return out
    raise RuntimeError(f"no MODELS table in {REGISTRY}")  # pragma: no cover - a refactor broke the reader


@cache
def fields(module: str, cls: str) -> dict[str, tuple[str, str] | None]:
    """{field name: nested config class (module, name), or None} of a dataclass, base classes first."""
    _, imports = _module(module)
    node = _class(module, cls)
    out: dict[str, tuple[str, str] | None] = {}
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id not in ("object", "Generic", "Protocol"):
            out.update(fields(*_resolve(module, base.id, imports)))
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if "ClassVar" in ast.unparse(stmt.annotation):
                continue
            out[stmt.target.id] = _nested(module, stmt.annotation, imports)
    return out


def _check_section(data: dict[str, Any], cls: tuple[str, str], where: str) -> None:
    known = fields(*cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown config key(s) {keys}; valid: {sorted(known)}")
    for key, value in data.items():
        if known[key] is not None and isinstance(value, dict):
            _check_section(value, known[key], f"{where}.{key}" if where else key)  # type: ignore[arg-type]


def _nested(module: str, annotation: ast.expr, imports: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The config class an annotation names (`TowerConfig`, `TowerConfig | None`), if it is a dataclass."""
    names = [n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)]
    for name in names:
        try:
            target = _resolve(module, name, imports)
        except LookupError:
            continue
        if _is_dataclass(*target):
            return target
    return None


def _default(cls: tuple[str, str], section: str, key: str) -> Any:
    """The literal default of a nested section's field (e.g. the default model name)."""
    nested = fields(*cls)[section]
    assert nested is not None
    for stmt in _class(*nested).body:
        if isinstance(stmt, ast.AnnAssign) and getattr(stmt.target, "id", None) == key and stmt.value:
            return ast.literal_eval(stmt.value)
    return None


def _is_dataclass(module: str, cls: str) -> bool:
    return any("dataclass" in ast.unparse(d) for d in _class(module, cls).decorator_list)


def _class(module: str, cls: str) -> ast.ClassDef:
    tree, _ = _module(module)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None:
        raise LookupError(f"class {cls} not found in {module}")
    return node


def _resolve(module: str, name: str, imports: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(defining module, class name) of a name used in `module`, followed through re-exports."""
    tree, _ = _module(module)
    if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return module, name
    if name in imports:
        source, original = imports[name]
        return _resolve(source, original, _module(source)[1])
    raise LookupError(f"{name} is not a modalrec class visible in {module}")


@cache
def _module(module: str) -> tuple[ast.Module, dict[str, tuple[str, str]]]:
    """A modalrec module's syntax tree and its `from modalrec... import Name` bindings (defining module)."""
    rel = Path(*module.split(".")[1:])
    path = PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else (PACKAGE / rel).with_suffix(".py")
    tree = ast.parse(path.read_text(), str(path))
    imports: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modalrec"):
            for alias in node.names:
                imports[alias.asname or alias.name] = (node.module, alias.name)
    return tree, imports
