"""Dataset-scale jobs on Lightning's own machinery: explain whole datasets, mine shortcuts from the
results."""

from pi_lightning.jobs.explain import (
    ExplainModule,
    ExplainSummary,
    ShardWriter,
    explain_dataset,
    load_attributor,
    load_results,
    read_examples,
    score_results,
)
from pi_lightning.jobs.shortcuts import ShortcutReport, counterfactual_check, mine_shortcuts
from pi_lightning.result import ExplainRow

__all__ = [
    "ExplainModule",
    "ExplainRow",
    "ExplainSummary",
    "ShardWriter",
    "ShortcutReport",
    "counterfactual_check",
    "explain_dataset",
    "load_attributor",
    "load_results",
    "mine_shortcuts",
    "read_examples",
    "score_results",
]
