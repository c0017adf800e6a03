"""The submission checker: everything that can be verified about a submission folder without running a model.

A submission folder ``submissions/<name>/`` holds ``submission.yaml`` (see :mod:`mibench.submissions.card`)
and, unless it is a plugin submission, one folder per covered (task, model) cell named ``<task>_<model>``
(``ioi_gpt2-tasks``; the task may be written with ``-`` for ``_`` as MIB does, ``arithmetic-addition_llama3``;
a ``/`` in a hub id is written ``__``):

* ``contains: importances`` -- each cell holds one ``importances.json`` / ``.pt`` / ``.safetensors`` file of
  scores in MIB's format, for the named model's graph;
* ``contains: circuits`` -- each cell holds the 9 binary circuits of MIB's multiple-circuit mode; sorted by
  size, circuit *i* may hold at most 0.1, 0.2, 0.5, 1, 2, 5, 10, 20 and 50% of the graph's edges;
* ``contains: plugin`` -- no files: ``plugin`` in the card names the distribution and the method id;
* ``contains: featurizers`` (causal track) -- each cell holds one folder per covered causal variable with
  the saved featurizers of its sites (:mod:`mibench.submissions.causal`).

Checked: the card (every field), that every task is registered and every model known (its graph size from
the zoo model's ``config.json`` or MIB's reference sizes), coverage (at least 2 models and 2 tasks, each with
files), every file's format and graph size via :func:`mibench.graph.io.load_circuit` -- which reads ``.pt``
files with ``torch.load(weights_only=True)``, so a pickle that would run code is refused, never executed --
the level, that importances hold scores, and the circuit size limits. The file rules shared with
``mibench score`` (:mod:`mibench.submissions.file_rules`) apply throughout: no symbolic links, no stray or
unknown files (hidden ones included), featurizer cards checked before anything is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mibench.errors import MibenchError
from mibench.submissions.card import CARD_FILE, Problem, SubmissionCard, load_submission_card
from mibench.submissions.file_rules import CIRCUIT_SUFFIXES, link_problems, load_circuit_file
from mibench.submissions.models import ModelTarget, resolve_model

#: Size limits of MIB's multiple-circuit mode: circuit i (sorted by size) holds at most this fraction of edges.
CIRCUIT_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
IMPORTANCES_STEM = "importances"
README_FILE = "README.md"
#: The only files a submission folder may hold beside its cell folders.
TOP_LEVEL_FILES = (CARD_FILE, README_FILE)
MIN_MODELS = 2
MIN_TASKS = 2
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9\-]*")


@dataclass
class Cell:
    """One covered (task, model) pair and its files (circuits: smallest first)."""

    task: str
    model: ModelTarget
    folder: Path
    files: list[Path] = field(default_factory=list)
    variables: dict[str, Path] = field(default_factory=dict)  # causal track: variable -> featurizer folder


@dataclass
class SubmissionReport:
    path: Path
    card: SubmissionCard | None
    cells: list[Cell]
    problems: list[Problem]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def ok(self) -> bool:
        return not self.problems


def cell_folder_names(task: str, model: str) -> list[str]:
    """Folder names accepted for a cell: ``<task>_<model>``, with MIB's hyphenated task spelling too."""
    model_part = model.replace("/", "__")
    spellings = dict.fromkeys([task, task.replace("_", "-")])
    return [f"{spelling}_{model_part}" for spelling in spellings]


def _is_circuit_file(path: Path) -> bool:
    return path.suffix.lower() in CIRCUIT_SUFFIXES


def folder_entries(folder: Path) -> list[Path]:
    """Everything in ``folder``, hidden files too: a submission holds nothing the checker does not read."""
    return sorted(folder.iterdir())


def _score_field(path: Path, tensor_field: str) -> str:
    return "edges" if path.suffix.lower() == ".json" else tensor_field


def _load(path: Path, layout, problems: list[Problem]):
    problem, graph = load_circuit_file(path, layout)
    if problem is not None:
        problems.append(problem)
    return graph


def _stray_files(files: list[Path], kept: list[Path], what: str, problems: list[Problem]) -> None:
    for path in files:
        if path not in kept:
            problems.append(Problem(str(path), None, f"unexpected file: {what}"))


