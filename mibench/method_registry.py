"""The method registry: built-in method folders are found by their ``method.yaml`` cards.

Like tasks, every built-in method lives in its own folder under ``methods/`` (installed as
``mibench.methods.<folder>``) with a card naming its entry point; ``list_method_cards()`` reads the cards
without importing any code, so ``mibench ls methods`` stays torch-free. ``load_method(name, **args)``
imports the entry only when the method is used. Implementations register with :func:`register_method`,
the decorator a third-party plugin uses too; one class may serve several cards that differ only in their
default arguments (e.g. ``nap`` and ``nap-ig``).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mibench.errors import MibenchError, UnknownNameError, close_matches
from mibench.plugins import card_files, check_registration, plugin_sources, qualified
from mibench.validation import check_entry_point, describe_validation_error

Level = Literal["edge", "node", "neuron"]
AblationKind = Literal["patching", "mean", "zero", "optimal"]


class MethodCardError(MibenchError, ValueError):
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
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MethodCardError(f"{path}: cannot read method card: {exc}") from exc
    try:
        return MethodCard.model_validate(raw)
    except ValidationError as exc:
        raise MethodCardError(f"{path}: {describe_validation_error(exc)}") from exc


_REGISTERED: dict[str, type] = {}


def register_method(*names: str):
    """Class decorator registering a method implementation under one or more card ids."""

    def decorate(cls: type) -> type:
        for name in names:
            check_registration(name, cls)
            existing = _REGISTERED.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(f"method {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
            _REGISTERED[name] = cls
        return cls

    return decorate


@lru_cache(maxsize=1)
def _all_cards() -> dict[str, tuple[MethodCard, Path]]:
    """Built-in cards (``methods/*/*.yaml``) and every installed plugin's, namespaced."""
    cards: dict[str, tuple[MethodCard, Path]] = {}
    sources = [(None, "mibench.methods")] + [(p.namespace, p.package) for p in plugin_sources()]
    for namespace, package in sources:
        for card_file in card_files(package, "*.yaml"):
            if namespace is not None and card_file.name == "card.yaml":
                continue  # a plugin's task card
            card = load_method_card(card_file)
            card = card.model_copy(update={"id": qualified(namespace, card.id)})
            if card.id in cards:
                raise MibenchError(f"two method cards declare id {card.id!r}: {cards[card.id][1]} and {card_file}")
            cards[card.id] = (card, card_file)
    return cards


def clear_cache() -> None:
    """Forget the cards read so far (after installing a plugin in the same process)."""
    _all_cards.cache_clear()


def list_method_cards(track: str | None = None) -> list[MethodCard]:
    return [card for card, _ in _all_cards().values() if track is None or card.track == track]


def get_method_card(name: str) -> MethodCard:
    cards = _all_cards()
    if name not in cards:
        known = ", ".join(sorted(cards))
        raise UnknownNameError("method", name, f"unknown method {name!r} (known: {known})",
                               close_matches(name, cards))
    return cards[name][0]


def method_class(name: str) -> type:
    card = get_method_card(name)
    module_name, attribute = card.entry.split(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attribute)
    if _REGISTERED.get(card.id) is not cls:
        raise MibenchError(f"{card.entry} is not registered as method {card.id!r}; decorate it with "
                           f"@register_method({card.id!r})")
    return cls


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
