"""The causal-track half of the submission checker: which variables a card covers, and its featurizer files.

A ``contains: featurizers`` submission has one cell folder per (task, model), ``<task>_<model>/`` as in the
circuit track, holding one sub-folder per covered causal variable, and in it the saved interventions of
``mibench evaluate --track causal`` (one ``L<layer>_<role>.json`` card and its ``.safetensors`` per site)::

    submissions/my-featurizer/
        submission.yaml                     track: causal, contains: featurizers
        mcqa_gpt2-tasks/answer_pointer/L0_correct_symbol.json + .safetensors, ...
        ioi_llama-tasks/output_token/L2_END.json + .safetensors, ...

The token roles (the site's ``<role>``) are the submission's token-position choices: any role of the task's
schema, not only the card's defaults. Each card is validated and rebuilt from *registered* class names with
its tensors loaded from safetensors (:func:`mibench.causal.storage.load_interchange`), so a file can name
only code that is installed, and no file is ever unpickled. Sites a submission leaves out are allowed, and
are reported by the evaluation as missing (never filled in with the full vector).
"""

from __future__ import annotations

from pathlib import Path

from mibench.errors import MibenchError
from mibench.submissions.card import Problem, SubmissionCard

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


def check_featurizer_cell(folder: Path, task: str, layout, variables: list[str],
                          problems: list[Problem]) -> dict[str, Path]:
    """Check one ``<task>_<model>/`` folder of saved featurizers; returns variable -> its folder."""
    found: dict[str, Path] = {}
    for item in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if item.is_file():
            problems.append(Problem(str(item), None, "featurizer files belong in a folder named after the "
                                    f"causal variable (e.g. {folder.name}/{variables[0] if variables else 'VARIABLE'}/)"))
        elif item.name not in variables:
            problems.append(Problem(str(item), None, f"not a covered causal variable of task {task!r} "
                                    f"(covered: {', '.join(variables) or 'none'})"))
        elif _check_sites(item, task, item.name, layout, problems):
            found[item.name] = item
    for variable in variables:
        if variable not in found and not (folder / variable).is_dir():
            problems.append(Problem(str(folder), None, f"no folder for covered variable {variable!r} "
                                    f"(expected {folder.name}/{variable}/ with L<layer>_<role>.json files)"))
    return found


def _check_sites(folder: Path, task: str, variable: str, layout, problems: list[Problem]) -> bool:
    """Every site card in ``folder``: schema, registered classes, tensor shapes, layer, role, width."""
    from mibench.causal.storage import FeaturizerFileError, find_cards, load_interchange
    from mibench.data.registry import get_card

    roles = get_card(task).schema_roles
    before = len(problems)
    try:
        sites = find_cards(folder)
    except FeaturizerFileError as exc:
        problems.append(Problem(str(folder), None, str(exc)))
        return False
    stray = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix not in (".json", ".safetensors")]
    for path in stray:
        problems.append(Problem(str(path), None, "unexpected file: a variable folder holds L<layer>_<role>.json "
                                "cards and their .safetensors tensors only (no code, no pickles)"))
    if not sites:
        problems.append(Problem(str(folder), None, "no featurizer cards (L<layer>_<role>.json + .safetensors)"))
        return False
    for (layer, role), path in sorted(sites.items()):
        if not 0 <= layer < layout.n_layers:
            problems.append(Problem(str(path), "layer", f"{layer} is outside the model's layers 0..{layout.n_layers - 1}"))
        if role not in roles:
            problems.append(Problem(str(path), "role", f"task {task!r} has no token role {role!r} "
                                    f"(roles: {', '.join(roles)})"))
        try:
            card, interchange = load_interchange(path)
        except MibenchError as exc:  # names the file and the field
            text = str(exc)
            prefix = f"{path}: "
            problems.append(Problem(str(path), None, text.removeprefix(prefix)))
            continue
        if (card.layer, card.role) != (layer, role):
            problems.append(Problem(str(path), "layer/role", f"the card says L{card.layer}/{card.role} but the file "
                                    f"name says L{layer}/{role}"))
        source = card.featurizer.get("config", {}).get("source")
        if isinstance(source, str) and not source.startswith("embedded:"):
            problems.append(Problem(str(path), "featurizer.config.source", f"{source!r} is a folder on the machine "
                                    "that saved it; name an embedded SAE (embedded:<model>/layer_<L>) or ship the "
                                    "weights (save the featurizer with source None)"))
        width = interchange.featurizer.d_model
        if width != layout.d_model:
            problems.append(Problem(str(path), "featurizer.config.d_model", f"{width}, but the model's hidden size "
                                    f"is {layout.d_model}"))
        for field, expected in (("task", task), ("variable", variable)):
            value = getattr(card, field)
            if value is not None and value != expected:
                problems.append(Problem(str(path), field, f"{value!r}, but the file sits in the folder for "
                                        f"{field} {expected!r}"))
    return len(problems) == before
