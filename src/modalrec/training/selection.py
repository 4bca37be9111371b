"""Settings chosen on VALID after training (`select` in the experiment config), before TEST's one evaluation.

Early stopping picks an epoch on VALID; these pick four more settings the same way, the first three for the case
where training on the warm items of a log costs the items nobody has taken yet (docs/benchmarks.md, "Cold start
and repeats on real data"):

- `new_item_offset` (SASRec, content or hybrid tower): a constant added to the score of every item without
  training events, so they compete with the items training raised (ID vectors, a projection fitted to them);
  with `offset_reach`, the smallest offset at which VALID cold items rank as well as under the named rule
  baselines, so a trained model need not lose new items to a rule that learns nothing;
- `blend_untrained`: the trained model's scores interpolated with its own untrained state's (models/blend.py);
- `new_item_gate`: the new-item offset per user, from a logistic regression fitted on VALID of how likely each
  user's next item is one without training events (models/new_item_gate.py);
- `repeat_bonus`: a constant added to the score of every item in the user's history window (models/repeat.py),
  for logs where people take items again.

Each sweep returns a `Choice`: the chosen value, every candidate's VALID metrics (recorded in the run's manifest,
`selection`, so the choice can be re-checked, and re-applied by `evaluate` and serving) and the VALID report at the
chosen value, so nothing evaluates VALID again once the choice is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modalrec.errors import ConfigError
from modalrec.evaluation.report import metric_or_none
from modalrec.types import batch_digest

OFFSETS = tuple(x / 4 for x in range(13))  # 0, 0.25, ..., 3 (logits)
BLEND_WEIGHTS = tuple(x / 10 for x in range(11))  # 0 (the trained model), 0.1, ..., 1 (the untrained one)
REPEAT_BONUSES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # logits; 64 puts history first in practice
METRIC = "ndcg@10"


def offset_rule(tolerance: float, metric: str = METRIC) -> str:
    return (f"best VALID cold-item {metric} among the offsets whose VALID overall {metric} is >= "
            f"{1 - tolerance:.3g} x the offset-0 model's; ties to the smaller offset")


def reach_rule(tolerance: float, rules: Sequence[str], floor: float, metric: str = METRIC) -> str:
    return (f"smallest offset whose VALID cold-item {metric} reaches the best of {sorted(rules)} on VALID "
            f"({floor:.4g}) among the offsets whose VALID overall {metric} is >= "
            f"{1 - tolerance:.3g} x the offset-0 model's; if none reaches it, {offset_rule(tolerance, metric)}")


def choose_offset(sweep: Sequence[dict[str, Any]], tolerance: float, floor: float | None = None) -> int:
    """Index into `sweep` (offset_sweep's records, offset 0 first) of the chosen offset: among the offsets whose
    overall metric is >= (1 - tolerance) x offset 0's, the smallest whose cold-item metric reaches `floor`, else
    (no floor, or none reaches it) the best cold-item metric, ties to the smaller offset."""
    least = (1.0 - tolerance) * (sweep[0]["overall"] or 0.0)
    allowed = [i for i, s in enumerate(sweep) if (s["overall"] or 0.0) >= least]  # offset 0 always
    if floor is not None:
        reaching = [i for i in allowed if (sweep[i]["cold_item"] or 0.0) >= floor]
        if reaching:
            return min(reaching, key=lambda i: sweep[i]["offset"])
    return max(allowed, key=lambda i: (sweep[i]["cold_item"] or 0.0, -sweep[i]["offset"]))


BLEND_RULE = (f"best VALID overall {METRIC} among the weights of the untrained model that score >= the untrained "
              "model alone on every VALID group; ties to the larger weight")


@dataclass
class Choice:
    """A setting chosen on VALID: its value, every candidate's VALID metrics, and the VALID Report at the value."""

    value: float  # (a gate: its slope; the offset is recorded beside it)
    sweep: list[dict[str, Any]]
    report: Any


def offset_sweep(model: Any, evaluate: Callable[[Any], Any], offsets: Sequence[float] = OFFSETS,
                 tolerance: float = 0.01, metric: str = METRIC, floor: float | None = None) -> Choice:
    """Choose `model.new_item_offset` on VALID: the offset that ranks VALID cold items best among the offsets
    whose VALID overall `metric` is at least (1 - tolerance) x the offset-0 model's, so the offset may cost
    warm targets at most that share; with `floor`, the smallest of them whose cold-item metric reaches it
    (choose_offset). `evaluate(model)` returns a VALID Report. Returns the Choice (each
    offset's overall, warm and cold-item metric: what a larger offset would cost warm targets, for a user choosing
    the tolerance) and leaves the model at the chosen offset."""
    if not offsets or offsets[0] != 0:
        raise ConfigError(f"offset_sweep needs offset 0 (the trained model) first, got {list(offsets)}")
    if not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"select.offset_tolerance must lie in [0, 1), got {tolerance}")
    sweep, reports = [], []
    for offset in offsets:
        model.new_item_offset = float(offset)
        reports.append(evaluate(model))
        sweep.append({"offset": float(offset), "overall": reports[-1].metric(metric),
                      **{g: metric_or_none(reports[-1], metric, g) for g in ("warm", "cold_item")}})
    at = choose_offset(sweep, tolerance, floor)
    model.new_item_offset = sweep[at]["offset"]
    return Choice(sweep[at]["offset"], sweep, reports[at])


