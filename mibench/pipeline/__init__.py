"""One run pipeline for both tracks: ``evaluate``, ``score`` and ``submission evaluate`` all go through it.

:func:`run_evaluation` (circuit track) and :func:`run_causal_evaluation` (causal track) run the shared
sequence of :mod:`mibench.pipeline.sequence` with their track's steps. Importing this package is cheap;
torch is imported when a run starts.
"""

from mibench.pipeline.causal import CausalRequest, CausalResult, run_causal_evaluation
from mibench.pipeline.circuit import EvaluationRequest, EvaluationResult, run_evaluation
from mibench.pipeline.header import ELIGIBLE_SPLITS, RunRequest, eligibility_notes
from mibench.pipeline.sequence import RunResult, Track, run_track

__all__ = [
    "ELIGIBLE_SPLITS",
    "CausalRequest",
    "CausalResult",
    "EvaluationRequest",
    "EvaluationResult",
    "RunRequest",
    "RunResult",
    "Track",
    "eligibility_notes",
    "run_causal_evaluation",
    "run_evaluation",
    "run_track",
]
