"""Run a sweep's runs as Ray tasks: resources per run, retries, a progress bar, and a clean stop on Ctrl-C.

Each run is one Ray task that reserves ``run.threads`` CPUs (torch uses exactly that many threads) and
``run.gpus`` GPUs, so Ray never starts more runs than the cores and GPUs hold. Tasks are submitted grouped
by model: Ray reuses its worker processes, and a worker keeps the model it loaded last (see
:func:`mibench.models.loading.keep_loaded_models`), so consecutive runs of one model skip loading it.

A run that raises is retried up to ``retries`` times (a worker that died -- killed, out of memory -- counts
as a failure), except for a :class:`~mibench.errors.MibenchError`, which is a deterministic user error; then
it is reported with its error while the other runs go on. On Ctrl-C the runs still going are cancelled
(their workers are stopped); records are written atomically at the very end of a run, so a stopped run
leaves no record and the next invocation makes it again.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mibench.errors import MibenchError
from mibench.sweep.expand import Run

RAY_HINT = ('mibench sweep runs on Ray, which is not installed; install it with: pip install "mibench[sweep]" '
            '(or pip install "ray>=2.9")')


@dataclass
class Outcome:
    """What became of one run."""

    run: Run
    status: str  # done | skipped | failed | interrupted
    reason: str = ""
    seconds: float | None = None
    record: str | None = None
    attempts: int = 0


def import_ray():
    """Ray, or a user error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MibenchError(RAY_HINT) from None
    return ray


def local_cpus() -> int:
    """The cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def start_ray(address: str | None, cpus: int | None):
    """Connect to the cluster at ``address`` (or ``RAY_ADDRESS``), or start an embedded local Ray with ``cpus``
    CPUs (default: this process's cores). Returns the ray module."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    settings = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        try:
            ray.init(address=address, **settings)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # no cluster there, or not a Ray address
            raise MibenchError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    else:
        # the worker processes import mibench from this interpreter's environment, like the driver
        ray.init(address="local", num_cpus=cpus or local_cpus(), **settings)
    return ray


def submission_order(runs: list[Run]) -> list[int]:
    """Indices of ``runs`` in the order they are handed to Ray: the spec's entries in their order (a spec lists
    what matters most first, so a sweep cut short has done that), and within an entry grouped by model and
    device, so a worker that keeps its model reuses it run after run."""
    entry_rank: dict[str, int] = {}
    for run in runs:
        entry_rank.setdefault(run.entry, len(entry_rank))
    return sorted(range(len(runs)), key=lambda i: (entry_rank[runs[i].entry], runs[i].model,
                                                   runs[i].options.device or "", i))


def run_on_ray(runs: list[Run], *, address: str | None = None, cpus: int | None = None, retries: int = 1,
               on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run every run on Ray and return their outcomes (in ``runs`` order). Ctrl-C cancels what is left."""
    ray = start_ray(address, cpus)
    try:
        from mibench.sweep.execute import execute

        task = ray.remote(max_retries=0)(execute)  # retries are ours: a user error is not retried
        cwd = os.getcwd()  # relative paths in the spec mean the same on the workers as here
        outcomes = {i: Outcome(run, "interrupted", "not started") for i, run in enumerate(runs)}
        pending: dict = {}

        def submit(i: int) -> None:
            run = runs[i]
            outcomes[i].attempts += 1
            ref = task.options(num_cpus=run.threads, num_gpus=run.gpus, name=run.label).remote(run, cwd)
            pending[ref] = (i, time.perf_counter())

        for i in submission_order(runs):
            submit(i)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                i, started = pending.pop(ref)
                outcome = outcomes[i]
                try:
                    record, seconds = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - every failure of a run is reported, none stops the sweep
                    cause = _cause(exc)
                    if outcome.attempts <= retries and not isinstance(cause, MibenchError):
                        submit(i)
                        continue
                    outcome.status, outcome.reason = "failed", _describe(cause)
                    outcome.seconds = time.perf_counter() - started
                else:
                    outcome.status, outcome.reason, outcome.seconds, outcome.record = "done", "", seconds, record
                if on_outcome is not None:
                    on_outcome(outcome)
        except KeyboardInterrupt:
            # No ray.cancel here: cancelling tasks that are finishing at that moment can abort Ray's core worker
            # (seen with ray 2.60). Leaving the job stops them: the shutdown below kills an embedded Ray's
            # workers, and a cluster ends a driver's tasks when the driver disconnects. A run stopped mid-way
            # leaves no record (records are published last), and its staging folder is removed by the next run.
            for i, _ in pending.values():
                outcomes[i].reason = "interrupted (Ctrl-C) before it finished; no record written"
            raise SweepInterrupted([outcomes[i] for i in range(len(runs))]) from None
        return [outcomes[i] for i in range(len(runs))]
    finally:
        ray.shutdown()


def run_sequentially(runs: list[Run], *, on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """The same runs one after another in this process, without Ray (the reference for benchmarks)."""
    from mibench.sweep.execute import execute

    outcomes = []
    for run in runs:
        try:
            record, seconds = execute(run)
            outcome = Outcome(run, "done", "", seconds, record, 1)
        except Exception as exc:  # noqa: BLE001
            outcome = Outcome(run, "failed", _describe(exc), None, None, 1)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


class SweepInterrupted(Exception):
    """Ctrl-C during a sweep; carries every run's outcome so far."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("sweep interrupted")
        self.outcomes = outcomes


def _cause(exc: BaseException) -> BaseException:
    """The run's own exception inside Ray's wrapper (``RayTaskError.cause``), else Ray's error itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MibenchError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def record_path_text(path: str | None) -> str:
    if path is None:
        return "-"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def progress_enabled(quiet: bool) -> bool:
    """A progress bar only for a person at a terminal (never in CI logs)."""
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")
