"""The causal track's steps: ``mibench evaluate --track causal`` and ``mibench score --track causal``.

Protocol (MIB's, deliberate differences documented): pairs of (clean prompt, counterfactual prompt) of
every kind in the task card's ``causal.counterfactuals`` are labelled by the causal model, and kept only
if the model answers both prompts correctly. For every site (layer x token role) the method's
intervention is fit on the site's *training* activations, trained by interchange intervention training
on the train split's pairs (all kinds mixed), and scored on each test kind separately. Output goes to
``<output-dir>/<task>/<model>/causal_<variable>_<method>_<split>_seed<seed>/``: ``record.json``,
``iia_heatmap.png`` and ``featurizers/`` (one safetensors + JSON card per site; re-scorable with
``mibench score --track causal``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench.errors import MibenchError, UnknownNameError, close_matches
from mibench.pipeline.header import RunRequest, data_hash, model_info, progress_bar, safe_name
from mibench.pipeline.sequence import RunResult, Track, run_track
from mibench.results.causal_record import (
    CausalMethodInfo,
    CausalMetrics,
    CausalRecord,
    CausalScorerInfo,
    CausalTaskInfo,
    LayerBest,
    SiteRecord,
    causal_comparability_key,
)
from mibench.results.record import ModelInfo

DEFAULT_TRAIN_EXAMPLES = 400


@dataclass(kw_only=True)
class CausalRequest(RunRequest):
    """A causal-track run: a featurizer method to fit and train, or a folder of saved featurizers to score."""

    variable: str
    method: str | None = None  # None when scoring saved featurizers
    featurizer_dir: str | None = None
    method_args: dict[str, Any] = field(default_factory=dict)
    layers: list[int] | None = None
    positions: list[str] | None = None
    train_examples: int = DEFAULT_TRAIN_EXAMPLES
    batch_size: int = 64
    sae_dir: str | None = None
    save_featurizers: bool = True


CausalResult = RunResult[CausalRecord]


def run_causal_evaluation(request: CausalRequest) -> CausalResult:
    """Run a featurizer method (or score saved featurizers) on a task's variable and publish the record."""
    return run_track(CausalTrack(request))


