"""What the leaderboard knows about each track: how to read a record, and what its table shows.

A record names its track in its ``track`` field. Each track listed in :data:`TRACKS` turns one record
file into an :class:`Entry` -- the row label, the column it belongs to (its comparability key), the table
it belongs to, its metric values, and the reasons it must not be ranked (if any). Everything after that
(grouping, de-duplication, best-per-column, rendering) is track-agnostic, so a new track is one more
:class:`Track` in :data:`TRACKS`; records whose track has none are skipped with a note. Tracks are not a
plugin kind: a track's records come from mibench's own scorer, so the table is closed, not a registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mibench.errors import MibenchError
from mibench.leaderboard.per_example import EXAMPLES_ARTIFACT, Examples, ExampleSource, Resampler


@dataclass(frozen=True)
class Metric:
    """One number shown per (method, column): a table of its own in every output format."""

    name: str
    higher_is_better: bool
    description: str


@dataclass
class Entry:
    """One record as the leaderboard sees it."""

    track: str
    record: str  # the record's path relative to the records folder (POSIX separators)
    method: str  # row label
    task: str
    model: str
    group: tuple[str, ...]  # records share a table only if this agrees (sort key of the tables)
    group_title: str
    column_key: str  # records share a column only if this agrees (the comparability key)
    column_details: str  # what, besides task and model, the column key pins (shown under each table)
    values: dict[str, tuple[float, float | None]]  # metric name -> (value, standard error)
    created: str
    plot: Path | None = None  # the record's faithfulness plot, if it has one
    reasons: list[str] = field(default_factory=list)  # why it is not ranked; empty: ranked
    row_value: str = ""  # the track's per-method attribute (circuit track: "aware" / "invariant" positions)
    seed: int = 0  # the record's seed
    #: records folded into this entry that differ only by seed (see build.fold_seeds): their seeds, and per
    #: metric (between-seed standard deviation, number of seeds); empty for a single-seed entry
    seeds: tuple[int, ...] = ()
    spread: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: degenerate points (see :mod:`mibench.leaderboard.degenerate`): the sizes at which the record's circuits
    #: are empty under every ranking, and the metrics whose curve recovers nothing short of the whole model
    empty_sizes: tuple[float, ...] = ()
    inert: tuple[str, ...] = ()
    #: the record's |m(full) - m(empty)| is within a few bootstrap standard errors of zero
    no_effect: bool = False
    #: the per-example files of the record(s) behind this cell, one per seed (in seed order); empty when some
    #: record has none (its cell is then compared by a normal approximation, see leaderboard.significance)
    examples: tuple[ExampleSource, ...] = ()
    #: causal track: the IIA a no-op intervention gets on the evaluated pairs, one per record with the field
    floors: tuple[float, ...] = ()
    #: why the entry's table stands apart from the others of its track (shown under the table's heading)
    group_note: str = ""
    #: (record path, code commit) of each record behind this entry, one per seed (the commit is None for a
    #: record made outside a git checkout): the tables say how many records they rank and which code made them
    sources: tuple[tuple[str, str | None], ...] = ()

    @property
    def identity(self) -> tuple[str, str]:
        """Two entries with the same identity compete for the same cell; only the newest is ranked."""
        return (self.method, self.column_key)


@dataclass(frozen=True)
class Track:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    #: (record file, path relative to the records folder) -> entry, or None when the record has nothing for this
    #: table; raises MibenchError for an invalid record
    read: Callable[[Path, str], Entry | None]
    #: what each record's plot shows (a heading over the plots of a table)
    plots_title: str = "Plots"
    #: name of a per-method column shown beside the method (its value is each entry's ``row_value``)
    row_attribute: str | None = None
    #: a table drawn from another track's records (e.g. AUROC from circuit records with a known circuit)
    source: str | None = None
    #: recomputes the track's metrics from a record's per-example file on resampled indices (the paired
    #: bootstrap of "best"); None: the track has no per-example data, so "best" is the plain maximum
    resample: Resampler | None = None


# -------------------------------------------------------------------------------------- circuit track
#: the graph position-aware circuit methods are scored on; methods on different graphs never share a table
POSITIONAL_GRAPH = "position-aware graph"
POSITIONAL_NOTE = ("Position-aware methods are scored on the position-aware graph (one edge per pair of token "
                   "spans: e.g. 4,822 edges on IOI against the 496 of MIB's graph), and a circuit size is a fraction "
                   "of the scored graph's edges: 1 % of 4,822 edges is not 1 % of 496. These rows are therefore "
                   "never ranked against the position-invariant methods; the matched-budget comparison (below, "
                   "when present) compares the two at equal edge counts.")
CPR = Metric("CPR", True, "circuit performance ratio: area under the faithfulness curve (signed ranking)")
CMD = Metric("CMD", False, "circuit-model distance: area between the faithfulness curve and 1 (absolute ranking)")


def current_scorer_version() -> str:
    from mibench.circuits.scorer import SCORER_VERSION

    return SCORER_VERSION


def current_task_comparability(task_id: str) -> int | None:
    """The comparability (major) version of the registered task card, or None if no such task is registered."""
    from mibench.data.registry import UnknownTaskError, get_card

    try:
        return get_card(task_id).version.comparability
    except UnknownTaskError:
        return None


def method_label(method_id: str, ablation: str) -> str:
    """MIB names a method by its id and, unless it is counterfactual patching, its ablation: ``eap (mean)``."""
    return method_id if ablation == "patching" else f"{method_id} ({ablation})"


def _plot_path(record_file: Path, artifact: str | None) -> Path | None:
    """The plot beside the record; a name that leaves the record's folder is ignored (records arrive by PR)."""
    if not artifact:
        return None
    folder = record_file.parent.resolve()
    candidate = (folder / artifact).resolve()
    if candidate.parent != folder or candidate.suffix.lower() != ".png" or not candidate.is_file():
        return None
    return candidate


