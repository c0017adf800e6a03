"""Expand a sweep spec into concrete runs, skipping (and naming) the combinations the cards declare impossible.

A combination is *impossible* (skipped, with the reason) when a method card lacks the requested level or
ablation, a task has no causal variables or not the requested one, or a planted-circuit model is paired with
a task other than the one its circuit was planted for. A *mistake* (an unknown method, task or argument, a
method of the other track, two runs that would overwrite each other's record) is an error naming the field.

Only cards are read (method and task code is not imported), so expansion is fast and torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mibench.errors import MibenchError
from mibench.sweep.spec import Entry, MethodSpec, Options, SweepSpec, SweepSpecError

DEFAULT_THREADS = 1


@dataclass(frozen=True)
class Run:
    """One evaluation of the sweep: exactly one ``mibench evaluate`` command (see :meth:`argv`)."""

    entry: str  # the spec entry it came from (its name, or "entries.<i>")
    track: str
    model: str
    task: str
    method: str  # the method card's id
    seed: int
    level: str | None  # circuit track (resolved: never None there)
    ablation: str | None  # circuit track
    variable: str | None  # causal track
    args: tuple[tuple[str, Any], ...]  # method argument overrides, as the spec gives them
    options: Options
    output_dir: str

    @property
    def threads(self) -> int:
        return self.options.threads or DEFAULT_THREADS

    @property
    def gpus(self) -> float:
        if self.options.gpus is not None:
            return self.options.gpus
        return 1.0 if (self.options.device or "cpu").startswith("cuda") else 0.0

    @property
    def identity(self) -> tuple:
        """Runs with the same identity write the same record folder (its name holds no other setting)."""
        return (self.track, self.model, self.task, self.variable, self.method, self.level, self.ablation,
                self.options.split or "test", self.seed)

    @property
    def label(self) -> str:
        method = self.method
        if self.track == "circuit":
            method += f" {self.level}" + ("" if self.ablation == "patching" else f" ({self.ablation})")
        args = "".join(f" {name}={value}" for name, value in self.args)
        where = f"{self.task}/{self.variable}" if self.variable else self.task
        return f"{self.model} {where} {method}{args} seed {self.seed}"

    def argv(self) -> list[str]:
        """The ``mibench evaluate`` command line that makes this run's record on its own (it is the record's
        ``invocation``)."""
        argv = ["mibench", "evaluate", "--track", self.track, "--method", self.method, "--task", self.task,
                "--model", self.model, "--seed", str(self.seed)]
        if self.track == "circuit":
            argv += ["--level", str(self.level), "--ablation", str(self.ablation)]
        else:
            argv += ["--variable", str(self.variable)]
        for name, value in self.args:
            argv += ["--method-arg", f"{name}={_flag_value(value)}"]
        o = self.options
        flags = {"--split": o.split, "--limit": o.limit, "--batch-size": o.batch_size, "--bootstrap": o.bootstrap,
                 "--device": o.device, "--dtype": o.dtype, "--revision": o.revision,
                 "--counterfactual": o.counterfactual, "--sae-dir": o.sae_dir}
        if self.track == "circuit":
            flags["--attribution-examples"] = o.attribution_examples
        else:
            flags["--train-examples"] = o.train_examples
            flags["--layers"] = ",".join(map(str, o.layers)) if o.layers is not None else None
            flags["--positions"] = ",".join(o.positions) if o.positions is not None else None
        for flag, value in flags.items():
            if value is not None:
                argv += [flag, str(value)]
        if self.track == "circuit" and o.baseline is False:
            argv.append("--no-baseline")
        if self.track == "causal" and o.save_featurizers is False:
            argv.append("--no-featurizers")
        return argv + ["--output-dir", self.output_dir]


@dataclass(frozen=True)
class Skipped:
    """A combination the spec names but the cards rule out."""

    entry: str
    what: str
    reason: str


@dataclass
class Expansion:
    runs: list[Run]
    skipped: list[Skipped]


def _flag_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def expand(spec: SweepSpec, path: str | Path) -> Expansion:
    """Every run of ``spec`` (read from ``path``, which errors name), in spec order, without duplicates."""
    from mibench.data.registry import get_card
    from mibench.method_registry import get_method_card, resolve_arguments
    from mibench.zoo.catalog import list_planted

    planted = {m.name: list(m.known_circuits) for m in list_planted()}
    runs: list[Run] = []
    skipped: list[Skipped] = []
    seen: dict[tuple, tuple[Run, str]] = {}
    for i, entry in enumerate(spec.entries):
        where = f"entries.{i}"
        label = entry.name or where
        options = spec.options.merged(entry.options)
        task_field = f"{where}.tasks" if entry.tasks is not None else "tasks"
        tasks = []
        for task_id in entry.tasks or spec.tasks or []:
            try:
                tasks.append(get_card(task_id))
            except MibenchError as exc:
                raise SweepSpecError(path, task_field, str(exc)) from None
        _check_variables(entry, tasks, path, where)
        methods = [_resolve_method(m, entry, path, f"{where}.methods.{j}", get_method_card, resolve_arguments)
                   for j, m in enumerate(entry.methods)]
        for method, level, reason in methods:
            if reason:
                skipped.append(Skipped(label, f"{method.id}" + (f" {level}" if level else ""), reason))
        models = entry.models or spec.models or []
        for model in models:
            for card in tasks:
                if model in planted and card.id not in planted[model]:
                    skipped.append(Skipped(label, f"{model} x {card.id}", f"{model} ships a planted circuit for "
                                           f"{', '.join(planted[model])} only"))
                    continue
                variables: list[str | None] = [None]
                if entry.track == "causal":
                    if card.causal is None:
                        skipped.append(Skipped(label, f"{model} x {card.id}", f"task {card.id} has no causal variables"))
                        continue
                    variables = []
                    for variable in entry.variables or card.causal.variables:
                        if variable in card.causal.variables:
                            variables.append(variable)
                        else:
                            skipped.append(Skipped(label, f"{model} x {card.id}/{variable}",
                                                   f"task {card.id} has no causal variable {variable}"))
                for variable in variables:
                    for method, level, reason in methods:
                        if reason:
                            continue
                        for seed in method.seeds or entry.seeds or spec.seeds:
                            run = Run(entry=label, track=entry.track, model=model, task=card.id, method=method.id,
                                      seed=seed, level=level, ablation=method.ablation if entry.track == "circuit"
                                      else None, variable=variable, args=tuple(method.args.items()),
                                      options=options, output_dir=spec.output_dir)
                            earlier = seen.get(run.identity)
                            if earlier is None:
                                seen[run.identity] = (run, label)
                                runs.append(run)
                            elif replace(earlier[0], entry=run.entry) == run:
                                skipped.append(Skipped(label, run.label, f"the same run as in {earlier[1]}"))
                            else:
                                raise SweepSpecError(path, where, f"{run.label}: {earlier[1]} has a run with the same "
                                                     "record folder but other settings; one record would overwrite "
                                                     "the other (give the runs different seeds or output_dir)")
    return Expansion(runs, skipped)


def _resolve_method(method: MethodSpec, entry: Entry, path, where: str, get_method_card, resolve_arguments):
    """``(method with its card id, resolved level, reason it is impossible or "")``; mistakes raise."""
    try:
        card = get_method_card(method.id)
    except MibenchError as exc:
        raise SweepSpecError(path, f"{where}.id", str(exc)) from None
    if card.track != entry.track:
        raise SweepSpecError(path, f"{where}.id", f"{card.id} is a {card.track}-track method, but the entry's track "
                             f"is {entry.track}")
    try:
        resolve_arguments(card, dict(method.args))
    except MibenchError as exc:
        raise SweepSpecError(path, f"{where}.args", str(exc)) from None
    method = method.model_copy(update={"id": card.id})
    if entry.track == "causal":
        return method, None, ""
    level = method.level or card.levels[0]
    if level not in card.levels:
        return method, level, f"the {card.id} card has no {level} level (levels: {', '.join(card.levels)})"
    if method.ablation not in card.ablations:
        return method, level, (f"the {card.id} card has no {method.ablation} ablation "
                               f"(ablations: {', '.join(card.ablations)})")
    return method, level, ""


def _check_variables(entry: Entry, tasks, path, where: str) -> None:
    """A variable that none of the entry's tasks has is a typo, not an impossible combination."""
    if entry.variables is None:
        return
    from mibench.errors import close_matches

    known = sorted({v for card in tasks if card.causal is not None for v in card.causal.variables})
    for variable in entry.variables:
        if variable not in known:
            hint = close_matches(variable, known)
            raise SweepSpecError(path, f"{where}.variables", f"no task of the entry has a causal variable {variable!r}"
                                 + (f"; did you mean {', '.join(hint)}?" if hint else f" (variables: {', '.join(known)})"))
