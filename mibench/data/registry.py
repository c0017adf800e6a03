"""The task registry: built-in task folders are found by their cards, without importing their code.

``list_cards()`` reads every ``card.yaml`` under the installed ``mibench.tasks`` package (so ``mibench ls
tasks`` stays fast and torch-free); ``load_task(name)`` imports the card's ``entry`` only when the task is
used. Tasks register their class with :func:`register_task`, the same decorator a plugin uses.
"""

from __future__ import annotations

import difflib
import importlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from mibench.data.card import TaskCard, load_card
from mibench.errors import MibenchError
from mibench.plugins import card_files, check_registration, plugin_sources, qualified

if TYPE_CHECKING:
    from mibench.data.task import Task


class UnknownTaskError(MibenchError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


_REGISTERED: dict[str, type] = {}


def register_task(name: str):
    """Class decorator registering a task class under ``name`` (its card's id)."""

    def decorate(cls: type) -> type:
        check_registration(name, cls)
        existing = _REGISTERED.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"task {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        _REGISTERED[name] = cls
        cls.task_id = name
        return cls

    return decorate


@lru_cache(maxsize=1)
def _builtin_cards() -> dict[str, tuple[TaskCard, Path]]:
    """Built-in task cards (``tasks/*/card.yaml``) and every installed plugin's, namespaced."""
    cards: dict[str, tuple[TaskCard, Path]] = {}
    sources = [(None, "mibench.tasks")] + [(p.namespace, p.package) for p in plugin_sources()]
    for namespace, package in sources:
        for path in card_files(package, "card.yaml"):
            card = load_card(path)
            card = card.model_copy(update={"id": qualified(namespace, card.id)})
            if card.id in cards:
                raise MibenchError(f"two task folders declare id {card.id!r}: {cards[card.id][1]} and {path}")
            cards[card.id] = (card, path)
    return cards


def clear_cache() -> None:
    """Forget the cards read so far (after installing a plugin in the same process)."""
    _builtin_cards.cache_clear()


def list_cards() -> list[TaskCard]:
    return [card for card, _ in _builtin_cards().values()]


def get_card(name: str) -> TaskCard:
    cards = _builtin_cards()
    if name not in cards:
        close = difflib.get_close_matches(name, list(cards), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownTaskError(f"unknown task {name!r}{hint} (known tasks: {', '.join(sorted(cards)) or 'none'})")
    return cards[name][0]


def load_task(name: str) -> "Task":
    """Instantiate a registered task by name (imports its code)."""
    card = get_card(name)
    module_name, attribute = card.entry.split(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attribute)
    if _REGISTERED.get(card.id) is not cls:
        raise MibenchError(f"{card.entry} is not registered as task {card.id!r}; decorate it with @register_task")
    return cls(card)