class CausalTrack(Track[CausalRequest, CausalRecord]):
    plot_name = "iia_heatmap.png"

    def resolve(self) -> None:
        from mibench.causal.method import load_causal_method
        from mibench.causal.storage import find_cards

        request, card = self.request, self.card
        if card.causal is None:
            with_causal = [c.id for c in _cards_with_causal()]
            raise MibenchError(f"task {card.id!r} has no causal variables; causal-track tasks: "
                               f"{', '.join(with_causal)}")
        spec = card.causal
        if request.variable not in spec.variables:
            raise UnknownNameError("variable", request.variable,
                                   f"task {card.id!r} has no causal variable {request.variable!r} "
                                   f"(variables: {', '.join(spec.variables)})",
                                   close_matches(request.variable, spec.variables))
        self.roles = list(request.positions or spec.positions)
        for role in self.roles:
            if role not in card.schema_roles:
                raise UnknownNameError("position", role, f"task {card.id!r} has no token role {role!r} "
                                       f"(roles: {', '.join(card.schema_roles)})",
                                       close_matches(role, card.schema_roles))
        self.kinds = list(spec.counterfactuals)
        self.method = None
        self.saved: dict[tuple[int, str], Path] = {}
        if request.method is not None:
            self.method = load_causal_method(request.method, request.method_args)
        elif request.featurizer_dir is not None:
            if not Path(request.featurizer_dir).is_dir():
                raise MibenchError(f"{request.featurizer_dir}: no such folder (give the folder of saved featurizers)")
            self.saved = find_cards(request.featurizer_dir)
            if not self.saved:
                raise MibenchError(f"{request.featurizer_dir}: no featurizer cards (L<layer>_<role>.json) found")
        else:
            raise MibenchError("give a causal method (--method) or a folder of saved featurizers")

    def build_data(self, loaded: Any) -> None:
        from mibench.causal.noop import noop_result
        from mibench.causal.pairs import PairSet, build_pairs, filter_correct, own_answers
        from mibench.engine.residual import ResidualRunner

        request, card = self.request, self.card
        self.runner = runner = ResidualRunner(loaded.adapter)
        self.layers = sorted(set(request.layers)) if request.layers is not None else list(range(runner.n_layers))
        bad = [layer for layer in self.layers if not 0 <= layer < runner.n_layers]
        if bad:
            raise MibenchError(f"--layers {bad}: the model has layers 0..{runner.n_layers - 1}")
        if self.method is None:
            extra = sorted({role for _, role in self.saved} - set(self.roles))
            unknown = [role for role in extra if role not in card.schema_roles]
            if unknown:
                raise MibenchError(f"{request.featurizer_dir}: featurizers for roles {unknown} that task {card.id!r} "
                                   f"does not define (roles: {', '.join(card.schema_roles)})")
            self.roles += extra  # submitted roles beyond the card's defaults are scored too

        task = self.task
        causal_model = task.causal_model()
        causal_model.check_target(request.variable)
        tokenizer = loaded.tokenizer

        def pairs_of(examples, kind: str) -> PairSet:
            pairs = build_pairs(examples, kind, request.variable, causal_model, tokenizer, self.roles)
            return filter_correct(pairs, runner, base_answers=own_answers(examples, pairs, tokenizer),
                                  batch_size=request.batch_size)

        self.cause_isolate = causal_model.cause_isolate

        self.test_examples = causal_examples(task, causal_model, request.split, request.limit, request.variable)
        self.test_sets = {kind: pairs_of(self.test_examples, kind) for kind in self.kinds}
        empty = [kind for kind, s in self.test_sets.items() if len(s) == 0]
        if empty:
            raise MibenchError(f"no {', '.join(empty)} test pair survived the filter (the model must answer base and "
                               f"counterfactual prompts correctly); dropped: {dict(self.test_sets[empty[0]].dropped)}")
        self.noop = noop_result(runner, self.test_sets, request.batch_size)
        self.train_set = None
        if self.method is not None:
            train_examples = causal_examples(task, causal_model, "train", request.train_examples, request.variable)
            self.train_set = PairSet.concatenate([pairs_of(train_examples, kind) for kind in self.kinds], "train")

    def run_method(self, folder: Path) -> None:
        """Fit, train (or load) and score every site, layer by layer (activations are cached per layer)."""
        import torch

        from mibench.causal.iia import SiteResult
        from mibench.causal.interventions import LayerCache

        request, method = self.request, self.method
        self.staging = folder
        self.featurizer_folder = folder / "featurizers"
        self.results: list[SiteResult] = []
        self.site_records: list[SiteRecord] = []
        sites = [(layer, role) for layer in self.layers for role in self.roles
                 if method is not None or (layer, role) in self.saved]
        torch.manual_seed(request.seed)
        with self.timer.phase("sites"), progress_bar(request, len(sites), f"{request.method or 'featurizers'} sites",
                                                     unit="site") as bar:
            for layer in self.layers:
                layer_roles = [role for (lay, role) in sites if lay == layer]
                if not layer_roles:
                    continue
                test_caches = {kind: LayerCache(self.runner, s, layer, request.batch_size)
                               for kind, s in self.test_sets.items()}
                self._train_cache: LayerCache | None = None  # built only for interventions that fit or train
                for role in layer_roles:
                    self._score_site(layer, role, test_caches)
                    bar.update(1)

    def _score_site(self, layer: int, role: str, test_caches: dict) -> None:
        import torch

        from mibench.causal.iia import SiteResult
        from mibench.causal.interventions import LayerCache, interchange_correct, train_interchange
        from mibench.causal.method import Site
        from mibench.causal.storage import load_interchange, save_interchange

        request, method, runner = self.request, self.method, self.runner
        start = time.perf_counter()
        history: list[float] = []
        if method is not None:
            site = Site(layer=layer, role=role, d_model=runner.d_model, model_id=request.model, task=self.card.id,
                        variable=request.variable, sae_dir=request.sae_dir)
            interchange = method.build(site).to(runner.device)
            if interchange.learns_from_data:
                if self._train_cache is None:
                    self._train_cache = LayerCache(runner, self.train_set, layer, request.batch_size)
                train_site = self._train_cache.site(role)
                # fit (PCA) on the site's training vectors only, base and source alike; never on test data
                interchange.featurizer.fit(torch.cat([train_site.base_vectors(), train_site.source_vectors]))
                history = train_interchange(runner, interchange, train_site, method.training(request.seed))
        else:
            path = self.saved[(layer, role)]
            saved_card, interchange = load_interchange(path)
            check_saved_site(saved_card, path, runner.d_model, self.card.id, request.variable)
            interchange = interchange.to(runner.device)
        correct = {kind: interchange_correct(runner, interchange, cache.site(role))
                   for kind, cache in test_caches.items()}
        result = SiteResult(layer, role, correct)
        self.results.append(result)
        if method is not None and request.save_featurizers:
            save_interchange(interchange, self.featurizer_folder, layer=layer, role=role, model=request.model,
                             task=self.card.id, variable=request.variable, method=method.card.id,
                             arguments=method.arguments)
        self.site_records.append(SiteRecord(
            layer=layer, role=role, iia=result.accuracy, iia_by_kind=result.by_kind,
            n_features=interchange.featurizer.n_features,
            n_selected=int(interchange.selection.selected().numel()), train_loss=history,
            seconds=round(time.perf_counter() - start, 3)))

    def score(self) -> None:
        from mibench.causal.iia import aggregate

        self.summary = aggregate(self.results, self.layers, self.roles, n_layers=self.runner.n_layers,
                                 bootstrap=self.request.bootstrap, seed=self.request.seed)

    def run_name(self) -> str:
        request = self.request
        return (f"causal_{safe_name(request.variable)}_{safe_name(request.method or 'featurizers')}_{request.split}"
                f"_seed{request.seed}")

    def model_info(self, loaded: Any) -> ModelInfo:
        return model_info(self.request, loaded)

    def record(self, header: dict[str, Any], model: ModelInfo) -> CausalRecord:
        from mibench.causal.iia import CHECKER, SCORER_VERSION, per_pair_correct
        from mibench.causal.isolation import cause_isolate_metrics
        from mibench.results.examples import publish_examples

        request, card, summary = self.request, self.card, self.summary
        task_info = CausalTaskInfo(
            id=card.id, version=str(card.version), split=request.split, variable=request.variable,
            counterfactuals=self.kinds, positions=self.roles, layers=self.layers,
            test_pairs={k: len(s) for k, s in self.test_sets.items()},
            train_pairs=len(self.train_set) if self.train_set is not None else None,
            train_split="train" if self.train_set is not None else None,
            dropped=_dropped(self.test_sets, self.train_set), data_hash=data_hash(self.test_examples),
            limited=request.limit is not None, data_revision=getattr(self.task, "data_revision", None),
        )
        scorer = CausalScorerInfo(version=SCORER_VERSION, bootstrap_replicates=request.bootstrap, checker=CHECKER)
        if self.method is not None:
            method_info = CausalMethodInfo(id=self.method.card.id, arguments=self.method.arguments)
        else:
            method_info = CausalMethodInfo(id=f"featurizers:{Path(request.featurizer_dir).name}",
                                           source="featurizers", folder=str(request.featurizer_dir))
        metrics = CausalMetrics(
            average=summary.average, average_stderr=summary.average_stderr, best=summary.best,
            best_stderr=summary.best_stderr,
            per_layer=[LayerBest(layer=layer, iia=value, role=summary.best_role[layer])
                       for layer, value in summary.per_layer.items()],
            missing_sites=[f"L{layer}/{role}" for layer, role in summary.missing],
            noop_iia=self.noop.accuracy,
            cause_isolate=None if self.cause_isolate is None else cause_isolate_metrics(
                self.cause_isolate, self.results, summary, self.test_sets, self.test_examples, request.variable),
        )
        saved = self.method is not None and request.save_featurizers
        artifacts = {"featurizers": "featurizers"} if saved else {}
        correct, kind, kinds = per_pair_correct(self.results)  # rows in the order of self.site_records
        publish_examples(self.staging, artifacts, "causal", task_info.data_hash, {"correct": correct, "kind": kind},
                         kinds=kinds)
        return CausalRecord(
            **header, task=task_info, method=method_info, scorer=scorer, sites=self.site_records, metrics=metrics,
            artifacts=artifacts,
            comparability_key=causal_comparability_key(task_info, model, scorer),
        )

    def plot(self, record: CausalRecord, folder: Path) -> None:
        from mibench.causal.report import plot_heatmap

        if plot_heatmap(record, folder / self.plot_name):
            record.artifacts["plot"] = self.plot_name


