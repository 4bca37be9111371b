"""Ablation grids: run every meaningful combination of config values and write one results table.

    run_ablation(base, {"model.params.tower.kind": ["id", "text", "image", "text+image"],
                        "model.params.tower.fusion": ["mlp", "film", "gated"],
                        "model.name": ["sasrec", "gru4rec"]}, "runs/ablation")

Grid keys are dotted paths into the experiment config. Each grid point is one
`modalrec.pipeline.run_experiment` run in `<out_dir>/runs/<point>/`; a point whose `report.json`
exists is not rerun (a killed grid resumes where it stopped, and an interrupted training resumes
from its last epoch). Meaningless combinations are run once, and the reason is recorded:

- a fusion only matters for towers with several modalities (text+image, a two-modality hybrid);
- tower settings (kind, fusion, dropout, options) do not apply to models without an item tower (pop),
  and only `tower.kind` applies to the ID tower;
- feature settings (`features.*`) do not apply to runs that read no content (ID tower, no tower);
- base `model.params` keys that belong to another model (e.g. `n_heads` of SASRec for GRU4Rec) are
  dropped for models that lack them.

Outputs: results.md (VALID next to TEST for the chosen metrics and groups; the winner is the point with
the best VALID value of the first metric overall, marked in the table — TEST never chooses), results.json,
and a bar chart PNG of warm vs cold-item NDCG@10 on TEST.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalrec.config import from_dict, to_dict
from modalrec.errors import ConfigError
from modalrec.evaluation.report import Report, bar_chart
from modalrec.experiment import ExperimentConfig, seeded, with_model_defaults
from modalrec.io import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

TOWER = "model.params.tower."
MULTIMODAL_KINDS = ("text+image",)  # tower kinds whose vector fuses several modalities
CONTENT_KINDS = ("text", "image", "text+image", "hybrid")


@dataclass
class GridPoint:
    name: str  # directory name under <out_dir>/runs
    label: str  # row name in the table
    overrides: dict[str, Any]  # effective dotted overrides of this point
    config: ExperimentConfig


@dataclass
class AblationResult:
    table: str  # markdown: VALID and TEST per point, the VALID winner marked
    reports: dict[str, Report]  # label -> TEST report
    points: list[GridPoint]
    skipped: list[dict[str, Any]]  # grid combinations folded into another point, with the reason
    status: dict[str, str]  # label -> "ran" | "resumed" | "failed: ..."
    out_dir: Path
    notes: list[str] = field(default_factory=list)
    valid_reports: dict[str, Report] = field(default_factory=dict)  # label -> VALID report of the selected epoch
    winner: str | None = None  # label with the best VALID value of the first metric, overall

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.status.items() if v.startswith("failed")]

    def __str__(self) -> str:
        return self.table


def load_grid(data: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Normalise a grid mapping: dotted key -> list of values (a scalar is a one-value list)."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("an ablation grid is a non-empty mapping of dotted config keys to lists of values")
    grid: dict[str, list[Any]] = {}
    for key, values in data.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w+\-]*(\.[A-Za-z_][\w+\-]*)*", key):
            raise ConfigError(f"grid key {key!r} is not a dotted config path (e.g. model.params.tower.kind)")
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise ConfigError(f"grid key {key!r} has no values")
        grid[key] = values
    return grid


def _get(data: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"grid key {path!r}: '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def _config_fields(model_name: str) -> set[str]:
    from modalrec.models import MODELS

    if model_name not in MODELS:
        raise ConfigError(f"unknown model {model_name!r}; available: {sorted(MODELS)}")
    return {f.name for f in dataclasses.fields(MODELS[model_name][1])}


def _model_names() -> list[str]:
    from modalrec.models import MODELS

    return list(MODELS)


def _irrelevant(key: str, data: Mapping[str, Any]) -> str | None:
    """Why grid key `key` has no effect for the point `data` (None if it matters)."""
    model = _get(data, "model.name", "sasrec")
    has_tower = "tower" in _config_fields(model)
    kind = _get(data, "model.params.tower.kind", "id")
    if key.startswith(TOWER) or key == TOWER[:-1]:
        if not has_tower:
            return f"model {model!r} has no item tower"
        if kind == "id" and key != TOWER + "kind":
            return "the ID tower has no content settings"
        if key == TOWER + "fusion" and not _fuses(data, kind):
            return f"tower kind {kind!r} has a single modality (fusion does not apply)"
    elif key.startswith("model.params."):
        name = key.split(".")[2]
        if name not in _config_fields(model):
            if not any(name in _config_fields(m) for m in _model_names()):
                raise ConfigError(f"grid key {key!r}: no model has a parameter {name!r}")
            return f"model {model!r} has no parameter {name!r}"
    elif key.startswith("features.") and (not has_tower or kind == "id"):
        return "the run reads no content features"
    return None


def _fuses(data: Mapping[str, Any], kind: str) -> bool:
    if kind in MULTIMODAL_KINDS:
        return True
    if kind != "hybrid":
        return False
    content = _get(data, "model.params.tower.options.content", "auto")
    if content == "auto":  # both modalities configured (a store may hold both: assume it does)
        feats = _get(data, "features", {}) or {}
        return bool(feats.get("store")) or bool(feats.get("text") and feats.get("image"))
    return content in MULTIMODAL_KINDS


def _fit_params(data: dict[str, Any], notes: list[str]) -> None:
    """Drop base model.params keys that belong to another model (and say so); unknown keys stay (-> error)."""
    model = _get(data, "model.name", "sasrec")
    params = _get(data, "model.params", {}) or {}
    own = _config_fields(model)
    others = set().union(*(_config_fields(n) for n in _model_names()))
    for key in sorted(set(params) - own):
        if key in others:
            del params[key]
            note = f"model.params.{key} dropped for {model} (not a parameter of that model)"
            if note not in notes:
                notes.append(note)


def _check_features(point: GridPoint) -> None:
    """Fail before any training if a content tower lacks the features it needs."""
    tower = point.config.model.params.get("tower") or {}
    kind = tower.get("kind", "id") if isinstance(tower, Mapping) else "id"
    feats = point.config.features
    if kind not in CONTENT_KINDS or feats.store:
        return
    need = {"text": ["text"], "image": ["image"], "text+image": ["text", "image"], "hybrid": []}[kind]
    if kind == "hybrid" and not (feats.text or feats.image):
        need = ["text"]
    lacking = [m for m in need if not getattr(feats, m)]
    if lacking:
        raise ConfigError(f"grid point {point.label!r}: tower kind {kind!r} needs features.{lacking[0]} "
                          f"(an encoder such as {'minilm' if lacking[0] == 'text' else 'efficientnet-lite0'}) "
                          "or features.store")


def _short(key: str) -> str:
    for prefix in ("model.params.", "model."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _slug(overrides: Mapping[str, Any]) -> str:
    parts = [str(v) if k == "model.name" else f"{_short(k)}={v}" for k, v in overrides.items()]
    slug = re.sub(r"[^A-Za-z0-9._+=,-]", "_", "__".join(parts)) or "base"
    return slug if len(slug) <= 120 else slug[:100] + "-" + hashlib.sha256(slug.encode()).hexdigest()[:10]


def expand_grid(base: ExperimentConfig, grid: Mapping[str, Sequence[Any]],
                ) -> tuple[list[GridPoint], list[dict[str, Any]], list[str]]:
    """Grid points (meaningless combinations folded), the folded combinations with reasons, notes."""
    grid = load_grid(grid)
    base_data = to_dict(base)
    points: list[GridPoint] = []
    seen: dict[str, GridPoint] = {}
    skipped: list[dict[str, Any]] = []
    notes: list[str] = []
    for values in itertools.product(*grid.values()):
        requested = dict(zip(grid, values))
        data = copy.deepcopy(base_data)
        for key, value in requested.items():
            _set(data, key, value)
        reasons = {k: r for k in requested if (r := _irrelevant(k, data)) is not None}
        effective = {k: v for k, v in requested.items() if k not in reasons}
        if reasons:  # rebuild from the base without the inapplicable values (so they leave no trace)
            data = copy.deepcopy(base_data)
            for key, value in effective.items():
                _set(data, key, value)
        _fit_params(data, notes)
        key = json.dumps(effective, sort_keys=True, default=str)
        label = ", ".join(str(v) if k == "model.name" else f"{_short(k)}={v}" for k, v in effective.items()) or "base"
        if key in seen:
            skipped.append({"requested": requested, "runs_as": seen[key].label,
                            "reason": "; ".join(f"{_short(k)}: {r}" for k, r in reasons.items())})
            continue
        data["name"] = _slug(effective)
        try:
            cfg = from_dict(ExperimentConfig, data)
        except ConfigError as exc:
            raise ConfigError(f"grid point {label!r}: {exc}") from exc
        point = GridPoint(data["name"], label, effective, cfg)
        _validate_model_params(point)
        _check_features(point)
        seen[key] = point
        points.append(point)
    return points, skipped, notes


def _validate_model_params(point: GridPoint) -> None:
    from modalrec.models import MODELS

    model_cls_cfg = MODELS[point.config.model.name][1]
    try:
        from_dict(model_cls_cfg, point.config.model.params, where="model.params")
    except ConfigError as exc:
        raise ConfigError(f"grid point {point.label!r}: {exc}") from exc


def _same_config(run_dir: Path, cfg: ExperimentConfig) -> bool:
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return True
    saved = json.loads(manifest.read_text()).get("config")  # runs record their seeded config
    effective = with_model_defaults(seeded(cfg))[0]  # as the run recorded it: the model's recipe filled in
    return saved is None or saved == json.loads(json.dumps(to_dict(effective), default=str))


def run_ablation(
    base: ExperimentConfig,
    grid: Mapping[str, Sequence[Any]],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = ("ndcg@10", "hr@10"),
    groups: Sequence[str] = ("overall", "warm", "cold_item"),
    chart_groups: Sequence[str] = ("warm", "cold_item"),
    runner: Callable[[ExperimentConfig], Any] | None = None,
    stop_on_error: bool = False,
) -> AblationResult:
    """Run every grid point (resuming finished ones) and write results.md / results.json / the chart."""
    if runner is None:
        from modalrec.pipeline import run_experiment

        runner = run_experiment
    out = Path(out_dir)
    points, skipped, notes = expand_grid(base, grid)
    for s in skipped:
        log.info("not run separately: %s -> %s (%s)", s["requested"], s["runs_as"], s["reason"])
    reports: dict[str, Report] = {}
    valid: dict[str, Report] = {}
    status: dict[str, str] = {}
    for i, point in enumerate(points, 1):
        cfg = dataclasses.replace(point.config, output_dir=str(out / "runs"))
        run_dir = out / "runs" / point.name
        if (run_dir / "report.json").is_file():
            if not _same_config(run_dir, cfg):
                raise ConfigError(f"{run_dir} holds a finished run with a different config; "
                                  "use another output directory or delete that run")
            reports[point.label] = Report.from_json(run_dir / "report.json")
            if (run_dir / "valid_report.json").is_file():
                valid[point.label] = Report.from_json(run_dir / "valid_report.json")
            status[point.label] = "resumed"
            log.info("[%d/%d] %s: finished earlier, not rerun", i, len(points), point.label)
            continue
        log.info("[%d/%d] %s", i, len(points), point.label)
        t0 = time.perf_counter()
        try:
            result = runner(cfg)
        except Exception as exc:  # one broken point must not lose the others' results
            if stop_on_error:
                raise
            log.exception("grid point %s failed", point.label)
            status[point.label] = f"failed: {type(exc).__name__}: {exc}"
            continue
        reports[point.label] = result.test
        if getattr(result, "valid", None) is not None:
            valid[point.label] = result.valid
        status[point.label] = "ran"
        log.info("[%d/%d] %s done in %.1fs", i, len(points), point.label, time.perf_counter() - t0)
    winner = valid_winner(valid, metrics[0])
    table = valid_test_table(valid, reports, metrics, groups, winner) if reports else "(no finished runs)"
    result = AblationResult(table, reports, points, skipped, status, out, notes, valid, winner)
    _write(result, base, grid, metrics, groups, chart_groups)
    return result


def valid_winner(valid: Mapping[str, Report], metric: str) -> str | None:
    """The label with the highest VALID `metric` overall (first in grid order on a tie); None without VALID."""
    scored = [(r.overall.get(metric), label) for label, r in valid.items() if r.overall.get(metric) is not None]
    if not scored:
        return None
    best = max(v for v, _ in scored)
    return next(label for v, label in scored if v == best)


def valid_test_table(valid: Mapping[str, Report], test: Mapping[str, Report], metrics: Sequence[str],
                     groups: Sequence[str], winner: str | None) -> str:
    """One row per point: VALID then TEST columns per (metric, group); the VALID winner is marked."""
    def cells(rep: Report | None) -> list[str]:
        return ["n/a" if rep is None or (v := _value(rep, m, g)) is None else f"{v:.4f}" for g in groups for m in metrics]

    header = [f"{part} {m} {g}" for part in ("VALID", "TEST") for g in groups for m in metrics]
    lines = ["| run | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for label, rep in test.items():
        name = f"**{label}** (best on VALID)" if label == winner else label
        lines.append(f"| {name} | " + " | ".join(cells(valid.get(label)) + cells(rep)) + " |")
    return "\n".join(lines)


def _value(rep: Report, metric: str, group: str) -> float | None:
    try:
        return rep.metric(metric, group)
    except KeyError:  # a run without that group / metric still renders
        return None


def _write(res: AblationResult, base: ExperimentConfig, grid: Mapping[str, Sequence[Any]],
           metrics: Sequence[str], groups: Sequence[str], chart_groups: Sequence[str]) -> None:
    out = res.out_dir
    out.mkdir(parents=True, exist_ok=True)
    chart = None
    if res.reports and "ndcg@10" in next(iter(res.reports.values())).overall:
        chart = bar_chart(res.reports, "ndcg@10", chart_groups, out / "ndcg10_warm_vs_cold.png",
                          title="NDCG@10 by test group")
    first = next(iter(res.reports.values()), None)
    meta = first.meta if first is not None else {}
    lines = [f"# Ablation: {base.name}", ""]
    if meta.get("dataset"):
        ds = meta["dataset"]
        lines.append(f"Dataset `{ds.get('name')}` (hash {ds.get('hash')}): {ds.get('users')} users, "
                     f"{ds.get('items')} items, {ds.get('interactions')} interactions.")
    if meta.get("split"):
        sp, t = meta["split"], meta["split"].get("test") or {}
        groups_txt = ", ".join(f"{g.replace('_', ' ')} {t[g]}" for g in ("warm", "cold_item", "cold_user") if g in t)
        lines.append(f"Split `{sp.get('name')}`; {t.get('events')} test events ({groups_txt}).")
    lines += ["Full ranking over the catalogue, pessimistic ties; " + str(meta.get("candidates", "history excluded"))
              + ". Best VALID epoch per run, TEST once; the winner is chosen on VALID "
              + (f"(`{res.winner}`)." if res.winner else "(no VALID reports)."), "", res.table, ""]
    if chart is not None:
        lines += [f"![NDCG@10 warm vs cold]({chart.name})", ""]
    lines += ["Grid: " + "; ".join(f"`{k}` = {list(v)}" for k, v in load_grid(grid).items()), ""]
    if res.skipped:
        lines.append("Combinations run once (a setting does not apply):")
        lines += [f"- {s['requested']} -> `{s['runs_as']}` ({s['reason']})" for s in res.skipped]
        lines.append("")
    lines += [f"- {n}" for n in res.notes]
    failed = {k: v for k, v in res.status.items() if v.startswith("failed")}
    if failed:
        lines += ["", "Failed points:"] + [f"- {k}: {v}" for k, v in failed.items()]
    write_bytes_atomic(out / "results.md", ("\n".join(lines).rstrip() + "\n").encode())
    write_json_atomic(out / "results.json", {
        "base": to_dict(base),
        "grid": {k: list(v) for k, v in load_grid(grid).items()},
        "metrics": list(metrics), "groups": list(groups),
        "points": [{"name": p.name, "label": p.label, "overrides": p.overrides, "status": res.status.get(p.label),
                    "run_dir": str(out / "runs" / p.name),
                    "report": res.reports[p.label].to_dict() if p.label in res.reports else None,
                    "valid_report": res.valid_reports[p.label].to_dict() if p.label in res.valid_reports else None}
                   for p in res.points],
        "winner_on_valid": res.winner,
        "skipped": res.skipped, "notes": res.notes, "chart": None if chart is None else chart.name,
    })