def _example_sources(record_file: Path, record) -> tuple[ExampleSource, ...]:
    """The record's per-example file, when it lists one (whether it is usable is checked when it is needed)."""
    if EXAMPLES_ARTIFACT not in record.artifacts:
        return ()
    return (ExampleSource(record=record, folder=record_file.parent),)


def _read(reader: Callable[[Path], object], path: Path, rel: str):
    """``reader(path)``, with errors that name the record as the reader of the tables knows it (``rel``)."""
    try:
        return reader(path)
    except MibenchError as exc:
        message = str(exc)
        raise MibenchError(rel + message[len(str(path)):] if message.startswith(str(path)) else message) from None


def _rank_blockers(record, current_scorer: str, expected_key: str) -> list[str]:
    """Why a record (of either track) must not be ranked: eligibility, staleness, a key that lies."""
    task, scorer = record.task, record.scorer
    reasons: list[str] = []
    if not record.leaderboard_eligible:
        notes = "; ".join(record.eligibility_notes) or "no reason recorded"
        reasons.append(f"not leaderboard-eligible: {notes}")
    if scorer.version != current_scorer:
        reasons.append(f"stale: scored with scorer {scorer.version}; the current scorer is {current_scorer}")
    major = task.version.split(".")[0]
    current_major = current_task_comparability(task.id)
    if current_major is None:
        reasons.append(f"task {task.id!r} is not registered here, so its version cannot be checked")
    elif major != str(current_major):
        reasons.append(f"stale: task {task.id} version {task.version}; the current task card is "
                       f"comparability version {current_major}")
    if record.comparability_key != expected_key:
        reasons.append(f"comparability_key {record.comparability_key!r} does not match the record's own fields "
                       f"({expected_key!r})")
    return reasons


def model_details(model) -> str:
    """What a column pins about its model, for the note under a table: the hub revision and the weights' hash."""
    weights = f", weights {model.weights_sha256}" if model.weights_sha256 else ""
    return f"model revision {model.revision or 'local'}{weights}"


def read_circuit_entry(path: Path, rel: str) -> Entry:
    from mibench.leaderboard.degenerate import effect_unmeasurable, empty_fractions, inert_metrics
    from mibench.results.record import comparability_key, read_record

    record = _read(read_record, path, rel)
    task, model, scorer, method = record.task, record.model, record.scorer, record.method
    expected = comparability_key(task, model, scorer, method.level, position_aware=method.position_aware,
                                 n_items=record.metrics.n_items)
    reasons = _rank_blockers(record, current_scorer_version(), expected)
    major = task.version.split(".")[0]
    items = f"{'position-aware' if method.position_aware else 'MIB'} graph of {record.metrics.n_items} {method.level}s"
    graph = POSITIONAL_GRAPH if method.position_aware else ""  # MIB's graph: the tables' default, unnamed
    return Entry(
        track="circuit",
        record=rel,
        method=method_label(method.id, method.ablation),
        task=task.id,
        model=model.id,
        group=(method.level, task.split, scorer.version, graph),
        group_title=", ".join(filter(None, (f"{method.level} level", f"{task.split} split", f"scorer {scorer.version}",
                                            graph))),
        group_note=POSITIONAL_NOTE if method.position_aware else "",
        column_key=record.comparability_key,
        column_details=f"task version {major}, counterfactual {task.counterfactual}, {model_details(model)}, {items}",
        values={"CPR": (record.metrics.cpr, record.metrics.cpr_stderr),
                "CMD": (record.metrics.cmd, record.metrics.cmd_stderr)},
        created=record.created,
        plot=_plot_path(path, record.artifacts.get("plot")),
        reasons=reasons,
        row_value="aware" if method.position_aware else "invariant",
        seed=record.seed,
        empty_sizes=empty_fractions(record),
        inert=inert_metrics(record),
        no_effect=effect_unmeasurable(record),
        sources=((rel, record.environment.git_commit),),
        examples=_example_sources(path, record),
    )


def _circuit_resample(examples: Examples, index: np.ndarray) -> dict[str, np.ndarray]:
    from mibench.circuits.areas import circuit_metrics_from_examples

    values = circuit_metrics_from_examples(examples.arrays, tuple(examples.source.record.scorer.fractions), index)
    return {CPR.name: values.cpr, CMD.name: values.cmd}


