"""Shared pieces of validating YAML/JSON documents (cards, records) with pydantic.

Every YAML card (task cards, method cards, ``submission.yaml``) is read by :func:`read_card`: read the
file, check it is a mapping, validate it with the card's pydantic model, and report every problem as a
:class:`Problem` that names the file and the field as it is spelt in the file (``plugin.method``,
``models[1]``). One reader means one wording of "file: field: message" for every card, and a card kind
only chooses its model and its exception class.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mibench.errors import MibenchError

CardModel = TypeVar("CardModel", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: which file, which field in it (if any), and what."""

    file: str
    field: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class CardError(MibenchError, ValueError):
    """A card that cannot be used; :attr:`problems` name the file and the field of everything wrong."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(str(problem) for problem in self.problems)

    def __reduce__(self):  # keep the one-argument constructor picklable
        return (type(self), (self.problems,))


def read_card(path: str | Path, model: type[CardModel], *, error: type[CardError] = CardError,
              missing: str = "no such file") -> CardModel:
    """Read the YAML card at ``path`` and validate it as ``model``.

    Raises ``error`` (a :class:`CardError`) holding one :class:`Problem` per thing wrong: an unreadable
    file or bad YAML as a whole-file problem, each validation error with the field it concerns. ``missing``
    is the message for a file that does not exist (a caller may say where the file should have been).
    """
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error([Problem(where, None, missing)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error([Problem(where, None, f"cannot read: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise error([Problem(where, None, f"not valid YAML: {' '.join(str(exc).split())}")]) from None
    if not isinstance(raw, dict):
        required = [_spelling(name, info) for name, info in model.model_fields.items() if info.is_required()]
        example = ", ".join([*required[:2], "..."])
        raise error([Problem(where, None, f"expected a mapping of fields ({example}) at the top level")])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(validation_problems(where, exc, model)) from None


def validation_problems(where: str, exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """pydantic's errors as problems of file ``where``: field paths as written, an unknown field with the
    fields allowed at its place."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(model, loc[:-1])
            message = "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        problems.append(Problem(where, field_path(loc) or None, message))
    return problems


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's location as people write it: ``plugin.method``, ``models[1]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _spelling(name: str, info: Any) -> str:
    return info.alias or name


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names (as spelt in the file) of the nested model at ``loc``; empty when ``loc`` does not
    lead through model-typed fields only (a list item, a dict value)."""
    current: type[BaseModel] | None = model
    for part in loc:
        fields = {_spelling(name, info): info for name, info in current.model_fields.items()}
        if part not in fields:
            return []
        current = _model_type(fields[part].annotation)
        if current is None:
            return []
    return [_spelling(name, info) for name, info in current.model_fields.items()]


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """``Model`` for an annotation ``Model`` or ``Model | None``; None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [arg for arg in typing.get_args(annotation) if _model_type(arg) is not None]
        return models[0] if len(models) == 1 else None
    return None


def describe_validation_error(exc: ValidationError) -> str:
    """``field 'a.b': message; ...`` -- one clause per problem, naming the field as it is spelt in the file."""
    return "; ".join(
        f"field '{'.'.join(str(p) for p in err['loc']) or '<top>'}': {err['msg']}" for err in exc.errors()
    )


def check_entry_point(value: str) -> str:
    """A card's ``entry``: ``package.module:Attribute`` (imported only when the item is used)."""
    if not re.fullmatch(r"[\w.]+:\w+", value):
        raise ValueError(f"must look like 'package.module:ClassName', got {value!r}")
    return value