def causal_examples(task, causal_model, split: str, limit: int | None, variable: str) -> list:
    """The examples a causal-track run of ``variable`` uses from ``split``: the task's, in the mix its causal
    model (``task.causal_model()``) fixes (RAVEL: MIB's rebalancing per target attribute). The one definition,
    so that a record's ``task.data_hash`` can be recomputed before a run (a sweep's resume check) exactly as the
    run computes it."""
    examples = task.examples(split, limit)
    view = causal_model.cause_isolate
    return examples if view is None else view.evaluated_examples(examples, variable)


def _cards_with_causal():
    from mibench.data.registry import list_cards

    return [c for c in list_cards() if c.causal is not None]


def _dropped(test_sets, train_set) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind, s in test_sets.items():
        for why, n in s.dropped.items():
            out[f"test {kind}: {why}"] = int(n)
    if train_set is not None:
        for why, n in train_set.dropped.items():
            out[f"train: {why}"] = int(n)
    return {k: v for k, v in out.items() if v}


def check_saved_site(card, path: Path, d_model: int, task: str, variable: str) -> None:
    """A saved featurizer must fit the model's width; task/variable mismatches are refused, not guessed."""
    if card.featurizer.get("config", {}).get("d_model") not in (None, d_model):
        raise MibenchError(f"{path}: field featurizer.config.d_model is {card.featurizer['config']['d_model']}, "
                           f"but the model's hidden size is {d_model}")
    if card.task is not None and card.task != task:
        raise MibenchError(f"{path}: field task is {card.task!r}, but this run scores task {task!r}")
    if card.variable is not None and card.variable != variable:
        raise MibenchError(f"{path}: field variable is {card.variable!r}, but this run scores {variable!r}")
