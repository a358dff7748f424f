"""Dataset-scale jobs on Lightning's own machinery: explain whole datasets, mine shortcuts from the results."""

from pi_lightning.jobs.explain import (
    ExplainModule,
    ExplainSummary,
    ShardWriter,
    explain_dataset,
    load_results,
    read_examples,
)

__all__ = ["ExplainModule", "ExplainSummary", "ShardWriter", "explain_dataset", "load_results", "read_examples"]
