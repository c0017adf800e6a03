"""Score a checked submission into results records, exactly as ``mibench score`` / ``mibench evaluate`` would.

Importance files, and the nine binary circuits of MIB's multiple-circuit mode, are scored with
:func:`mibench.pipeline.run_evaluation` (one record per cell); the
record's method id becomes ``submission:<folder name>`` and its file path is written relative to the
submissions folder, so records from different machines agree. A plugin submission is evaluated by running
its (installed) method on every task x model pair of the card; its records are named
``submission:<folder name>`` too, and stamped with the plugin's distribution, installed version and method
id (``method.plugin``). Records go to
``<output_dir>/<submission name>/<task>/<model>/<run>/record.json``.
"""

from __future__ import annotations

from pathlib import Path

from mibench.errors import MibenchError
from mibench.submissions.card import Problem
from mibench.submissions.check import SubmissionReport, inspect_submission

SUBMISSION_NAMESPACE = "submission"


class InvalidSubmissionError(MibenchError):
    """The submission did not pass the checker; ``problems`` lists why."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(f"{self.path}: the submission has {len(self.problems)} problem(s), e.g. {self.problems[0]} "
                         f"(see 'mibench submission check {self.path}')")

    def __reduce__(self):
        return (type(self), (self.path, self.problems))


def submission_method_id(report: SubmissionReport) -> str:
    return f"{SUBMISSION_NAMESPACE}:{report.name}"


def evaluate_submission(
    path: str | Path,
    output_dir: str | Path = "results",
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    bootstrap: int = 1000,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str | None = None,
    progress: bool | None = None,
) -> list:
    """Check the submission, then score it; returns one ``EvaluationResult`` per cell.

    Raises :class:`InvalidSubmissionError` if the checker finds problems.
    """
    from mibench.pipeline import EvaluationRequest, run_evaluation

    report = inspect_submission(path)
    if report.problems:
        raise InvalidSubmissionError(path, report.problems)
    card = report.card
    assert card is not None
    out = Path(output_dir) / report.name
    if card.track == "causal":
        return _evaluate_causal(report, out, split=split, limit=limit, seed=seed, bootstrap=bootstrap,
                                batch_size=batch_size, device=device, dtype=dtype, progress=progress,
                                invocation=["mibench", "submission", "evaluate", str(path)])
    common = {"split": split, "limit": limit, "seed": seed, "bootstrap": bootstrap, "batch_size": batch_size,
              "device": device, "dtype": dtype, "output_dir": str(out), "progress": progress, "level": card.level,
              "invocation": ["mibench", "submission", "evaluate", str(path)]}
    results = []
    if card.contains == "plugin":
        assert card.plugin is not None
        from mibench.submissions.models import resolve_model

        stamp = _plugin_update(report)
        for task in card.tasks:
            for model in card.models:
                request = EvaluationRequest(task=task, model=resolve_model(model).source, method=card.plugin.method,
                                            **common)
                result = run_evaluation(request)
                _relabel(result, stamp, _circuit_plot)
                results.append(result)
        return results
    root = report.path.resolve().parent
    for cell in report.cells:
        if card.contains == "circuits":  # nine binary circuits, sorted by size by the checker
            request = EvaluationRequest(task=cell.task, model=cell.model.source,
                                        circuit_files=[str(f) for f in cell.files], **common)
            scored = cell.files[0].parent
        else:
            request = EvaluationRequest(task=cell.task, model=cell.model.source, circuit_file=str(cell.files[0]),
                                        **common)
            scored = cell.files[0]
        result = run_evaluation(request)
        _relabel(result, {"id": submission_method_id(report), "file": scored.resolve().relative_to(root).as_posix()},
                 _circuit_plot)
        results.append(result)
    return results


def _plugin_update(report: SubmissionReport) -> dict:
    """A plugin submission's records: named after the submission, stamped with the installed plugin."""
    from mibench.submissions.plugin import plugin_stamp

    assert report.card is not None
    return {"id": submission_method_id(report), "plugin": plugin_stamp(report.card)}


def _circuit_plot(record, path: Path) -> None:
    from mibench.circuits.report import plot_faithfulness

    plot_faithfulness(record, path)


def _causal_plot(record, path: Path) -> None:
    from mibench.causal.report import plot_heatmap

    plot_heatmap(record, path)


def _relabel(result, update: dict, plot) -> None:
    """Name the method after the submission (not the file or the plugin) and rewrite the record and its plot."""
    from mibench.results.record import write_record

    record = result.record
    record.method = record.method.model_copy(update=update)
    if "plot" in record.artifacts:
        plot(record, result.folder / record.artifacts["plot"])
    write_record(record, result.record_path)


def _evaluate_causal(report: SubmissionReport, out: Path, *, invocation: list[str], **common) -> list:
    """Causal track: saved featurizers are scored per (task, model, variable) exactly as ``mibench score
    --track causal`` scores them; a plugin method is run like ``mibench evaluate --track causal``."""
    from mibench.pipeline import CausalRequest, run_causal_evaluation
    from mibench.data.registry import get_card
    from mibench.submissions.models import resolve_model

    card = report.card
    assert card is not None
    settings = {**common, "output_dir": str(out), "invocation": invocation}
    results = []
    if card.contains == "plugin":
        assert card.plugin is not None
        stamp = _plugin_update(report)
        for task in card.tasks:
            variables = (card.variables or {}).get(task) or get_card(task).causal.variables
            for model in card.models:
                for variable in variables:
                    request = CausalRequest(task=task, model=resolve_model(model).source, variable=variable,
                                            method=card.plugin.method, **settings)
                    result = run_causal_evaluation(request)
                    _relabel(result, stamp, _causal_plot)
                    results.append(result)
        return results
    root = report.path.resolve().parent
    for cell in report.cells:
        for variable, folder in cell.variables.items():
            request = CausalRequest(task=cell.task, model=cell.model.source, variable=variable,
                                    featurizer_dir=str(folder), **settings)
            result = run_causal_evaluation(request)
            _relabel(result, {"id": submission_method_id(report),
                              "folder": folder.resolve().relative_to(root).as_posix()}, _causal_plot)
            results.append(result)
    return results
