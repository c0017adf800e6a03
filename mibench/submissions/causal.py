"""The causal-track half of the submission checker: which variables a card covers, and its featurizer files.

A ``contains: featurizers`` submission has one cell folder per (task, model), ``<task>_<model>/`` as in the
circuit track, holding one sub-folder per covered causal variable, and in it the saved interventions of
``mibench evaluate --track causal`` (one ``L<layer>_<role>.json`` card and its ``.safetensors`` per site)::

    submissions/my-featurizer/
        submission.yaml                     track: causal, contains: featurizers
        mcqa_gpt2-tasks/answer_pointer/L0_correct_symbol.json + .safetensors, ...
        ioi_llama-tasks/output_token/L2_END.json + .safetensors, ...

The token roles (the site's ``<role>``) are the submission's token-position choices: any role of the task's
schema, not only the card's defaults. Every variable folder goes through the file rules of
:mod:`mibench.submissions.file_rules` (the same ones ``mibench score --track causal`` applies), so a card is
checked against its registered classes' declared arguments and the model before anything is built; then
each featurizer is rebuilt from *registered* class names with its tensors loaded from safetensors, saved
and loaded again, and must give the same outputs (state that saving would lose is caught here). A file
can name only code that is installed, and no file is ever unpickled. Sites a submission leaves out are allowed, and
are reported by the evaluation as missing (never filled in with the full vector).
"""

from __future__ import annotations

from pathlib import Path

from mibench.errors import MibenchError
from mibench.submissions.card import Problem, SubmissionCard
from mibench.submissions.file_rules import (
    SiteExpectations,
    featurizer_folder_problems,
    model_aliases,
    site_dimensions,
)
from mibench.submissions.models import ModelTarget

CAUSAL_CONTAINS = ("featurizers", "plugin")


def covered_variables(card: SubmissionCard, card_file: str, tasks: set[str],
                      problems: list[Problem]) -> dict[str, list[str]]:
    """Task -> causal variables the card covers (its ``variables``, or every variable the task declares)."""
    from mibench.data.registry import get_card

    if card.contains not in CAUSAL_CONTAINS:
        problems.append(Problem(card_file, "contains", f"a causal-track submission contains 'featurizers' or "
                                f"'plugin', not {card.contains!r}"))
    if card.level is not None:
        problems.append(Problem(card_file, "level", "applies to circuit-track submissions only"))
    declared = card.variables or {}
    for task in declared:
        if task not in card.tasks:
            problems.append(Problem(card_file, f"variables.{task}", f"task {task!r} is not listed in 'tasks'"))
    covered: dict[str, list[str]] = {}
    for i, task in enumerate(card.tasks):
        if task not in tasks:
            continue  # unknown task: already reported
        spec = get_card(task).causal
        if spec is None:
            problems.append(Problem(card_file, f"tasks[{i}]", f"task {task!r} has no causal variables"))
            continue
        wanted = declared.get(task, list(spec.variables))
        unknown = [v for v in wanted if v not in spec.variables]
        for variable in unknown:
            problems.append(Problem(card_file, f"variables.{task}", f"task {task!r} has no causal variable "
                                    f"{variable!r} (variables: {', '.join(spec.variables)})"))
        if not wanted:
            problems.append(Problem(card_file, f"variables.{task}", "lists no variable"))
        covered[task] = [v for v in wanted if v not in unknown]
    return covered


def check_featurizer_cell(folder: Path, task: str, model: ModelTarget, variables: list[str],
                          problems: list[Problem]) -> dict[str, Path]:
    """Check one ``<task>_<model>/`` folder of saved featurizers; returns variable -> its folder."""
    from mibench.data.registry import get_card

    roles = tuple(get_card(task).schema_roles)
    dims = site_dimensions(model.name)
    found: dict[str, Path] = {}
    for item in sorted(folder.iterdir()):
        if not item.is_dir():
            problems.append(Problem(str(item), None, "featurizer files belong in a folder named after the "
                                    f"causal variable (e.g. {folder.name}/{variables[0] if variables else 'VARIABLE'}/)"))
        elif item.name not in variables:
            problems.append(Problem(str(item), None, f"not a covered causal variable of task {task!r} "
                                    f"(covered: {', '.join(variables) or 'none'})"))
        else:
            expect = SiteExpectations(model=model.name, task=task, variable=item.name, roles=roles, dims=dims,
                                      model_aliases=model_aliases(model.name))
            cards, site_problems = featurizer_folder_problems(item, expect)
            if not site_problems:
                site_problems = round_trip_problems(cards.values())
            problems += site_problems
            if not site_problems:
                found[item.name] = item
    for variable in variables:
        if not (folder / variable).is_dir():
            problems.append(Problem(str(folder), None, f"no folder for covered variable {variable!r} "
                                    f"(expected {folder.name}/{variable}/ with L<layer>_<role>.json files)"))
    return found


def round_trip_problems(cards) -> list[Problem]:
    """Load every featurizer, save it, load the copy, and compare outputs on seeded random inputs: state a
    class keeps outside its tensors (and so loses when saved) shows up here, not as a silently moved score."""
    from mibench.causal.roundtrip import round_trip_difference
    from mibench.causal.storage import load_interchange

    problems = []
    for path in cards:
        try:
            card, interchange = load_interchange(path)
            difference = round_trip_difference(interchange, layer=card.layer, role=card.role)
        except MibenchError as exc:
            problems.append(Problem(str(path), getattr(exc, "field", None), getattr(exc, "message", str(exc))))
            continue
        if difference is not None:
            problems.append(Problem(str(path), "featurizer.class", difference))
    return problems
