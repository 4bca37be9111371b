"""Full-ranking evaluation: metrics from ranks, the chunked Evaluator, and Reports."""

from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.metrics import compute_metrics, hit_rate, mrr, ndcg, ranks_from_scores, recall
from modalrec.evaluation.report import Report, bar_chart, compare_table
from modalrec.evaluation.sampled import SampledConfig

__all__ = [
    "Evaluator",
    "Report",
    "SampledConfig",
    "bar_chart",
    "compare_table",
    "compute_metrics",
    "hit_rate",
    "mrr",
    "ndcg",
    "ranks_from_scores",
    "recall",
]
