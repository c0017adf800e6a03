"""One causal-track evaluation from names to a results record: the code behind ``mibench evaluate --track
causal`` and ``mibench score --track causal``.

Protocol (MIB's, differences documented): pairs of (clean prompt, counterfactual prompt) of every kind in
the task card's ``causal.counterfactuals`` are labelled by the causal model, and kept only if the model
answers both prompts correctly. For every site (layer x token role) the method's intervention is fit on
the site's *training* activations, trained by interchange intervention training on the train split's
pairs (all kinds mixed), and scored on each test kind separately. Output goes to
``<output-dir>/<task>/<model>/causal_<variable>_<method>_<split>_seed<seed>/``: ``record.json``,
``iia_heatmap.png`` and ``featurizers/`` (one safetensors + JSON card per site; re-scorable with
``mibench score --track causal``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench import __version__
from mibench.errors import MibenchError, UnknownNameError, close_matches
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
from mibench.results.environment import git_commit, hardware, package_versions, python_version
from mibench.results.record import EnvironmentInfo, ModelInfo, now

SCORER_VERSION = "1"
CHECKER = "greedy: argmax predicts every label token (teacher forcing)"
DEFAULT_TRAIN_EXAMPLES = 400
ELIGIBLE_SPLITS = ("test", "private_test")


@dataclass
class CausalRequest:
    """Everything a causal-track run can be told (CLI flags map 1:1)."""

    task: str
    model: str
    variable: str
    method: str | None = None  # None when scoring saved featurizers
    featurizer_dir: str | None = None
    method_args: dict[str, Any] = field(default_factory=dict)
    layers: list[int] | None = None
    positions: list[str] | None = None
    split: str = "test"
    limit: int | None = None
    train_examples: int = DEFAULT_TRAIN_EXAMPLES
    batch_size: int = 64
    seed: int = 0
    bootstrap: int = 1000
    device: str = "cpu"
    dtype: str | None = None
    revision: str | None = None
    sae_dir: str | None = None
    output_dir: str = "results"
    save_featurizers: bool = True
    progress: bool | None = None
    invocation: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class CausalResult:
    record: CausalRecord
    folder: Path
    record_path: Path


def run_causal_evaluation(request: CausalRequest) -> CausalResult:
    import torch

    from mibench.causal.iia import SiteResult, aggregate
    from mibench.causal.interventions import LayerCache, interchange_correct, train_interchange
    from mibench.causal.method import Site, load_causal_method
    from mibench.causal.pairs import PairSet, build_pairs, filter_correct, own_answers
    from mibench.causal.storage import find_cards, load_interchange, save_interchange
    from mibench.circuits.run import PhaseTimer, _progress, _safe, data_hash, finish_record
    from mibench.data.registry import get_card, load_task
    from mibench.engine.residual import ResidualRunner
    from mibench.models.loading import load_model

    timer = PhaseTimer()
    card = get_card(request.task)
    if card.causal is None:
        with_causal = [c.id for c in _cards_with_causal()]
        raise MibenchError(f"task {card.id!r} has no causal variables; causal-track tasks: {', '.join(with_causal)}")
    spec = card.causal
    if request.variable not in spec.variables:
        raise UnknownNameError("variable", request.variable,
                               f"task {card.id!r} has no causal variable {request.variable!r} "
                               f"(variables: {', '.join(spec.variables)})", close_matches(request.variable, spec.variables))
    roles = list(request.positions or spec.positions)
    for role in roles:
        if role not in card.schema_roles:
            raise UnknownNameError("position", role, f"task {card.id!r} has no token role {role!r} "
                                   f"(roles: {', '.join(card.schema_roles)})", close_matches(role, card.schema_roles))
    kinds = list(spec.counterfactuals)

    method = None
    saved: dict[tuple[int, str], Path] = {}
    if request.method is not None:
        method = load_causal_method(request.method, request.method_args)
    elif request.featurizer_dir is not None:
        saved = find_cards(request.featurizer_dir)
        if not saved:
            raise MibenchError(f"{request.featurizer_dir}: no featurizer cards (L<layer>_<role>.json) found")
    else:
        raise MibenchError("give a causal method (--method) or a folder of saved featurizers")

    with timer.phase("load_model"):
        loaded = load_model(request.model, dtype=request.dtype, device=request.device, revision=request.revision)
        runner = ResidualRunner(loaded.adapter)
    if loaded.tokenizer is None:
        raise MibenchError(f"model {request.model!r} has no tokenizer; mibench needs one to encode task prompts")
    layers = sorted(set(request.layers)) if request.layers is not None else list(range(runner.n_layers))
    bad = [layer for layer in layers if not 0 <= layer < runner.n_layers]
    if bad:
        raise MibenchError(f"--layers {bad}: the model has layers 0..{runner.n_layers - 1}")
    if method is None:
        extra = sorted({role for _, role in saved} - set(roles))
        unknown = [role for role in extra if role not in card.schema_roles]
        if unknown:
            raise MibenchError(f"{request.featurizer_dir}: featurizers for roles {unknown} that task {card.id!r} "
                               f"does not define (roles: {', '.join(card.schema_roles)})")
        roles += extra  # submitted roles beyond the card's defaults are scored too

    task = load_task(card.id)
    causal_model = task.causal_model()
    causal_model.check_target(request.variable)
    tokenizer = loaded.tokenizer

    def pairs_of(examples, kind: str) -> PairSet:
        pairs = build_pairs(examples, kind, request.variable, causal_model, tokenizer, roles)
        return filter_correct(pairs, runner, base_answers=own_answers(examples, pairs, tokenizer),
                              batch_size=request.batch_size)

    with timer.phase("load_data"):
        test_examples = task.examples(request.split, request.limit)
        test_sets = {kind: pairs_of(test_examples, kind) for kind in kinds}
        empty = [kind for kind, s in test_sets.items() if len(s) == 0]
        if empty:
            raise MibenchError(f"no {', '.join(empty)} test pair survived the filter (the model must answer base and "
                               f"counterfactual prompts correctly); dropped: {dict(test_sets[empty[0]].dropped)}")
        train_set = None
        if method is not None:
            train_examples = task.examples("train", request.train_examples)
            train_set = PairSet.concatenate([pairs_of(train_examples, kind) for kind in kinds], "train")

    results: list[SiteResult] = []
    site_records: list[SiteRecord] = []
    run_name = (f"causal_{_safe(request.variable)}_{_safe(request.method or 'featurizers')}_{request.split}"
                f"_seed{request.seed}")
    model_name = _safe(Path(request.model).name if Path(request.model).is_dir() else request.model)
    folder = Path(request.output_dir) / card.id / model_name / run_name
    featurizer_folder = folder / "featurizers"
    sites = [(layer, role) for layer in layers for role in roles if method is not None or (layer, role) in saved]
    torch.manual_seed(request.seed)
    with timer.phase("sites"), _progress(request, len(sites), f"{request.method or 'featurizers'} sites") as bar:
        bar.unit = "site"
        for layer in layers:
            layer_roles = [role for (lay, role) in sites if lay == layer]
            if not layer_roles:
                continue
            test_caches = {kind: LayerCache(runner, s, layer, request.batch_size) for kind, s in test_sets.items()}
            train_cache: LayerCache | None = None  # built only for interventions that fit or train
            for role in layer_roles:
                start = time.perf_counter()
                history: list[float] = []
                if method is not None:
                    site = Site(layer=layer, role=role, d_model=runner.d_model, model_id=request.model, task=card.id,
                                variable=request.variable, sae_dir=request.sae_dir)
                    interchange = method.build(site).to(runner.device)
                    if interchange.learns_from_data:
                        if train_cache is None:
                            train_cache = LayerCache(runner, train_set, layer, request.batch_size)
                        train_site = train_cache.site(role)
                        # fit (PCA) on the site's training vectors only, base and source alike; never on test data
                        interchange.featurizer.fit(torch.cat([train_site.base_vectors(), train_site.source_vectors]))
                        history = train_interchange(runner, interchange, train_site, method.training(request.seed))
                else:
                    saved_card, interchange = load_interchange(saved[(layer, role)])
                    _check_saved_site(saved_card, saved[(layer, role)], runner.d_model, card.id, request.variable)
                    interchange = interchange.to(runner.device)
                correct = {kind: interchange_correct(runner, interchange, cache.site(role))
                           for kind, cache in test_caches.items()}
                result = SiteResult(layer, role, correct)
                results.append(result)
                if method is not None and request.save_featurizers:
                    save_interchange(interchange, featurizer_folder, layer=layer, role=role, model=request.model,
                                     task=card.id, variable=request.variable, method=method.card.id,
                                     arguments=method.arguments)
                site_records.append(SiteRecord(
                    layer=layer, role=role, iia=result.accuracy, iia_by_kind=result.by_kind,
                    n_features=interchange.featurizer.n_features,
                    n_selected=int(interchange.selection.selected().numel()), train_loss=history,
                    seconds=round(time.perf_counter() - start, 3)))
                bar.update(1)

    summary = aggregate(results, layers, roles, n_layers=runner.n_layers, bootstrap=request.bootstrap,
                        seed=request.seed)
    task_info = CausalTaskInfo(
        id=card.id, version=str(card.version), split=request.split, variable=request.variable, counterfactuals=kinds,
        positions=roles, layers=layers, test_pairs={k: len(s) for k, s in test_sets.items()},
        train_pairs=len(train_set) if train_set is not None else None,
        train_split="train" if train_set is not None else None,
        dropped=_dropped(test_sets, train_set), data_hash=data_hash(test_examples), limited=request.limit is not None,
    )
    config = loaded.model.config
    layout = loaded.adapter.layout
    model_info = ModelInfo(
        id=request.model, revision=request.revision, dtype=str(runner.dtype).replace("torch.", ""),
        family=getattr(config, "model_type", "unknown"), n_layers=layout.n_layers, n_heads=layout.n_heads,
        d_model=layout.d_model, n_edges=layout.n_edges,
    )
    scorer = CausalScorerInfo(version=SCORER_VERSION, bootstrap_replicates=request.bootstrap, checker=CHECKER)
    if method is not None:
        method_info = CausalMethodInfo(id=method.card.id, arguments=method.arguments)
    else:
        method_info = CausalMethodInfo(id=f"featurizers:{Path(request.featurizer_dir).name}", source="featurizers",
                                       folder=str(request.featurizer_dir))
    notes = []
    if request.split not in ELIGIBLE_SPLITS:
        notes.append(f"split {request.split!r} is not a test split")
    if request.limit is not None:
        notes.append(f"evaluated on the first {request.limit} examples only (--limit)")
    commit = git_commit()
    if commit and commit.endswith("+dirty"):
        notes.append("produced from a modified checkout")
    metrics = CausalMetrics(
        average=summary.average, average_stderr=summary.average_stderr, best=summary.best,
        best_stderr=summary.best_stderr,
        per_layer=[LayerBest(layer=layer, iia=value, role=summary.best_role[layer])
                   for layer, value in summary.per_layer.items()],
        missing_sites=[f"L{layer}/{role}" for layer, role in summary.missing],
    )
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = {"featurizers": "featurizers"} if method is not None and request.save_featurizers else {}
    record = CausalRecord(
        created=now(), invocation=request.invocation,
        environment=EnvironmentInfo(mibench_version=__version__, git_commit=commit, python=python_version(),
                                    packages=package_versions(), hardware=hardware(request.device)),
        model=model_info, task=task_info, method=method_info, scorer=scorer, seed=request.seed,
        timings=timer.seconds, sites=site_records, metrics=metrics, artifacts=artifacts,
        comparability_key=causal_comparability_key(task_info, model_info, scorer),
        leaderboard_eligible=not notes, eligibility_notes=notes,
    )
    from mibench.causal.report import plot_heatmap

    record_path = finish_record(record, folder, timer, plot_heatmap, "iia_heatmap.png")
    return CausalResult(record, folder, record_path)


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


def _check_saved_site(card, path: Path, d_model: int, task: str, variable: str) -> None:
    """A saved featurizer must fit the model's width; task/variable mismatches are refused, not guessed."""
    if card.featurizer.get("config", {}).get("d_model") not in (None, d_model):
        raise MibenchError(f"{path}: field featurizer.config.d_model is {card.featurizer['config']['d_model']}, "
                           f"but the model's hidden size is {d_model}")
    if card.task is not None and card.task != task:
        raise MibenchError(f"{path}: field task is {card.task!r}, but this run scores task {task!r}")
    if card.variable is not None and card.variable != variable:
        raise MibenchError(f"{path}: field variable is {card.variable!r}, but this run scores {variable!r}")