def blend_sweep(blend: Any, evaluate: Callable[[Any], Any], weights: Sequence[float] = BLEND_WEIGHTS,
                metric: str = METRIC) -> Choice:
    """Choose a ScoreBlend's weight on VALID (BLEND_RULE): the best overall `metric` among the weights that score
    at least the reference alone (weight 1) on every event group with events, so blending in the trained model
    costs no group anything on VALID; weight 1 always qualifies. Ties go to the larger weight (more of the
    reference). `evaluate(model)` returns a VALID Report. Returns the Choice (each weight's overall and group
    metrics) and leaves `blend.weight` at the chosen weight."""
    if 1.0 not in weights:
        raise ConfigError(f"blend_sweep needs weight 1 (the reference alone) among the weights, got {list(weights)}")
    sweep, reports = [], []
    for w in weights:
        blend.weight = w
        reports.append(evaluate(blend))
        rep = reports[-1]
        groups = {g: rep.metric(metric, g) for g in rep.groups if rep.counts.get(g, 0) > 0}
        sweep.append({"weight": float(w), "overall": rep.metric(metric), "groups": groups})
    ref = next(s for s in sweep if s["weight"] == 1.0)

    def loses_nothing(s: dict[str, Any]) -> bool:
        return all((s["groups"][g] or 0.0) >= (v or 0.0) for g, v in ref["groups"].items())

    at = max((i for i, s in enumerate(sweep) if loses_nothing(s)),
             key=lambda i: (sweep[i]["overall"] or 0.0, sweep[i]["weight"]))
    blend.weight = sweep[at]["weight"]
    return Choice(sweep[at]["weight"], sweep, reports[at])


GATE_STEPS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0)  # multiples of the model's score scale (score_scale)
GATE_RULE = (f"best VALID overall {METRIC} by coordinate search: the slope (offset 0), then the offset at that slope, "
             "then the slope at that offset, over 0 and +-GATE_STEPS x the score scale (slopes >= 0); ties to the "
             "smaller |slope|, then |offset|")


def gate_tolerance_rule(tolerance: float, metric: str = METRIC) -> str:
    return (f"best VALID cold-item {metric} over every offset (0, +-GATE_STEPS) and slope (0, GATE_STEPS) x the "
            f"score scale whose VALID overall {metric} is >= {1 - tolerance:.3g} x the model's without the gate; "
            "ties to the smaller |slope|, then |offset|")


def gate_sweep(gate: Any, evaluate: Callable[[Any], Any], steps: Sequence[float] = GATE_STEPS,
               metric: str = METRIC, tolerance: float | None = None) -> Choice:
    """Choose a fitted NewItemGate's offset and slope on VALID, in units of the wrapped model's score scale (the
    mean over VALID users of the standard deviation of their scores), so one grid serves models whose scores are
    logits and rules whose scores are cosines. Without `tolerance`, GATE_RULE: the best overall metric. With it,
    gate_tolerance_rule: the gate spends up to that share of the ungated model's VALID overall metric on items
    without training events, as select.offset_tolerance does for the offset -- a whole grid, since the coordinate
    search follows the overall metric. `evaluate(model)` returns a VALID Report. Returns the Choice (value: the
    slope; every candidate's overall, warm and cold-item metric) and leaves the gate at the chosen offset and
    slope."""
    if tolerance is not None and not 0.0 <= tolerance < 1.0:
        raise ConfigError(f"select.gate_tolerance must lie in [0, 1), got {tolerance}")
    reports: dict[tuple[float, float], Any] = {}

    def value(offset: float, slope: float, group: str | None = None) -> float:
        if (offset, slope) not in reports:
            gate.offset, gate.slope = offset, slope
            reports[(offset, slope)] = evaluate(gate)
        rep = reports[(offset, slope)]
        return (rep.metric(metric) if group is None else metric_or_none(rep, metric, group)) or 0.0

    def best(candidates: Sequence[tuple[float, float]], group: str | None = None) -> tuple[float, float]:
        return max(candidates, key=lambda c: (value(*c, group), -abs(c[1]), -abs(c[0])))

    with gate.reused_scores():
        ungated = value(0.0, 0.0)
        unit = gate.score_scale()
        slopes = [0.0] + [s * unit for s in steps]
        offsets = [0.0] + [sign * s * unit for s in steps for sign in (1.0, -1.0)]
        if tolerance is None:
            slope = best([(0.0, s) for s in slopes])[1]
            offset = best([(o, slope) for o in offsets])[0]
            offset, slope = best([(offset, s) for s in slopes])
        else:
            grid = [(o, s) for s in slopes for o in offsets]
            allowed = [c for c in grid if value(*c) >= (1.0 - tolerance) * ungated]  # (0, 0) always
            offset, slope = best(allowed, "cold_item")
    gate.offset, gate.slope = offset, slope
    sweep = [{"offset": o, "slope": s, "overall": rep.metric(metric),
              **{g: metric_or_none(rep, metric, g) for g in ("warm", "cold_item")}} for (o, s), rep in reports.items()]
    return Choice(slope, sweep, reports[(offset, slope)])


