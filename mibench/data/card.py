"""Task cards: the YAML file that declares a task (``tasks/<id>/card.yaml``), validated on load.

Versions are strict integer pairs ``"X.Y"``: X changes whenever any score could change (data, splits,
counterfactual construction, labels, metric); Y for interface changes that leave scores unchanged. The
leaderboard never compares rows whose task X differs.

A major version does not always change the task a model is *taught*: 2.0 of IOI moved counterfactual spans
and 2.0 of arithmetic redrew some ``random`` counterparts, while every clean prompt and answer stayed the
same. ``same_task_since`` says so explicitly: a model trained on any version from it on (the version a zoo
model's ``zoo_card.json`` records under ``tasks``) is a model of this version's task and is evaluated on it
without retraining (:func:`trained_version_accepted`). Without the field only the current major qualifies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mibench.data.splits import SPLITS
from mibench.validation import CardError, check_entry_point, read_card


class TaskCardError(CardError):
    """A task card that cannot be used; the message names the file and the field."""


class TaskVersion(BaseModel):
    model_config = ConfigDict(frozen=True)
    comparability: int
    interface: int

    def __str__(self) -> str:
        return f"{self.comparability}.{self.interface}"


class OfficialDataset(BaseModel):
    """Where the official MIB data for this task lives on the Hugging Face hub."""

    model_config = ConfigDict(extra="forbid")
    hf_repo: str
    config: str | None = None
    revision: str | None = None
    private_repo: str | None = None


class CausalSpec(BaseModel):
    """What the causal-variable track uses of a task: token positions, counterfactual kinds, variables.

    The mechanisms themselves are code (the task class's ``causal_model()``); the card only names what
    can be asked for, so ``mibench ls tasks`` can show it without importing anything.
    """

    model_config = ConfigDict(extra="forbid")
    variables: list[str] = Field(min_length=1, description="causal variables a featurizer may localise")
    positions: list[str] = Field(min_length=1, description="schema roles intervened at (their last token)")
    counterfactuals: list[str] = Field(min_length=1, description="counterfactual kinds used to train and test")


class SpanSchema(BaseModel):
    """The task's position-aware schema: named token spans that segment every prompt the same way.

    ``anchors`` are roles of the card's ``schema`` in prompt order; each anchor's tokens are one span, the
    tokens between two anchors are a gap span, the tokens before the first anchor (BOS included) are
    ``prefix``, and the last anchor is the answer position alone (its prompt's final token). So variable-length
    examples map to one list of spans (:mod:`mibench.data.span_schema`). ``gap_names`` names the gap after an
    anchor (default ``<anchor>+``); ``null`` says the next anchor follows immediately (no gap span; a prompt
    with tokens in between does not fit the schema).
    """

    model_config = ConfigDict(extra="forbid")
    anchors: list[str] = Field(min_length=1, description="roles that delimit the spans, in prompt order; the last "
                                                         "one is the answer position")
    gap_names: dict[str, str | None] = Field(default_factory=dict,
                                             description="anchor -> name of the gap after it (null: no gap)")

    @model_validator(mode="after")
    def _names_are_distinct(self) -> "SpanSchema":
        if len(set(self.anchors)) != len(self.anchors):
            raise ValueError(f"anchors repeat: {self.anchors}")
        last = self.anchors[-1]
        bad = [a for a in self.gap_names if a not in self.anchors[:-1]]
        if bad:
            raise ValueError(f"gap_names: {bad} are not anchors followed by a gap (the last anchor, {last!r}, "
                             "is the answer position and has none)")
        names = ["prefix", *self.anchors, *(self.gap_names.get(a, f"{a}+") for a in self.anchors[:-1])]
        names = [n for n in names if n is not None]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise ValueError(f"span names must be distinct, but {clashes} repeat")
        return self


class TaskCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    version: TaskVersion
    name: str
    description: str
    entry: str = Field(description="'module:attribute' of the task class, imported only when the task is used")
    splits: dict[str, int]
    metric: str
    counterfactuals: list[str]
    default_counterfactual: str
    variables: dict[str, str] = Field(default_factory=dict)
    schema_roles: dict[str, str] = Field(alias="schema", description="token roles -> what they mark")
    official: OfficialDataset | None = None
    causal: CausalSpec | None = None
    span_schema: SpanSchema | None = None
    same_task_since: TaskVersion | None = Field(
        default=None, description="oldest version whose clean prompts and answers (what a model is trained to "
                                  "do) are this version's; models trained on it or later stay valid")
    changelog: dict[str, str] = Field(default_factory=dict, description="version -> what changed and why")

    @field_validator("version", "same_task_since", mode="before")
    @classmethod
    def _parse_version(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value):
            major, minor = value.split(".")
            return {"comparability": int(major), "interface": int(minor)}
        if isinstance(value, dict):
            return value
        raise ValueError(f"must be a quoted string 'X.Y' of two integers (got {value!r}; YAML reads 1.10 as 1.1)")

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; allowed: {list(SPLITS)}")
        if any(size <= 0 for size in value.values()):
            raise ValueError("split sizes must be positive")
        return value

    @field_validator("default_counterfactual")
    @classmethod
    def _default_is_listed(cls, value: str, info) -> str:
        if value not in info.data.get("counterfactuals", []):
            raise ValueError(f"{value!r} is not one of the card's counterfactuals")
        return value

    _entry_form = field_validator("entry")(classmethod(lambda cls, value: check_entry_point(value)))

    @model_validator(mode="after")
    def _causal_names_exist(self) -> "TaskCard":
        if self.causal is None:
            return self
        checks = (("variables", self.causal.variables, self.variables),
                  ("positions", self.causal.positions, self.schema_roles),
                  ("counterfactuals", self.causal.counterfactuals, self.counterfactuals))
        for name, used, declared in checks:
            unknown = [x for x in used if x not in declared]
            if unknown:
                raise ValueError(f"causal.{name}: {unknown} not declared by the card (declared: {list(declared)})")
        return self

    @model_validator(mode="after")
    def _same_task_since_is_not_newer(self) -> "TaskCard":
        if self.same_task_since is not None and _order(self.same_task_since) > _order(self.version):
            raise ValueError(f"same_task_since: {self.same_task_since} is newer than the card's version {self.version}")
        return self

    @model_validator(mode="after")
    def _anchors_are_roles(self) -> "TaskCard":
        if self.span_schema is not None:
            unknown = [a for a in self.span_schema.anchors if a not in self.schema_roles]
            if unknown:
                raise ValueError(f"span_schema.anchors: {unknown} are not roles of the card's schema "
                                 f"({list(self.schema_roles)})")
        return self


def trained_version_accepted(card: TaskCard, trained: str) -> bool:
    """Whether a model trained on version ``trained`` of ``card``'s task is a model of the current version:
    ``trained`` is not newer than the card and not older than ``same_task_since`` (default: the current
    major, ``X.0``). Raises ``ValueError`` for a version that is not ``"X.Y"``."""
    if not re.fullmatch(r"\d+\.\d+", trained):
        raise ValueError(f"task version {trained!r} is not 'X.Y'")
    since = card.same_task_since or TaskVersion(comparability=card.version.comparability, interface=0)
    version = tuple(int(part) for part in trained.split("."))
    return _order(since) <= version <= _order(card.version)


def _order(version: TaskVersion) -> tuple[int, int]:
    return version.comparability, version.interface


def load_card(path: str | Path) -> TaskCard:
    """Read and validate a task card; errors name the file and the offending field."""
    return read_card(path, TaskCard, error=TaskCardError)
