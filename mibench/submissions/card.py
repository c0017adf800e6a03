"""``submission.yaml``: who submits what, validated field by field.

Example (importance files for two models and two tasks)::

    method: Random scores
    description: Every edge gets an independent standard-normal score.
    authors: [Ada Lovelace]
    paper: null
    license: CC-BY-4.0
    contact: ada@example.org
    track: circuit
    contains: importances        # importances | circuits | plugin
    models: [gpt2-tasks, llama-tasks]
    tasks: [ioi, mcqa]
    level: edge                  # optional: the level every file must hold

A plugin submission names the method instead of shipping files::

    contains: plugin
    plugin: {distribution: acme-mib, method: "acme:my-method", version: "0.3.1"}

A causal-track submission ships trained featurizers (``contains: featurizers``, one folder per task x
model x variable, see :mod:`mibench.submissions.check`) or a causal plugin method; ``variables`` says which
causal variables of each task it covers (default: every variable the task card declares)::

    track: causal
    contains: featurizers
    variables: {mcqa: [answer_pointer], ioi: [output_token]}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mibench.validation import CardError, Problem, read_card

CARD_FILE = "submission.yaml"

_DISTRIBUTION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_NAMESPACED_METHOD = re.compile(r"[a-z][a-z0-9_\-]*:[a-z0-9][a-z0-9\-]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class PluginReference(_Strict):
    distribution: str = Field(description="the pip-installable distribution that provides the method")
    method: str = Field(description="the method's namespaced id, 'namespace:method'")
    version: str | None = None
    url: str | None = Field(default=None, description="where the code lives (repository or package page)")

    @field_validator("distribution")
    @classmethod
    def _distribution_name(cls, value: str) -> str:
        if not _DISTRIBUTION.fullmatch(value):
            raise ValueError(f"not a valid distribution name: {value!r}")
        return value

    @field_validator("method")
    @classmethod
    def _namespaced(cls, value: str) -> str:
        if not _NAMESPACED_METHOD.fullmatch(value):
            raise ValueError(f"a plugin method id is 'namespace:method' in lower case (e.g. 'acme:my-method'), "
                             f"got {value!r}")
        from mibench.plugins import RESERVED_NAMESPACES

        if value.split(":")[0] in RESERVED_NAMESPACES:
            raise ValueError(f"namespace {value.split(':')[0]!r} is reserved")
        return value


class SubmissionCard(_Strict):
    method: str = Field(description="the method's display name")
    description: str | None = None
    authors: list[str] = Field(min_length=1)
    paper: str | None = Field(default=None, description="URL or citation of the paper, if any")
    license: str
    contact: str
    track: Literal["circuit", "causal"]
    contains: Literal["importances", "circuits", "featurizers", "plugin"]
    models: list[str] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    level: Literal["edge", "node", "neuron"] | None = None
    plugin: PluginReference | None = None
    variables: dict[str, list[str]] | None = Field(
        default=None, description="causal track: task -> the causal variables covered (default: all of the task's)")

    @field_validator("method", "license", "contact")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _non_blank(value)

    @field_validator("authors", "models", "tasks")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            if not item.strip():
                raise ValueError(f"entry {i} is empty")
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return value


def load_submission_card(path: str | Path) -> tuple[SubmissionCard | None, list[Problem]]:
    """Read and validate ``submission.yaml``; every problem names the file and the field."""
    try:
        return read_card(path, SubmissionCard, missing=f"missing: every submission folder needs a {CARD_FILE}"), []
    except CardError as exc:
        return None, exc.problems
