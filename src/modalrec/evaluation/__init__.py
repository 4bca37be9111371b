"""Evaluation: the metric table, the ranking core, the chunked Evaluator (sharded: distributed.py), streaming
evaluation of stateful models (streaming.py), and Reports."""

from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.metrics import METRICS, Metric, compute_metrics, hit_rate, mrr, ndcg, recall
from modalrec.evaluation.ranking import rank_block
from modalrec.evaluation.report import Report, bar_chart, compare_table
from modalrec.evaluation.sampled import SampledConfig

__all__ = [
    "METRICS",
    "Evaluator",
    "Metric",
    "Report",
    "SampledConfig",
    "bar_chart",
    "compare_table",
    "compute_metrics",
    "hit_rate",
    "mrr",
    "ndcg",
    "rank_block",
    "recall",
]
