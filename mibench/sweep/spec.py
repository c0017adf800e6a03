"""The sweep spec: a YAML file naming models x tasks x methods x seeds for both tracks, plus evaluation options.

Schema version 1 (``version: 1``)::

    version: 1
    output_dir: leaderboard/records      # where records go (default: results)
    models: [gpt2-tasks]                 # default models of every entry
    tasks: [ioi, mcqa]                   # default tasks of every entry
    seeds: [0]                           # default seeds of every method
    options: {limit: 20}                 # evaluation options of every entry (see Options)
    entries:
      - track: circuit                   # circuit (default) or causal
        methods:
          - random                       # a method id: the card's default level, patching, default arguments
          - {id: eap, ablation: mean}
          - {id: nap, level: neuron, args: {ig_steps: 0}, seeds: [0, 1, 2]}
      - track: causal
        tasks: [mcqa]                    # an entry may restrict (or replace) models, tasks and seeds
        variables: [answer_pointer]      # default: every causal variable of each task
        options: {layers: [0, 1]}        # overrides the top-level options for this entry
        methods: [full-vector, {id: das, seeds: [0, 1, 2]}]

Only the shape and the types are checked here (with one ``file: field: message`` error per problem); names
(methods, tasks, variables, arguments) are checked against the registries when the spec is expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mibench.errors import FileFieldError

SCHEMA_VERSION = 1


class SweepSpecError(FileFieldError):
    """A sweep spec that cannot be used; ``field`` is the place in the file (``entries.1.methods.0.level``)."""

    kind = "sweep spec"

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.message}" if self.field else f"{self.path}: {self.message}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Options(_Strict):
    """Evaluation options (the ``mibench evaluate`` flags of the same names) and the resources of each run.

    Every field is optional; an entry's ``options`` override the top-level ones field by field, and what is
    left unset takes ``mibench evaluate``'s default, so a sweep run and the same ``mibench evaluate`` command
    produce the same record."""

    split: Literal["train", "validation", "test", "private_test"] | None = None
    limit: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    bootstrap: int | None = Field(None, ge=0)
    device: str | None = None
    dtype: Literal["float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "float64"] | None = None
    revision: str | None = None
    counterfactual: str | None = None
    # circuit track
    attribution_examples: int | None = Field(None, ge=1)
    baseline: bool | None = None
    # causal track
    train_examples: int | None = Field(None, ge=1)
    layers: list[int] | None = None
    positions: list[str] | None = None
    sae_dir: str | None = None
    save_featurizers: bool | None = None
    # resources Ray reserves for each run: CPU threads (torch uses exactly these) and GPUs (default: 1 when the
    # device is CUDA, else 0; a fraction shares a GPU between runs). Ray shows each run only its own GPUs, so
    # a sweep names the device "cuda" (the run's first visible GPU), not "cuda:<index>".
    threads: int | None = Field(None, ge=1)
    gpus: float | None = Field(None, ge=0)

    def merged(self, override: Options | None) -> Options:
        """These options with every field ``override`` sets replaced."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class MethodSpec(_Strict):
    """One method of an entry: its id, and for circuit methods its level and ablation."""

    id: str
    level: Literal["edge", "node", "neuron"] | None = None  # default: the method card's first level
    ablation: Literal["patching", "mean", "zero", "optimal"] = "patching"
    args: dict[str, Any] = Field(default_factory=dict)  # method arguments (``--method-arg NAME=VALUE``)
    seeds: list[int] | None = Field(None, min_length=1)  # default: the entry's, else the spec's seeds

    @field_validator("args")
    @classmethod
    def _plain_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, arg in value.items():
            if not isinstance(arg, (str, int, float, bool)):
                raise ValueError(f"argument {name!r} must be a string, number or boolean, got {arg!r}")
        return value


class Entry(_Strict):
    """A block of runs: every method x model x task (x variable) x seed, with shared options."""

    name: str | None = None  # a label for the summary (default: "entries.<i>")
    track: Literal["circuit", "causal"] = "circuit"
    methods: list[MethodSpec] = Field(min_length=1)
    models: list[str] | None = Field(None, min_length=1)
    tasks: list[str] | None = Field(None, min_length=1)
    variables: list[str] | None = Field(None, min_length=1)  # causal track only
    seeds: list[int] | None = Field(None, min_length=1)
    options: Options | None = None

    @field_validator("methods", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        """A bare method id stands for ``{id: <it>}``."""
        if isinstance(value, list):
            return [{"id": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _track_fields(self) -> Entry:
        if self.track == "causal" and any(m.level is not None or m.ablation != "patching" for m in self.methods):
            raise ValueError("level and ablation are circuit-track settings; a causal entry's methods take neither")
        if self.track == "circuit" and self.variables is not None:
            raise ValueError("variables belong to causal entries (track: causal)")
        return self


class SweepSpec(_Strict):
    version: int
    output_dir: str = "results"
    models: list[str] | None = Field(None, min_length=1)
    tasks: list[str] | None = Field(None, min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    options: Options = Field(default_factory=Options)
    entries: list[Entry] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"this mibench reads sweep spec version {SCHEMA_VERSION}, not {value}")
        return value

    @model_validator(mode="after")
    def _every_entry_has_models_and_tasks(self) -> SweepSpec:
        for i, entry in enumerate(self.entries):
            for what in ("models", "tasks"):
                if getattr(entry, what) is None and getattr(self, what) is None:
                    raise ValueError(f"entries.{i} has no {what}: give them in the entry or at the top level")
        return self


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every problem is a :class:`SweepSpecError` naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepSpecError(path, None, f"cannot read sweep spec: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SweepSpecError(path, None, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SweepSpecError(path, None, "a sweep spec is a YAML mapping (version, entries, ...)")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [(_location(err["loc"]), err["msg"].removeprefix("Value error, ")) for err in exc.errors()]
        (field, message), others = problems[0], problems[1:]
        if others:
            message += "; also " + "; ".join(f"{where}: {what}" for where, what in others)
        raise SweepSpecError(path, field, message) from None


def _location(loc: tuple) -> str:
    """A pydantic error location as the field is spelt in the file (``entries.0.methods.1.level``)."""
    return ".".join(str(part) for part in loc if not str(part).startswith("function-")) or "<top>"
