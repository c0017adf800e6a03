"""Third-party submissions: a folder with a ``submission.yaml`` card and importance / circuit files or a plugin.

:func:`check_submission` validates a folder without running any model (``mibench submission check``);
:func:`evaluate_submission` scores it into results records (``mibench submission evaluate``). The folder
format is described in ``submissions/README.md`` and in :mod:`mibench.submissions.check`.
"""

from mibench.submissions.card import CARD_FILE, Problem, SubmissionCard, load_submission_card
from mibench.submissions.check import (
    CIRCUIT_FRACTIONS,
    Cell,
    SubmissionReport,
    cell_folder_names,
    check_submission,
    inspect_submission,
)
from mibench.submissions.evaluate import InvalidSubmissionError, evaluate_submission
from mibench.submissions.models import ModelTarget, resolve_model, zoo_layout

__all__ = [
    "CARD_FILE",
    "CIRCUIT_FRACTIONS",
    "Cell",
    "InvalidSubmissionError",
    "ModelTarget",
    "Problem",
    "SubmissionCard",
    "SubmissionReport",
    "cell_folder_names",
    "check_submission",
    "evaluate_submission",
    "inspect_submission",
    "load_submission_card",
    "resolve_model",
    "zoo_layout",
]
