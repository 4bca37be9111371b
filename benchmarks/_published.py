"""Published results on the shared data, the protocol that produced them, and our numbers restated under it.

A published number compares with ours only under the paper's candidate rule. This project ranks a repeat
target (an item already in the user's history) and reports it in the `repeat` group; the IISAN papers mask
every earlier item of the user, the target included, so a repeat target can never be hit there. Every
comparison therefore shows three views of the same run (metrics in %):
- `all_targets`: this project's rule (history items other than the target excluded, repeat kept rankable);
- `novel_targets`: only targets not in the user's history (both rules rank these the same way);
- `history_masked`: the paper's rule, every TEST event counted and a repeat target a miss, i.e. the novel
  targets' hits over all events (exact for our evaluator: a masked repeat target scores 0).
"""

from __future__ import annotations

from typing import Any

# The IISAN papers' numbers on the Amazon files in ../shared/data/amazon-iisan, as listed in that folder's README. Protocol from their public code (GAIR-Lab/IISAN, Code_Uncached:
# data_utils/preprocess.py keeps each sequence's last max_seq_len + 3 = 13 items; metrics.py sets the score of
# every item in `users_history_for_test = user_seq[:-1]` to -inf before ranking).
IISAN = {
    "paper": "IISAN papers",
    "protocol": "leave-one-out over the same user files, each sequence cut to its last 13 items (10 as input), "
                "full ranking over every item, every earlier item of the user masked — a repeat target too, so "
                "it counts as a miss —, HR@10 / NDCG@10 over all TEST users, ties in sort order; titles + images "
                "with their own encoders",
    "masks_history": True,
    "pct": {
        "iisan_scientific": {"frozen backbone": {"hr@10": 6.00, "ndcg@10": 3.53},
                             "full fine-tuning": {"hr@10": 6.62, "ndcg@10": 4.06},
                             "IISAN-VS": {"hr@10": 6.83, "ndcg@10": 4.14},
                             "IISAN-VA": {"hr@10": 7.29, "ndcg@10": 4.41}},
        "iisan_instruments": {"full fine-tuning": {"hr@10": 8.76, "ndcg@10": 6.76},
                              "IISAN-VS": {"hr@10": 9.06, "ndcg@10": 7.01},
                              "IISAN-VA": {"hr@10": 9.52, "ndcg@10": 7.17}},
    },
}
METRICS = ("hr@10", "ndcg@10")
VIEWS = ("all_targets", "novel_targets", "history_masked")


def restate(groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The three views (metrics in %) of one run from its per-group results {group: {"n", "hr@10", "ndcg@10"}}
    (metrics as fractions), which must hold `overall` and `novel`."""
    missing = [g for g in ("overall", "novel") if g not in groups]
    if missing:
        raise KeyError(f"per-group results lack {missing}: run with the repeat / novel groups")
    n_all, novel = groups["overall"]["n"], groups["novel"]
    pct = lambda v: None if v is None else round(100.0 * v, 3)
    return {
        "all_targets": {"n": n_all, **{m: pct(groups["overall"][m]) for m in METRICS}},
        "novel_targets": {"n": novel["n"], **{m: pct(novel[m]) for m in METRICS}},
        "history_masked": {"n": n_all, **{m: pct(0.0 if novel["n"] == 0 else novel[m] * novel["n"] / n_all)
                                          for m in METRICS}},
    }


def comparison(dataset: str, runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The published block of one dataset: paper, protocol, its numbers, and each of our runs restated
    (`runs`: model -> per-group results)."""
    return {"paper": IISAN["paper"], "protocol": IISAN["protocol"], "masks_history": IISAN["masks_history"],
            "published_pct": IISAN["pct"][dataset],
            "ours_pct": {model: restate(groups) for model, groups in runs.items()}}