CIRCUIT_TRACK = Track(name="circuit", title="Circuit localization", metrics=(CPR, CMD), read=read_circuit_entry,
                      plots_title="Faithfulness curves", row_attribute="positions", resample=_circuit_resample)


# ------------------------------------------------------------------------------ known circuits (AUROC)
AUROC = Metric("AUROC", True, "MIB's AUROC against the model's known circuit: trapezoid over the (FPR, TPR) points "
               "of the ten absolute-ranking circuits")
AUROC_FULL = Metric("AUROC (all thresholds)", True, "area under the ROC of every threshold on |score| (the "
                    "probability that a known-circuit edge, or node at node level, outscores another)")


def read_ground_truth_entry(path: Path, rel: str) -> Entry | None:
    """A circuit record's AUROC, when its model ships a known circuit for the task (planted-circuit models)."""
    entry = read_circuit_entry(path, rel)
    from mibench.results.record import read_record

    truth = _read(read_record, path, rel).metrics.ground_truth
    if truth is None:
        return None
    entry.track = "ground_truth"
    entry.values = {AUROC.name: (truth.auroc, None), AUROC_FULL.name: (truth.auroc_full, None)}
    entry.group = ("auroc", *entry.group)
    entry.empty_sizes, entry.inert, entry.no_effect = (), (), False  # faithfulness flags; AUROC does not divide
    entry.examples = ()  # AUROC has no per-example values
    roc = record_artifact(path, "roc_plot")
    entry.plot = roc
    return entry


def record_artifact(record_file: Path, key: str) -> Path | None:
    """A named artifact beside a record (``artifacts[key]``), if it is a PNG inside the record's folder."""
    import json

    try:
        artifacts = json.loads(record_file.read_text(encoding="utf-8")).get("artifacts", {})
    except (OSError, ValueError):
        return None
    return _plot_path(record_file, artifacts.get(key) if isinstance(artifacts, dict) else None)


GROUND_TRUTH_TRACK = Track(name="ground_truth", title="Circuit localization against known circuits",
                           metrics=(AUROC, AUROC_FULL), read=read_ground_truth_entry, plots_title="ROC curves",
                           row_attribute="positions", source="circuit")


# --------------------------------------------------------------------------------------- causal track
IIA_AVERAGE = Metric("IIA average", True, "interchange intervention accuracy: per layer the best token position, "
                     "averaged over layers (n/a unless every layer was scored)")
IIA_BEST = Metric("IIA best", True, "interchange intervention accuracy at the best (layer, token position)")


def read_causal_entry(path: Path, rel: str) -> Entry:
    """One causal record: a column per (task, variable, model) comparability key, a row per featurizer."""
    from mibench.causal.iia import SCORER_VERSION
    from mibench.results.causal_record import causal_comparability_key, read_causal_record

    record = _read(read_causal_record, path, rel)
    task, model, scorer, metrics = record.task, record.model, record.scorer, record.metrics
    reasons = _rank_blockers(record, SCORER_VERSION, causal_comparability_key(task, model, scorer))
    details = (f"task version {task.version.split('.')[0]}, counterfactuals {', '.join(task.counterfactuals)}, "
               f"{model_details(model)}")
    average = float("nan") if metrics.average is None else metrics.average
    return Entry(
        track="causal",
        record=rel,
        method=record.method.id,
        task=f"{task.id}/{task.variable}",
        model=model.id,
        group=(task.split, scorer.version),
        group_title=f"residual stream, {task.split} split, scorer {scorer.version}",
        column_key=record.comparability_key,
        column_details=details,
        values={IIA_AVERAGE.name: (average, metrics.average_stderr),
                IIA_BEST.name: (metrics.best, metrics.best_stderr)},
        created=record.created,
        plot=_plot_path(path, record.artifacts.get("plot")),
        reasons=reasons,
        seed=record.seed,
        examples=_example_sources(path, record),
        floors=() if metrics.noop_iia is None else (metrics.noop_iia,),
        sources=((rel, record.environment.git_commit),),
    )


def _causal_resample(examples: Examples, index: np.ndarray) -> dict[str, np.ndarray]:
    from mibench.causal.iia import causal_metrics_resampled

    record = examples.source.record
    values = causal_metrics_resampled(examples.arrays["correct"], record.sites, examples.arrays.get("kind"),
                                      n_layers=record.model.n_layers, index=index)
    average = np.full(len(index), np.nan) if values.average is None else values.average
    return {IIA_AVERAGE.name: average, IIA_BEST.name: values.best}


CAUSAL_TRACK = Track(name="causal", title="Causal variable localization", metrics=(IIA_AVERAGE, IIA_BEST),
                     read=read_causal_entry, plots_title="IIA heatmaps (layer x token position)",
                     resample=_causal_resample)

#: Tracks with a leaderboard table, by the value of a record's ``track`` field.
TRACKS: dict[str, Track] = {CIRCUIT_TRACK.name: CIRCUIT_TRACK, CAUSAL_TRACK.name: CAUSAL_TRACK,
                            GROUND_TRUTH_TRACK.name: GROUND_TRUTH_TRACK}

