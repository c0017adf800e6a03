"""The method registry: built-in method folders are found by their ``method.yaml`` cards.

Like tasks, every built-in method lives in its own folder under ``methods/`` (installed as
``mibench.methods.<folder>``) with a card naming its entry point; ``list_method_cards()`` reads the cards
without importing any code, so ``mibench ls methods`` stays torch-free. ``load_method(name, **args)``
imports the entry only when the method is used. Implementations register with :func:`register_method`,
the decorator a third-party plugin uses too; one class may serve several cards that differ only in their
default arguments (e.g. ``nap`` and ``nap-ig``). Both halves are the generic :mod:`mibench.registry`
pieces: :data:`METHOD_CARDS` (the cards) and :data:`METHODS` (the registered classes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mibench.errors import MibenchError, UnknownNameError, close_matches
from mibench.registry import CardCatalog, Registry
from mibench.validation import CardError, check_entry_point, read_card

Level = Literal["edge", "node", "neuron"]
AblationKind = Literal["patching", "mean", "zero", "optimal"]


class MethodCardError(CardError):
    """A method card that cannot be used; the message names the file and the field."""


class MethodArgument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: Any
    help: str


class Paper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    authors: str
    year: int
    url: str | None = None


class MethodCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    track: Literal["circuit", "causal"]
    description: str
    paper: Paper | None = None
    entry: str = Field(description="'module:attribute' of the method class, imported only when used")
    levels: list[Level] = Field(default_factory=lambda: ["edge"])
    ablations: list[AblationKind] = Field(default_factory=lambda: ["patching"])
    needs_counterfactual: bool = True
    #: Scores the position-aware graph of the task's span schema (returns a PositionalGraph).
    position_aware: bool = False
    arguments: dict[str, MethodArgument] = Field(default_factory=dict)

    _entry_form = field_validator("entry")(classmethod(lambda cls, value: check_entry_point(value)))

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9\-]*(:[a-z0-9][a-z0-9\-]*)?", value):
            raise ValueError(f"method ids are lower-case words joined by '-', got {value!r}")
        return value

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: arg.default for name, arg in self.arguments.items()}


def load_method_card(path: str | Path) -> MethodCard:
    """Read and validate a method card; errors name the file and the offending field."""
    return read_card(path, MethodCard, error=MethodCardError)


#: Built-in method cards (``methods/*/*.yaml``) and every installed plugin's, namespaced (a plugin folder's
#: ``card.yaml`` is one of its task cards, not a method card).
METHOD_CARDS: CardCatalog[MethodCard] = CardCatalog("method", "mibench.methods", "*.yaml", load_method_card,
                                                     exclude=("card.yaml",))
METHODS: Registry[type] = Registry("method", decorator="register_method", declared=METHOD_CARDS.entries)


def register_method(*names: str):
    """Class decorator registering a method implementation under one or more card ids."""
    return METHODS.register(*names)


def clear_cache() -> None:
    """Forget the cards read so far (after installing a plugin in the same process)."""
    METHOD_CARDS.clear()


def list_method_cards(track: str | None = None) -> list[MethodCard]:
    return [card for card in METHOD_CARDS.cards() if track is None or card.track == track]


def get_method_card(name: str) -> MethodCard:
    return METHOD_CARDS.get(name)


def method_class(name: str) -> type:
    """The class behind method ``name`` (imports its code; it must be registered under the card's id)."""
    return METHODS.get(get_method_card(name).id)


def resolve_arguments(card: MethodCard, overrides: dict[str, Any]) -> dict[str, Any]:
    """The card's defaults updated with ``overrides``; unknown names and wrong types are user errors."""
    resolved = card.defaults
    for name, value in overrides.items():
        if name not in card.arguments:
            known = ", ".join(sorted(card.arguments)) or "none"
            raise UnknownNameError("argument", name, f"method {card.id!r} has no argument {name!r} (arguments: {known})",
                                   close_matches(name, card.arguments))
        default = card.arguments[name].default
        resolved[name] = _coerce(card.id, name, value, default)
    return resolved


def _coerce(method: str, name: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return type(default)(value)
    except ValueError:
        raise MibenchError(f"method {method!r}: argument {name}={value!r} is not a valid "
                           f"{type(default).__name__}") from None


def parse_method_args(pairs: list[str] | None) -> dict[str, str]:
    """``["ig_steps=10", ...]`` from the command line into a dict (values typed later by the card)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MibenchError(f"--method-arg expects NAME=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out
