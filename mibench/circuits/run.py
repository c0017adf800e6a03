"""One circuit-track evaluation from names to a results record: the code behind ``mibench evaluate``/``score``.

Protocol (MIB's): the method scores the graph on attribution examples from the ``train`` split; the
scorer evaluates the circuits on the evaluation split (``test`` by default) with counterfactual patching,
and the random baseline's curve is evaluated in the same batched forwards for comparison. Output goes to
``<output-dir>/<task>/<model>/<method>_<level>_<ablation>_<split>_seed<seed>/``: ``record.json``, the
scores as an MIB importance file (``scores.json``), and ``faithfulness.png``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench import __version__
from mibench.errors import MibenchError
from mibench.results.environment import git_commit, hardware, package_versions, python_version
from mibench.results.record import (
    CircuitMetrics,
    CircuitRecord,
    CurveRecord,
    EnvironmentInfo,
    GroundTruthRecord,
    MethodInfo,
    ModelInfo,
    ScorerInfo,
    TaskInfo,
    comparability_key,
    now,
    write_record,
)
from mibench.zoo.ground_truth import GROUND_TRUTH_DIR, ground_truth_counterfactual, ground_truth_path

DEFAULT_ATTRIBUTION_EXAMPLES = 100
ELIGIBLE_SPLITS = ("test", "private_test")


@dataclass
class EvaluationRequest:
    """Everything ``mibench evaluate`` / ``mibench score`` can be told (CLI flags map 1:1)."""

    task: str
    model: str
    method: str | None = None  # None when scoring a file
    circuit_file: str | None = None
    #: MIB's multiple-circuit mode: nine binary circuit files, scored as one curve (see score_circuits).
    circuit_files: list[str] | None = None
    method_args: dict[str, Any] = field(default_factory=dict)
    level: str | None = None  # default: the method's first level (or the file's)
    ablation: str = "patching"
    split: str = "test"
    counterfactual: str | None = None
    batch_size: int = 32
    limit: int | None = None
    attribution_examples: int = DEFAULT_ATTRIBUTION_EXAMPLES
    seed: int = 0
    bootstrap: int = 1000
    device: str = "cpu"
    dtype: str | None = None
    revision: str | None = None
    output_dir: str = "results"
    baseline: bool = True
    progress: bool | None = None  # None: only when stderr is a terminal
    invocation: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class EvaluationResult:
    record: CircuitRecord
    folder: Path
    record_path: Path


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def data_hash(examples) -> str:
    """sha256 over every used example's prompts and answers: two records with equal hashes saw equal data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.id.encode())
        digest.update(example.prompt.encode())
        digest.update(example.answer.encode())
        for kind in sorted(example.counterfactuals):
            cf = example.counterfactuals[kind]
            digest.update(kind.encode() + cf.prompt.encode() + cf.answer.encode())
    return "sha256:" + digest.hexdigest()[:16]


def _progress(request: EvaluationRequest, total: int, description: str):
    from tqdm.auto import tqdm

    enabled = request.progress if request.progress is not None else sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="ex", disable=not enabled, leave=False)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/").replace("/", "__"))


