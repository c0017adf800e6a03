"""The task registry: built-in task folders are found by their cards, without importing their code.

``list_cards()`` reads every ``card.yaml`` under the installed ``mibench.tasks`` package and every plugin's
(so ``mibench ls tasks`` stays fast and torch-free); ``load_task(name)`` imports the card's ``entry`` only
when the task is used. Tasks register their class with :func:`register_task`, the same decorator a plugin
uses. Both halves are the generic :mod:`mibench.registry` pieces: :data:`TASK_CARDS` and :data:`TASKS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mibench.data.card import TaskCard, load_card
from mibench.registry import CardCatalog, Registry, UnknownItemError

if TYPE_CHECKING:
    from mibench.data.task import Task


class UnknownTaskError(UnknownItemError):
    """A task name no card declares (with "did you mean" suggestions)."""


TASK_CARDS: CardCatalog[TaskCard] = CardCatalog("task", "mibench.tasks", "card.yaml", load_card,
                                                 error=UnknownTaskError)
TASKS: Registry[type] = Registry("task", decorator="register_task", declared=TASK_CARDS.entries,
                                 name_attribute="task_id", error=UnknownTaskError)


def register_task(name: str):
    """Class decorator registering a task class under ``name`` (its card's id)."""
    return TASKS.register(name)


def clear_cache() -> None:
    """Forget the cards read so far (after installing a plugin in the same process)."""
    TASK_CARDS.clear()


def list_cards() -> list[TaskCard]:
    return TASK_CARDS.cards()


def get_card(name: str) -> TaskCard:
    return TASK_CARDS.get(name)


def load_task(name: str) -> "Task":
    """Instantiate a registered task by name (imports its code)."""
    card = get_card(name)
    return TASKS.get(card.id)(card)
