"""What a run prints: the track's tables and notes for people, or one JSON summary for scripts.

With ``--format json`` stdout holds exactly one JSON object (:func:`record_summary`) and nothing else,
so ``mibench evaluate ... --format json | jq .metrics.cpr`` works; everything else goes to stderr.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mibench.cli.options import JSON_FORMAT
from mibench.errors import MibenchError

log = logging.getLogger("mibench")


def check_format(table_format: str) -> None:
    """Refuse an unknown --format before anything runs (a run can take hours)."""
    from tabulate import tabulate_formats

    if table_format != JSON_FORMAT and table_format not in tabulate_formats:
        from mibench.errors import close_matches

        near = close_matches(table_format, [JSON_FORMAT, *tabulate_formats])
        hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        raise MibenchError(f"--format {table_format!r} is not a table format: use 'json' or one of "
                           f"{', '.join(sorted(tabulate_formats)[:8])}, ...{hint}")


def run_and_report(args: Any, *, circuit: dict[str, Any], causal: dict[str, Any]) -> int:
    """Run the request ``evaluate``/``score`` describe on ``args.track`` and print its report.

    ``circuit`` and ``causal`` are the request fields of the command (a method, or the files to score)."""
    check_format(args.format)
    return report(run_request(args, circuit=circuit, causal=causal), args.format)


def run_request(args: Any, *, circuit: dict[str, Any], causal: dict[str, Any],
                command_line: list[str] | None = None) -> Any:
    """The pipeline run of ``args.track`` with the command's request fields; ``command_line`` is what the
    record names as its invocation (default: this process's command line)."""
    from mibench.cli.options import causal_request, circuit_request

    if args.track == "causal":
        from mibench.pipeline import run_causal_evaluation

        return run_causal_evaluation(causal_request(args, command_line=command_line, **causal))
    from mibench.pipeline import run_evaluation

    return run_evaluation(circuit_request(args, command_line=command_line, **circuit))


def record_summary(result: Any) -> dict[str, Any]:
    """The headline of a finished run: what ran, its metrics, eligibility and where its files are."""
    record = result.record
    summary: dict[str, Any] = {
        "track": record.track, "task": record.task.id, "model": record.model.id, "method": record.method.id,
        "split": record.task.split, "seed": record.seed, "comparability_key": record.comparability_key,
        "leaderboard_eligible": record.leaderboard_eligible, "eligibility_notes": list(record.eligibility_notes),
        "record": str(result.record_path),
        "artifacts": {name: str(result.folder / rel) for name, rel in record.artifacts.items()},
    }
    m = record.metrics
    if record.track == "causal":
        summary["variable"] = record.task.variable
        summary["metrics"] = {"iia_average": m.average, "iia_average_stderr": m.average_stderr, "iia_best": m.best,
                              "iia_best_stderr": m.best_stderr, "missing_sites": list(m.missing_sites)}
    else:
        summary["level"] = record.method.level
        summary["metrics"] = {"cpr": m.cpr, "cpr_stderr": m.cpr_stderr, "cmd": m.cmd, "cmd_stderr": m.cmd_stderr}
        if m.ground_truth is not None:
            summary["metrics"]["auroc"] = m.ground_truth.auroc
    return summary


def print_json(summaries: Any) -> None:
    print(json.dumps(summaries, indent=2))


def report(result: Any, table_format: str) -> int:
    """Print a finished run of either track in ``table_format``."""
    if table_format == JSON_FORMAT:
        print_json(record_summary(result))
    elif result.record.track == "causal":
        _causal_report(result, table_format)
    else:
        _circuit_report(result, table_format)
    return 0


def _circuit_report(result: Any, table_format: str) -> None:
    from mibench.circuits.report import curve_table, summary_table

    _tables(result, curve_table, summary_table, table_format, notes=[], dropped="examples",
            labels={"plot": "plot:  ", "roc_plot": "ROC:   "})


def _causal_report(result: Any, table_format: str) -> None:
    from mibench.causal.report import site_table, summary_table

    missing = result.record.metrics.missing_sites
    notes = [f"not scored (no featurizer given): {', '.join(missing)}; 'average' needs every layer"] if missing else []
    _tables(result, site_table, summary_table, table_format, notes=notes, dropped="pairs",
            labels={"plot": "plot:  ", "featurizers": "featurizers:"})


def _tables(result: Any, detail, summary, table_format: str, *, notes: list[str], dropped: str,
            labels: dict[str, str]) -> None:
    """The track's detail and summary tables, its notes, what was dropped, and where the files are."""
    record = result.record
    print(detail(record, table_format))
    print()
    print(summary(record, table_format))
    if record.task.dropped:
        notes = [*notes, f"{dropped} dropped: " + ", ".join(f"{n} {why}" for why, n in record.task.dropped.items())]
    for note in notes:
        print(f"\nnote: {note}")
    _files(result, labels)


def _files(result: Any, labels: dict[str, str]) -> None:
    record = result.record
    print(f"\nrecord: {result.record_path}")
    for artifact, label in labels.items():
        if artifact in record.artifacts:
            print(f"{label} {result.folder / record.artifacts[artifact]}")
    if not record.leaderboard_eligible:
        log.info("not leaderboard-eligible: %s", "; ".join(record.eligibility_notes))