def run_evaluation(request: EvaluationRequest) -> EvaluationResult:
    """Run a method (or score a circuit file) on a task and write the record, scores and plot."""
    import torch

    from mibench.circuits.batches import build_batches
    from mibench.circuits.method import AttributionContext, load_method
    from mibench.circuits.scorer import SCORER_VERSION, score_attribution, score_circuits
    from mibench.circuits.selection import FRACTIONS
    from mibench.data.registry import get_card, load_task
    from mibench.engine.engine import PatchingEngine
    from mibench.graph.io import load_circuit, save_circuit
    from mibench.methods.random_baseline.method import random_scores
    from mibench.models.loading import load_model

    timer = PhaseTimer()
    card = get_card(request.task)
    # A known circuit is defined under one counterfactual (see ground_truth_counterfactual); use it unless told.
    counterfactual = (request.counterfactual or ground_truth_counterfactual(request.model, card.id)
                      or card.default_counterfactual)
    if counterfactual not in card.counterfactuals:
        raise MibenchError(f"task {card.id!r} has no counterfactual {counterfactual!r} "
                           f"(it has {', '.join(card.counterfactuals)})")
    method = None
    if request.method is not None:
        method = load_method(request.method, request.method_args)
        level = request.level or method.card.levels[0]
        method.check(level, request.ablation)

    with timer.phase("load_model"):
        loaded = load_model(request.model, dtype=request.dtype, device=request.device, revision=request.revision)
        engine = PatchingEngine(loaded.adapter)
        layout = engine.layout
    if loaded.tokenizer is None:
        raise MibenchError(f"model {request.model!r} has no tokenizer; mibench needs one to encode task prompts")

    with timer.phase("load_data"):
        task = load_task(card.id)
        eval_examples = task.examples(request.split, request.limit)
        eval_data = build_batches(eval_examples, loaded.tokenizer, counterfactual, request.batch_size)
        train_data = None
        if method is not None:
            train_examples = task.examples("train", request.attribution_examples)
            train_data = build_batches(train_examples, loaded.tokenizer, counterfactual, request.batch_size)

    file_graph = None
    if method is None and request.circuit_file is not None and _is_position_aware_file(Path(request.circuit_file)):
        from mibench.graph.positional import PositionalGraph

        file_graph = PositionalGraph.load_json(request.circuit_file, layout)
    position_aware = (method is not None and method.card.position_aware) or file_graph is not None
    span_ids_of = None
    if file_graph is not None:
        from mibench.data.span_schema import span_names

        expected = span_names(card.span_schema) if card.span_schema is not None else None
        if file_graph.spans != expected:
            raise MibenchError(f"{request.circuit_file}: field cfg.spans is {file_graph.spans}, but task {card.id!r}'s "
                               f"span schema has spans {expected}")
    if position_aware:
        from mibench.circuits.peap import span_ids_for

        if card.span_schema is None:
            raise MibenchError(f"{method.card.id} is position-aware, but task {card.id!r} declares no span_schema")
        span_ids_of = span_ids_for([*(train_examples if method is not None else []), *eval_examples],
                                   loaded.tokenizer, card.span_schema)
    if method is not None:
        torch.manual_seed(request.seed)
        with timer.phase("attribution"), _progress(request, train_data.n_examples, f"{method.card.id} attribution") as bar:
            context = AttributionContext(engine, train_data.batches, level=level, ablation=request.ablation,
                                         seed=request.seed, on_batch=bar.update,
                                         span_schema=card.span_schema if position_aware else None,
                                         span_ids_of=span_ids_of)
            graph = method.score(context)
        method_info = MethodInfo(id=method.card.id, arguments=method.arguments, level=level, ablation=request.ablation,
                                 position_aware=position_aware,
                                 spans=list(graph.spans) if position_aware else None)
    elif request.circuit_files is not None:
        circuits = [load_circuit(Path(f), layout=layout) for f in request.circuit_files]
        level = circuits[0].level
        folder_of_files = Path(request.circuit_files[0]).parent
        method_info = MethodInfo(id=f"circuits:{folder_of_files.name}", level=level, ablation=request.ablation,
                                 source="circuits", file=str(folder_of_files))
    elif file_graph is not None:
        graph, level = file_graph, "edge"
        method_info = MethodInfo(id=f"file:{Path(request.circuit_file).name}", level=level, ablation=request.ablation,
                                 source="file", file=str(request.circuit_file), position_aware=True,
                                 spans=list(graph.spans))
    else:
        path = Path(request.circuit_file)
        graph = load_circuit(path, layout=layout)
        level = graph.level
        if not _has_scores(graph):
            raise MibenchError(f"{path}: every score is zero or missing; 'mibench score' ranks by score, so it "
                               "needs an importance file (binary circuits are scored as a submission)")
        if request.level is not None and request.level != level:
            raise MibenchError(f"{path}: holds {level}-level scores, but --level {request.level} was requested")
        method_info = MethodInfo(id=f"file:{path.name}", level=level, ablation=request.ablation, source="file",
                                 file=str(path))

    if position_aware:
        from mibench.circuits.positional_scorer import random_positional_scores

        baseline = random_positional_scores(graph, request.seed) if request.baseline else None
    else:
        baseline = random_scores(layout, level, request.seed) if request.baseline else None
    with timer.phase("evaluation"), _progress(request, eval_data.n_examples, "evaluation") as bar:
        if position_aware:
            from mibench.circuits.positional_scorer import score_positional

            score = score_positional(engine, eval_data.batches, graph, span_ids_of, baseline=baseline,
                                     bootstrap=request.bootstrap, seed=request.seed, on_batch=bar.update)
        elif request.circuit_files is not None:
            score = score_circuits(engine, eval_data.batches, circuits, baseline=baseline,
                                   bootstrap=request.bootstrap, seed=request.seed, on_batch=bar.update)
        else:
            score = score_attribution(engine, eval_data.batches, graph, baseline=baseline,
                                      bootstrap=request.bootstrap, seed=request.seed, on_batch=bar.update)

    model_name = _safe(Path(request.model).name if Path(request.model).is_dir() else request.model)
    run_name = f"{_safe(method_info.id)}_{level}_{request.ablation}_{request.split}_seed{request.seed}"
    folder = Path(request.output_dir) / card.id / model_name / run_name
    folder.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, str] = {}
    if position_aware:
        graph.save_json(folder / "scores.json")  # the position-aware JSON layout (span-labelled MIB format)
        artifacts["scores"] = "scores.json"
    elif method is not None:
        save_circuit(graph, folder / "scores.json")
        artifacts["scores"] = "scores.json"

    task_info = TaskInfo(
        id=card.id, version=str(card.version), split=request.split, counterfactual=counterfactual,
        n_examples=eval_data.n_examples, dropped=dict(eval_data.dropped), data_hash=data_hash(eval_examples),
        attribution_split="train" if method is not None else None,
        attribution_examples=train_data.n_examples if train_data is not None else None,
        limited=request.limit is not None,
    )
    config = loaded.model.config
    model_info = ModelInfo(
        id=request.model, revision=request.revision, dtype=str(engine.dtype).replace("torch.", ""),
        family=getattr(config, "model_type", "unknown"), n_layers=layout.n_layers, n_heads=layout.n_heads,
        d_model=layout.d_model, n_edges=graph.n_edges if position_aware else layout.n_edges,
    )
    scorer_info = ScorerInfo(version=SCORER_VERSION, fractions=list(FRACTIONS), bootstrap_replicates=request.bootstrap)
    notes = []
    if request.split not in ELIGIBLE_SPLITS:
        notes.append(f"split {request.split!r} is not a test split")
    if request.limit is not None:
        notes.append(f"evaluated on the first {request.limit} examples only (--limit)")
    commit = git_commit()
    if commit and commit.endswith("+dirty"):
        notes.append("produced from a modified checkout")

    def curve(c) -> CurveRecord | None:
        return None if c is None else CurveRecord(**vars(c))

    ground_truth = None
    truth_file = ground_truth_path(request.model, card.id)
    if truth_file is not None and request.circuit_files is None and level in ("edge", "node"):
        from mibench.circuits.auroc import collapse_positions, summarise_roc
        from mibench.circuits.selection import circuits_at_sizes

        truth = load_circuit(truth_file, layout=layout)
        ranked = collapse_positions(graph) if position_aware else graph
        scores = ranked.node_scores if level == "node" else ranked.edge_scores
        roc = summarise_roc(circuits_at_sizes(ranked, absolute=True), scores, truth)
        ground_truth = GroundTruthRecord(file=f"{GROUND_TRUTH_DIR}/{truth_file.name}", **vars(roc))

    metrics = CircuitMetrics(
        cpr=score.cpr, cpr_stderr=_finite(score.cpr_stderr), cmd=score.cmd, cmd_stderr=_finite(score.cmd_stderr),
        full_logit_difference=score.full_logit_difference, empty_logit_difference=score.empty_logit_difference,
        n_items=score.n_items, signed=curve(score.signed), absolute=curve(score.absolute),
        baseline=curve(score.baseline), ground_truth=ground_truth,
    )
    record = CircuitRecord(
        created=now(), invocation=request.invocation,
        environment=EnvironmentInfo(mibench_version=__version__, git_commit=commit, python=python_version(),
                                    packages=package_versions(), hardware=hardware(request.device)),
        model=model_info, task=task_info, method=method_info, scorer=scorer_info, seed=request.seed,
        timings=timer.seconds, metrics=metrics, artifacts=artifacts,
        comparability_key=comparability_key(task_info, model_info, scorer_info, level),
        leaderboard_eligible=not notes, eligibility_notes=notes,
    )
    from mibench.circuits.report import plot_faithfulness, plot_roc

    if ground_truth is not None and plot_roc(record, folder / "roc.png"):
        record.artifacts["roc_plot"] = "roc.png"
    record_path = finish_record(record, folder, timer, plot_faithfulness, "faithfulness.png")
    return EvaluationResult(record, folder, record_path)


def finish_record(record, folder: Path, timer: PhaseTimer, plot, plot_name: str) -> Path:
    """Draw the record's plot beside it (timed, listed in ``artifacts`` when drawn), then write it atomically.

    Shared by both tracks' runners; ``plot(record, path)`` returns False when matplotlib is missing."""
    with timer.phase("plot"):
        if plot(record, folder / plot_name):
            record.artifacts["plot"] = plot_name
    record.timings.update(timer.seconds)
    return write_record(record, folder / "record.json")


def _is_position_aware_file(path: Path) -> bool:
    """A JSON circuit file in the position-aware layout (``cfg.format``), which ``load_circuit`` does not read."""
    import json

    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        cfg = json.loads(path.read_text(encoding="utf-8")).get("cfg", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    from mibench.graph.positional import FORMAT

    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def _has_scores(graph) -> bool:
    import torch

    scores = {"edge": graph.edge_scores, "node": graph.node_scores, "neuron": graph.neuron_scores}[graph.level]
    values = scores[graph.real_edge_mask] if graph.level == "edge" else scores.flatten()
    values = values[~torch.isnan(values)]
    return bool(values.numel()) and bool((values != 0).any())


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN -> None (too few examples to bootstrap)
