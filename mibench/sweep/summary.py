"""What ``mibench sweep`` prints: the expanded matrix (``--dry-run``), the skipped combinations, the end table."""

from __future__ import annotations

from collections import Counter

from mibench.sweep.expand import Run, Skipped
from mibench.sweep.runner import Outcome, record_path_text


def _args_text(run: Run) -> str:
    return ", ".join(f"{name}={value}" for name, value in run.args) or "-"


def matrix_table(runs: list[Run], existing: dict[int, str], table_format: str) -> str:
    """Every run of the sweep, with what the sweep would do with it (``existing``: run index -> record path)."""
    from tabulate import tabulate

    rows = []
    for i, run in enumerate(runs):
        what = f"skip: {record_path_text(existing[i])}" if i in existing else "run"
        rows.append([i + 1, run.entry, run.track, run.model, run.task, run.variable or "-", run.method,
                     f"{run.level} / {run.ablation}" if run.track == "circuit" else "-", _args_text(run), run.seed,
                     run.threads, f"{run.gpus:g}", what])
    headers = ["#", "entry", "track", "model", "task", "variable", "method", "level / ablation", "arguments", "seed",
               "cpus", "gpus", "action"]
    return tabulate(rows, headers=headers, tablefmt=table_format, disable_numparse=True)


def skipped_lines(skipped: list[Skipped]) -> list[str]:
    """One line per combination the cards rule out."""
    return [f"skipped ({s.entry}) {s.what}: {s.reason}" for s in skipped]


def outcome_table(outcomes: list[Outcome], table_format: str) -> str:
    """The end-of-sweep table: run, status (with the reason), wall time, record."""
    from tabulate import tabulate

    rows = []
    for outcome in outcomes:
        status = outcome.status + (f": {outcome.reason}" if outcome.reason else "")
        if outcome.attempts > 1:
            status += f" ({outcome.attempts} attempts)"
        seconds = "-" if outcome.seconds is None else f"{outcome.seconds:.1f}"
        rows.append([outcome.run.label, status, seconds, record_path_text(outcome.record)])
    return tabulate(rows, headers=["run", "status", "wall s", "record"], tablefmt=table_format,
                    maxcolwidths=[None, 70, None, None] if table_format in ("simple", "plain", "grid") else None,
                    disable_numparse=True)


def totals_line(outcomes: list[Outcome]) -> str:
    counts = Counter(o.status for o in outcomes)
    order = ("done", "skipped", "failed", "interrupted")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s]) or "no runs"