def check_importances(cell: Cell, level: str | None, problems: list[Problem]) -> None:
    """One importances file in the cell folder, readable for the model's graph, at ``level`` (None: any), with
    something to rank."""
    import torch

    files = [p for p in folder_entries(cell.folder) if p.is_file()]
    importances = [p for p in files if p.stem == IMPORTANCES_STEM and _is_circuit_file(p)]
    _stray_files(files, importances, "an importances submission holds exactly one importances.json / .pt / "
                 ".safetensors per cell folder", problems)
    if not importances:
        problems.append(Problem(str(cell.folder), None, "no importances file (importances.json, importances.pt "
                                "or importances.safetensors)"))
        return
    if len(importances) > 1:
        names = ", ".join(p.name for p in importances)
        problems.append(Problem(str(cell.folder), None, f"more than one importances file ({names}); keep one"))
        return
    path = importances[0]
    cell.files = [path]
    graph = _load(path, cell.model.layout, problems)
    if graph is None:
        return
    if level is not None and graph.level != level:
        problems.append(Problem(str(path), None, f"holds {graph.level}-level scores, but the card says "
                                f"level: {level}"))
        return

    def nothing_scored(scores: torch.Tensor) -> bool:
        return not bool((torch.isfinite(scores) & (scores != 0)).any())

    if graph.level == "edge" and nothing_scored(graph.edge_scores[graph.real_edge_mask]):
        problems.append(Problem(str(path), _score_field(path, "edges_scores"),
                                "every edge score is 0 or NaN: there is nothing to rank"))
    elif graph.level == "node" and nothing_scored(graph.node_scores):
        problems.append(Problem(str(path), "nodes" if path.suffix.lower() == ".json" else "nodes_scores",
                                "every node score is 0 or NaN: there is nothing to rank"))
    elif graph.level == "neuron" and nothing_scored(graph.neuron_scores):
        problems.append(Problem(str(path), "nodes" if path.suffix.lower() == ".json" else "neurons_scores",
                                "every neuron score is 0 or NaN: there is nothing to rank"))


def check_circuits(cell: Cell, problems: list[Problem]) -> None:
    entries = [p for p in folder_entries(cell.folder) if p.is_file()]
    files = [p for p in entries if _is_circuit_file(p)]
    _stray_files(entries, files, f"a circuits submission holds circuit files ({', '.join(CIRCUIT_SUFFIXES)}) "
                 "only", problems)
    wanted = len(CIRCUIT_FRACTIONS)
    if len(files) != wanted:
        limits = ", ".join(f"{100 * f:g}%" for f in CIRCUIT_FRACTIONS)
        problems.append(Problem(str(cell.folder), None, f"holds {len(files)} circuit file(s); the multiple-circuit "
                                f"mode needs exactly {wanted}, one within each size limit ({limits} of edges)"))
    sized = []
    for path in files:
        graph = _load(path, cell.model.layout, problems)
        if graph is not None:
            sized.append((graph.weighted_edge_count(), path.name, path))
    sized.sort()
    n_edges = cell.model.layout.n_edges
    for rank, (count, _name, path) in enumerate(sized[:wanted]):
        fraction = CIRCUIT_FRACTIONS[rank]
        if count > fraction * n_edges + 1e-9:
            problems.append(Problem(str(path), _score_field(path, "edges_in_graph"),
                                    f"circuit {rank + 1} of {wanted} by size holds {count:g} edges "
                                    f"({100 * count / n_edges:.3g}% of {n_edges:,}); circuit {rank + 1} may hold "
                                    f"at most {100 * fraction:g}% ({int(fraction * n_edges):,} edges)"))
    cell.files = [path for _count, _name, path in sized]


def _check_plugin(path: Path, card: SubmissionCard, card_file: str, report: SubmissionReport) -> None:
    import warnings

    from mibench.submissions.plugin import PluginWithoutCardsWarning, plugin_problems

    for item in folder_entries(path):
        if item.name not in TOP_LEVEL_FILES:
            report.problems.append(Problem(str(item), None, f"unexpected {'folder' if item.is_dir() else 'file'}: a "
                                           f"plugin submission holds only {CARD_FILE} (and optionally {README_FILE})"))
    problems, found = plugin_problems(card, card_file)
    report.problems += problems
    for warning in found:
        report.warnings.append(warning)
        warnings.warn(warning, PluginWithoutCardsWarning, stacklevel=2)


def _check_card_semantics(card: SubmissionCard, card_file: str,
                          problems: list[Problem]) -> tuple[set[str], dict[str, ModelTarget]]:
    """Known tasks and resolved models of the card; problems for the rest."""
    from mibench.data.registry import UnknownTaskError, get_card

    if card.contains == "plugin" and card.plugin is None:
        problems.append(Problem(card_file, "plugin", "required when contains is 'plugin' (distribution and method)"))
    if card.contains != "plugin" and card.plugin is not None:
        problems.append(Problem(card_file, "plugin", f"only allowed when contains is 'plugin' (it is "
                                f"{card.contains!r})"))
    tasks: set[str] = set()
    for i, task in enumerate(card.tasks):
        try:
            get_card(task)
            tasks.add(task)
        except UnknownTaskError as exc:
            problems.append(Problem(card_file, f"tasks[{i}]", str(exc)))
    models: dict[str, ModelTarget] = {}
    for i, name in enumerate(card.models):
        try:
            models[name] = resolve_model(name)
        except MibenchError as exc:  # UnknownModelError, or a zoo model folder that cannot be read
            problems.append(Problem(card_file, f"models[{i}]", str(exc)))
    if len(card.models) < MIN_MODELS:
        problems.append(Problem(card_file, "models", f"a submission must cover at least {MIN_MODELS} models "
                                f"(it lists {len(card.models)})"))
    if len(card.tasks) < MIN_TASKS:
        problems.append(Problem(card_file, "tasks", f"a submission must cover at least {MIN_TASKS} tasks "
                                f"(it lists {len(card.tasks)})"))
    return tasks, models