REPEAT_RULE = f"best VALID overall {METRIC}; ties to the smaller bonus"


def repeat_sweep(scorer: Any, evaluate: Callable[[Any], Any], bonuses: Sequence[float] = REPEAT_BONUSES,
                 metric: str = METRIC) -> Choice:
    """Choose a RepeatBonus's bonus on VALID (REPEAT_RULE). `evaluate(model)` returns a VALID Report. Returns the
    Choice (each bonus's overall, repeat and novel metric) and leaves `scorer.bonus` at the chosen bonus."""
    if not bonuses or bonuses[0] != 0:
        raise ConfigError(f"repeat_sweep needs bonus 0 (the model alone) first, got {list(bonuses)}")
    sweep, reports = [], []
    for bonus in bonuses:
        scorer.bonus = bonus
        reports.append(evaluate(scorer))
        sweep.append({"bonus": float(bonus), "overall": reports[-1].metric(metric),
                      **{g: metric_or_none(reports[-1], metric, g) for g in ("repeat", "novel")}})
    at = max(range(len(sweep)), key=lambda i: (sweep[i]["overall"] or 0.0, -sweep[i]["bonus"]))
    scorer.bonus = sweep[at]["bonus"]
    return Choice(sweep[at]["bonus"], sweep, reports[at])


def select_on_valid(model: Any, untrained: nn.Module | None, cfg: Any, evaluate: Callable[[Any], Any],
                    rules: Callable[[str], Any] | None = None,
                    gate_events: Callable[[], tuple[torch.Tensor, torch.Tensor, Any]] | None = None,
                    ) -> tuple[Any, dict[str, Any], Any]:
    """(the model to evaluate on TEST, the manifest's `selection` record, its VALID Report) for `cfg`
    (experiment.SelectConfig): the new-item offset first, then the blend of the (offset) model with `untrained`,
    its state before fit, then the new-item gate, then the repeat bonus over the result. `rules(name)` returns the
    fitted rule baseline `name` (cfg.offset_reach); `gate_events()` VALID's history windows [E, L], targets [E] and
    the training event counts per item [N + 1] (cfg.new_item_gate). Without any setting: (model, {}, None)."""
    with reused_states(model, untrained):
        return _select(model, untrained, cfg, evaluate, rules, gate_events)


def fitted_gate(model: Any, gate_events: Callable[[], tuple[torch.Tensor, torch.Tensor, Any]]) -> Any:
    """A NewItemGate over `model`, its logistic regression fitted on VALID's events (offset and slope 0)."""
    from modalrec.models.new_item_gate import NewItemGate, fit_gate, history_features

    histories, targets, counts = gate_events()
    counts = torch.as_tensor(counts, dtype=torch.int64)
    is_new = counts[torch.as_tensor(targets, dtype=torch.int64)] == 0  # targets are training-vocabulary items
    return NewItemGate(model, counts, fit_gate(history_features(histories, counts), is_new))


def gate_on_valid(model: Any, gate_events: Callable[[], tuple[torch.Tensor, torch.Tensor, Any]],
                  evaluate: Callable[[Any], Any], tolerance: float | None = None) -> tuple[Any, dict[str, Any], Any]:
    """A NewItemGate over `model` fitted on VALID's events and swept on VALID (GATE_RULE, or with `tolerance`
    gate_tolerance_rule): (the gate at the chosen offset and slope, its `selection.new_item_gate` record -- fit,
    offset and slope, what recorded_gate rebuilds it from, the rule and every candidate's VALID metrics --, the VALID
    Report at the choice)."""
    gate = fitted_gate(model, gate_events)
    choice = gate_sweep(gate, evaluate, tolerance=tolerance)
    rule = GATE_RULE if tolerance is None else gate_tolerance_rule(tolerance)
    record = {"fit": gate.fit.to_dict(), "offset": gate.offset, "slope": gate.slope, "rule": rule,
              "valid_sweep": choice.sweep}
    return gate, record, choice.report


