"""The circuit track's steps: the code behind ``mibench evaluate`` and ``mibench score``.

Protocol (MIB's): the method scores the graph on attribution examples from the ``train`` split; the
scorer evaluates the circuits on the evaluation split (``test`` by default) with counterfactual patching,
and the random baseline -- the registered ``random`` method, reached like any other -- is evaluated in
the same batched forwards for comparison. Output goes to
``<output-dir>/<task>/<model>/<method>_<level>_<ablation>_<split>_seed<seed>/``: ``record.json``, the
scores as an MIB importance file (``scores.json``), ``faithfulness.png`` (and ``roc.png`` on models with
a known circuit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench.errors import MibenchError
from mibench.pipeline.header import RunRequest, data_hash, model_info, progress_bar, safe_name
from mibench.pipeline.sequence import RunResult, Track, run_track
from mibench.results.record import (
    CircuitMetrics,
    CircuitRecord,
    CurveRecord,
    GroundTruthRecord,
    MethodInfo,
    ModelInfo,
    ScorerInfo,
    TaskInfo,
    comparability_key,
)

DEFAULT_ATTRIBUTION_EXAMPLES = 100
BASELINE_METHOD = "random"


@dataclass(kw_only=True)
class EvaluationRequest(RunRequest):
    """A circuit-track run: a method to run, or importance/circuit file(s) to score."""

    method: str | None = None  # None when scoring a file
    circuit_file: str | None = None
    #: MIB's multiple-circuit mode: nine binary circuit files, scored as one curve (see score_circuits).
    circuit_files: list[str] | None = None
    method_args: dict[str, Any] = field(default_factory=dict)
    level: str | None = None  # default: the method's first level (or the file's)
    ablation: str = "patching"
    counterfactual: str | None = None
    attribution_examples: int = DEFAULT_ATTRIBUTION_EXAMPLES
    baseline: bool = True


EvaluationResult = RunResult[CircuitRecord]


def run_evaluation(request: EvaluationRequest) -> EvaluationResult:
    """Run a method (or score a circuit file) on a task and publish the record, scores and plot."""
    return run_track(CircuitTrack(request))


class CircuitTrack(Track[EvaluationRequest, CircuitRecord]):
    plot_name = "faithfulness.png"

    def resolve(self) -> None:
        from mibench.zoo.ground_truth import ground_truth_counterfactual
        from mibench.circuits.method import load_method

        request, card = self.request, self.card
        # A known circuit is defined under one counterfactual (see ground_truth_counterfactual); use it unless told.
        self.counterfactual = (request.counterfactual or ground_truth_counterfactual(request.model, card.id)
                               or card.default_counterfactual)
        official_kinds = request.data == "official"  # the dataset's columns decide, checked once it is read
        if self.counterfactual not in card.counterfactuals and not official_kinds:
            raise MibenchError(f"task {card.id!r} has no counterfactual {self.counterfactual!r} "
                               f"(it has {', '.join(card.counterfactuals)})")
        for path in [request.circuit_file, *(request.circuit_files or [])]:
            if path is not None and not Path(path).is_file():
                raise MibenchError(f"{path}: no such file" + (" (it is a folder)" if Path(path).is_dir() else ""))
        self.method = None
        if request.method is not None:
            self.method = load_method(request.method, request.method_args)
            self.level = request.level or self.method.card.levels[0]
            self.method.check(self.level, request.ablation)
        elif request.circuit_file is None and not request.circuit_files:
            raise MibenchError("give a circuit method or a circuit file to score")

    def build_data(self, loaded: Any) -> None:
        from mibench.circuits.batches import build_batches
        from mibench.engine.engine import PatchingEngine
        from mibench.pipeline.data import check_counterfactual

        request, card, task = self.request, self.card, self.task
        self.loaded = loaded
        self.engine = PatchingEngine(loaded.adapter)
        self.eval_examples = task.examples(request.split, request.limit)
        check_counterfactual(self.eval_examples, self.counterfactual, card.id, request.split)
        self.eval_data = build_batches(self.eval_examples, loaded.tokenizer, self.counterfactual, request.batch_size)
        self.train_examples, self.train_data = [], None
        if self.method is not None:
            self.train_examples = task.examples("train", request.attribution_examples)
            check_counterfactual(self.train_examples, self.counterfactual, card.id, "train")
            self.train_data = build_batches(self.train_examples, loaded.tokenizer, self.counterfactual,
                                            request.batch_size)
        self.file_graph = None
        reads_file = self.method is None and request.circuit_file is not None
        if reads_file and is_position_aware_file(Path(request.circuit_file)):
            self.file_graph = self._load_position_aware_file()
        method_is_positional = self.method is not None and self.method.card.position_aware
        self.position_aware = method_is_positional or self.file_graph is not None
        self.span_ids_of = None
        if self.position_aware:
            from mibench.circuits.peap import span_ids_for

            if card.span_schema is None:  # (a position-aware file was already refused for its spans)
                raise MibenchError(f"{self.method.card.id} is position-aware, but task {card.id!r} declares no "
                                   "span_schema")
            self.span_ids_of = span_ids_for([*self.train_examples, *self.eval_examples], loaded.tokenizer,
                                            card.span_schema)

    def _load_position_aware_file(self):
        from mibench.data.span_schema import span_names
        from mibench.graph.positional import PositionalGraph

        path, card = self.request.circuit_file, self.card
        graph = PositionalGraph.load_json(path, self.engine.layout)
        expected = span_names(card.span_schema) if card.span_schema is not None else None
        if graph.spans != expected:
            raise MibenchError(f"{path}: field cfg.spans is {graph.spans}, but task {card.id!r}'s "
                               f"span schema has spans {expected}")
        return graph

    def run_method(self, folder: Path) -> None:
        request = self.request
        if self.method is not None:
            self._attribute()
        else:
            self._read_files()
        self.staging = folder
        self.artifacts: dict[str, str] = {}
        if self.position_aware:
            self.graph.save_json(folder / "scores.json")  # the position-aware JSON layout (span-labelled MIB format)
            self.artifacts["scores"] = "scores.json"
        elif self.method is not None:
            from mibench.graph.io import save_circuit

            save_circuit(self.graph, folder / "scores.json")
            self.artifacts["scores"] = "scores.json"
        self.baseline = self._baseline() if request.baseline else None

    def _attribute(self) -> None:
        import torch

        from mibench.circuits.method import AttributionContext

        request, method = self.request, self.method
        torch.manual_seed(request.seed)
        with self.timer.phase("attribution"), progress_bar(request, self.train_data.n_examples,
                                                           f"{method.card.id} attribution") as bar:
            context = AttributionContext(self.engine, self.train_data.batches, level=self.level,
                                         ablation=request.ablation, seed=request.seed, on_batch=bar.update,
                                         span_schema=self.card.span_schema if self.position_aware else None,
                                         span_ids_of=self.span_ids_of)
            self.graph = method.score(context)
        self.method_info = MethodInfo(id=method.card.id, arguments=method.arguments, level=self.level,
                                      ablation=request.ablation, position_aware=self.position_aware,
                                      spans=list(self.graph.spans) if self.position_aware else None)

    def _read_files(self) -> None:
        from mibench.graph.io import load_circuit

        request, layout = self.request, self.engine.layout
        if request.circuit_files is not None:
            self.circuits = [load_circuit(Path(f), layout=layout) for f in request.circuit_files]
            self.level = self.circuits[0].level
            folder_of_files = Path(request.circuit_files[0]).parent
            self.method_info = MethodInfo(id=f"circuits:{folder_of_files.name}", level=self.level,
                                          ablation=request.ablation, source="circuits", file=str(folder_of_files))
            return
        path = Path(request.circuit_file)
        if self.file_graph is not None:
            self.graph, self.level = self.file_graph, "edge"
            self.method_info = MethodInfo(id=f"file:{path.name}", level=self.level, ablation=request.ablation,
                                          source="file", file=str(request.circuit_file), position_aware=True,
                                          spans=list(self.graph.spans))
            return
        self.graph = load_circuit(path, layout=layout)
        self.level = self.graph.level
        if not has_scores(self.graph):
            raise MibenchError(f"{path}: every score is zero or missing; 'mibench score' ranks by score, so it "
                               "needs an importance file (binary circuits are scored as a submission)")
        if request.level is not None and request.level != self.level:
            raise MibenchError(f"{path}: holds {self.level}-level scores, but --level {request.level} was requested")
        self.method_info = MethodInfo(id=f"file:{path.name}", level=self.level, ablation=request.ablation,
                                      source="file", file=str(path))

    def _baseline(self):
        """The random baseline's scores: the registered ``random`` method, on the run's graph and seed."""
        if self.position_aware:
            from mibench.circuits.positional_scorer import random_positional_scores

            return random_positional_scores(self.graph, self.request.seed)
        from mibench.circuits.method import AttributionContext, load_method

        baseline = load_method(BASELINE_METHOD)
        return baseline.score(AttributionContext(self.engine, [], level=self.level, seed=self.request.seed))

    def score(self) -> None:
        from mibench.circuits.positional_scorer import score_positional
        from mibench.circuits.scorer import score_attribution, score_circuits

        request, engine, batches = self.request, self.engine, self.eval_data.batches
        options = {"baseline": self.baseline, "bootstrap": request.bootstrap, "seed": request.seed}
        with self.timer.phase("evaluation"), progress_bar(request, self.eval_data.n_examples, "evaluation") as bar:
            if self.position_aware:
                self.result = score_positional(engine, batches, self.graph, self.span_ids_of, on_batch=bar.update,
                                               **options)
            elif request.circuit_files is not None:
                self.result = score_circuits(engine, batches, self.circuits, on_batch=bar.update, **options)
            else:
                self.result = score_attribution(engine, batches, self.graph, on_batch=bar.update, **options)

    def run_name(self) -> str:
        request = self.request
        return f"{safe_name(self.method_info.id)}_{self.level}_{request.ablation}_{request.split}_seed{request.seed}"

    def model_info(self, loaded: Any) -> ModelInfo:
        return model_info(self.request, loaded, n_edges=self.graph.n_edges if self.position_aware else None)

    def record(self, header: dict[str, Any], model: ModelInfo) -> CircuitRecord:
        from mibench.circuits.scorer import SCORER_VERSION
        from mibench.circuits.selection import FRACTIONS
        from mibench.results.examples import publish_examples

        request, card, score = self.request, self.card, self.result
        task_info = TaskInfo(
            id=card.id, version=str(card.version), split=request.split, counterfactual=self.counterfactual,
            n_examples=self.eval_data.n_examples, dropped=dict(self.eval_data.dropped),
            data_hash=data_hash(self.eval_examples),
            attribution_split="train" if self.method is not None else None,
            attribution_examples=self.train_data.n_examples if self.train_data is not None else None,
            limited=request.limit is not None, data_revision=getattr(self.task, "data_revision", None),
        )
        scorer_info = ScorerInfo(version=SCORER_VERSION, fractions=list(FRACTIONS),
                                 bootstrap_replicates=request.bootstrap)
        publish_examples(self.staging, self.artifacts, "circuit", task_info.data_hash, score.examples)
        metrics = CircuitMetrics(
            cpr=score.cpr, cpr_stderr=_finite(score.cpr_stderr), cmd=score.cmd, cmd_stderr=_finite(score.cmd_stderr),
            full_logit_difference=score.full_logit_difference, empty_logit_difference=score.empty_logit_difference,
            effect_stderr=_finite(score.effect_stderr), n_items=score.n_items, signed=_curve(score.signed),
            absolute=_curve(score.absolute),
            baseline=_curve(score.baseline), ground_truth=self._ground_truth(),
        )
        return CircuitRecord(
            **header, task=task_info, method=self.method_info, scorer=scorer_info, metrics=metrics,
            artifacts=self.artifacts, comparability_key=comparability_key(
                task_info, model, scorer_info, self.level, position_aware=self.position_aware, n_items=score.n_items),
        )

    def _ground_truth(self) -> GroundTruthRecord | None:
        """The scores against the model's known circuit (planted models), when it has one at this level."""
        from mibench.zoo.ground_truth import GROUND_TRUTH_DIR, ground_truth_path

        truth_file = ground_truth_path(self.request.model, self.card.id)
        if truth_file is None or self.request.circuit_files is not None or self.level not in ("edge", "node"):
            return None
        from mibench.circuits.auroc import collapse_positions, summarise_roc
        from mibench.circuits.selection import circuits_at_sizes
        from mibench.graph.io import load_circuit

        truth = load_circuit(truth_file, layout=self.engine.layout)
        ranked = collapse_positions(self.graph) if self.position_aware else self.graph
        scores = ranked.node_scores if self.level == "node" else ranked.edge_scores
        roc = summarise_roc(circuits_at_sizes(ranked, absolute=True), scores, truth)
        return GroundTruthRecord(file=f"{GROUND_TRUTH_DIR}/{truth_file.name}", **vars(roc))

    def plot(self, record: CircuitRecord, folder: Path) -> None:
        from mibench.circuits.report import plot_faithfulness, plot_roc

        if record.metrics.ground_truth is not None and plot_roc(record, folder / "roc.png"):
            record.artifacts["roc_plot"] = "roc.png"
        if plot_faithfulness(record, folder / self.plot_name):
            record.artifacts["plot"] = self.plot_name


def is_position_aware_file(path: Path) -> bool:
    """A JSON circuit file in the position-aware layout (``cfg.format``), which ``load_circuit`` does not read."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        cfg = json.loads(path.read_text(encoding="utf-8")).get("cfg", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    from mibench.graph.positional import FORMAT

    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def has_scores(graph) -> bool:
    """Whether an importance file ranks anything: some real, non-NaN score is non-zero."""
    import torch

    scores = {"edge": graph.edge_scores, "node": graph.node_scores, "neuron": graph.neuron_scores}[graph.level]
    values = scores[graph.real_edge_mask] if graph.level == "edge" else scores.flatten()
    values = values[~torch.isnan(values)]
    return bool(values.numel()) and bool((values != 0).any())


def _curve(curve) -> CurveRecord | None:
    return None if curve is None else CurveRecord(**vars(curve))


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN -> None (too few examples to bootstrap)