def inspect_submission(path: str | Path) -> SubmissionReport:
    """Check a submission folder; the report holds the card, the cells found and every problem."""
    path = Path(path)
    problems: list[Problem] = []
    report = SubmissionReport(path=path, card=None, cells=[], problems=problems)
    if not path.is_dir():
        problems.append(Problem(str(path), None, "not a folder (a submission is a folder holding "
                                f"{CARD_FILE})"))
        return report
    if not NAME_PATTERN.fullmatch(path.resolve().name):
        problems.append(Problem(str(path), None, "the folder name is the submission's id: use lower-case "
                                "letters, digits and '-'"))
    links = link_problems(path)
    if links:
        problems += links
        return report
    card_file = str(path / CARD_FILE)
    card, card_problems = load_submission_card(card_file)
    problems += card_problems
    report.card = card
    if card is None:
        return report
    tasks, models = _check_card_semantics(card, card_file, problems)
    variables: dict[str, list[str]] = {}
    if card.track == "causal":
        from mibench.submissions.causal import covered_variables

        variables = covered_variables(card, card_file, tasks, problems)
    elif card.contains == "featurizers":
        problems.append(Problem(card_file, "contains", "featurizers are causal-track files; a circuit-track "
                                "submission contains importances, circuits or a plugin"))
        return report
    elif card.variables is not None:
        problems.append(Problem(card_file, "variables", "applies to causal-track submissions only"))
    if card.contains == "plugin":
        if card.plugin is not None:
            _check_plugin(path, card, card_file, report)
        return report

    expected: dict[str, tuple[str, str]] = {}
    for task in card.tasks:
        for model in card.models:
            for folder_name in cell_folder_names(task, model):
                expected.setdefault(folder_name, (task, model))
    example = cell_folder_names(card.tasks[0], card.models[0])[0]
    present: set[tuple[str, str]] = set()  # (task, model) of every cell folder, checked or not
    for item in folder_entries(path):
        if item.is_file():
            if item.name in TOP_LEVEL_FILES:
                continue
            what = "featurizer" if card.track == "causal" else "circuit"
            problems.append(Problem(str(item), None, f"unexpected file: {what} files belong in a <task>_<model> "
                                    f"folder (e.g. {example}/); beside them only {CARD_FILE} and {README_FILE}"))
            continue
        if item.name not in expected:
            problems.append(Problem(str(item), None, f"does not name a covered cell: expected <task>_<model> "
                                    f"with a task from 'tasks' and a model from 'models' (e.g. {example})"))
            continue
        task, model = expected[item.name]
        if (task, model) in present:
            problems.append(Problem(str(item), None, f"a second folder for task {task} and model {model}"))
            continue
        present.add((task, model))
        if model not in models or task not in tasks:
            continue  # an unknown model or task is already reported against the card
        cell = Cell(task=task, model=models[model], folder=item)
        report.cells.append(cell)
        if card.contains == "featurizers":
            from mibench.submissions.causal import check_featurizer_cell

            if task in variables:
                cell.variables = check_featurizer_cell(item, task, cell.model, variables[task], problems)
            continue
        for inner in folder_entries(item):
            if inner.is_dir():
                problems.append(Problem(str(inner), None, "unexpected folder: a cell folder holds its files directly"))
        if card.contains == "importances":
            check_importances(cell, card.level, problems)
        else:
            check_circuits(cell, problems)

    covered_tasks = {task for task, _model in present}
    covered_models = {model for _task, model in present}
    for i, task in enumerate(card.tasks):
        if task in tasks and task not in covered_tasks:
            problems.append(Problem(card_file, f"tasks[{i}]", f"no cell folder holds files for task {task!r} "
                                    f"(expected e.g. {cell_folder_names(task, card.models[0])[0]}/)"))
    for i, model in enumerate(card.models):
        if model not in covered_models:
            problems.append(Problem(card_file, f"models[{i}]", f"no cell folder holds files for model {model!r} "
                                    f"(expected e.g. {cell_folder_names(card.tasks[0], model)[0]}/)"))
    return report


def check_submission(path: str | Path) -> list[Problem]:
    """Every problem with the submission folder at ``path`` (empty: it passes)."""
    return inspect_submission(path).problems