def _select(model: Any, untrained: nn.Module | None, cfg: Any, evaluate: Callable[[Any], Any],
            rules: Callable[[str], Any] | None,
            gate_events: Callable[[], tuple[torch.Tensor, torch.Tensor, Any]] | None) -> tuple[Any, dict[str, Any], Any]:
    from modalrec.models.blend import ScoreBlend
    from modalrec.models.repeat import RepeatBonus

    record: dict[str, Any] = {}
    report = None
    if cfg.new_item_offset:
        if cfg.offset_reach and rules is None:
            raise ConfigError("select.offset_reach: no rule baselines to evaluate were given")
        reach = {name: metric_or_none(evaluate(rules(name)), METRIC, "cold_item") for name in cfg.offset_reach}
        floor = max((v or 0.0 for v in reach.values()), default=None)
        choice = offset_sweep(model, evaluate, tolerance=cfg.offset_tolerance, floor=floor)
        rule = (reach_rule(cfg.offset_tolerance, list(reach), floor) if floor is not None
                else offset_rule(cfg.offset_tolerance))
        record["new_item_offset"] = {"chosen": choice.value, "rule": rule, "valid_sweep": choice.sweep,
                                     **({"reach_valid_cold_item": reach} if reach else {})}
        report = choice.report
    if cfg.blend_untrained:
        if untrained is None:
            raise ConfigError("select.blend_untrained: the model's untrained state was not kept")
        blend = ScoreBlend(model, untrained.eval())
        choice = blend_sweep(blend, evaluate)
        record["blend_untrained"] = {"chosen": choice.value, "rule": BLEND_RULE, "valid_sweep": choice.sweep}
        model, report = blend, choice.report
    if cfg.new_item_gate:
        if gate_events is None:
            raise ConfigError("select.new_item_gate: no VALID events to fit the gate on were given")
        model, record["new_item_gate"], report = gate_on_valid(model, gate_events, evaluate, cfg.gate_tolerance)
    if cfg.repeat_bonus:
        scorer = RepeatBonus(model)
        choice = repeat_sweep(scorer, evaluate)
        record["repeat_bonus"] = {"chosen": choice.value, "rule": REPEAT_RULE, "valid_sweep": choice.sweep}
        model, report = scorer, choice.report
    return model, record, report


@contextmanager
def reused_states(*models: nn.Module | None) -> Iterator[None]:
    """Within the sweeps each model's state (`forward`) depends on the batch alone, not on the offset, weight or
    bonus being swept, so every candidate's VALID pass reuses the state the first one computed for each batch
    (a VALID pass of a SASRec is mostly its transformer). Keyed by a digest of every tensor of the batch; stateful
    models (their state moves with the events streamed) compute theirs each time. The models' own `forward`
    is back when the block exits, before TEST."""
    patched = [m for m in models if isinstance(m, nn.Module) and not getattr(m, "stateful", False)
               and "forward" not in vars(m)]
    for m in patched:
        m.forward = _memoised(m.forward)  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _memoised(forward: Callable[[Any], torch.Tensor]) -> Callable[[Any], torch.Tensor]:
    states: dict[bytes, torch.Tensor] = {}

    def state(batch: Any) -> torch.Tensor:
        key = batch_digest(batch)
        if key not in states:
            states[key] = forward(batch)
        return states[key]

    return state


def apply_selection(model: Any, untrained: nn.Module | None, record: dict[str, Any], counts: Any = None) -> Any:
    """Re-apply a run's recorded `selection` to its rebuilt trained model (and its rebuilt untrained state);
    `counts`: training events per item [N + 1], which a recorded new-item gate reads."""
    from modalrec.models.blend import ScoreBlend

    if "new_item_offset" in record:
        model.new_item_offset = float(record["new_item_offset"]["chosen"])
    if "blend_untrained" in record:
        if untrained is None:
            raise ConfigError("the run blends its model with the untrained state, but the run directory has no "
                              "untrained weights (untrained/)")
        model = ScoreBlend(model, untrained.eval(), float(record["blend_untrained"]["chosen"]))
    if "new_item_gate" in record:
        model = recorded_gate(model, record["new_item_gate"], counts)
    if "repeat_bonus" in record:
        from modalrec.models.repeat import RepeatBonus

        model = RepeatBonus(model, float(record["repeat_bonus"]["chosen"]))
    return model


def recorded_gate(model: Any, gate: dict[str, Any], counts: Any) -> Any:
    """The NewItemGate a run recorded (`selection.new_item_gate`: fit, offset, slope) over `model`."""
    from modalrec.models.new_item_gate import GateFit, NewItemGate

    if counts is None:
        raise ConfigError("the run's new-item gate needs the training event counts per item")
    return NewItemGate(model, counts, GateFit.from_dict(gate["fit"]), float(gate["offset"]), float(gate["slope"]))
