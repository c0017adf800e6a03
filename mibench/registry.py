"""One registry for every kind of pluggable item: tasks, methods, featurizers, feature selections, adapters.

A :class:`Registry` maps names to the classes registered under them with a decorator
(``@TASKS.register("ioi")``; each kind keeps its public decorator, ``register_task`` and friends, as a thin
wrapper). Every kind gets the same rules:

- **one owner per name**: registering another object under a taken name is an error;
- **namespaces**: built-in names are bare (``eap``), a plugin's are ``namespace:name``, and only code inside
  ``mibench`` may register a bare name, so a plugin can never shadow a built-in
  (:func:`mibench.plugins.check_registration`);
- **"did you mean"**: an unknown name fails with the closest known names and the full list;
- **lazy**: a registry knows names before their code is imported, from *declarations* -- ``name ->
  "module:Attribute"`` read from cards or from a torch-free table -- and imports the module only when the
  name is used; the imported attribute must be what registered under the name. A ``discover`` hook covers
  names nothing declares (a plugin's featurizer classes, registered by its method modules).

Cards are declarations with metadata: a :class:`CardCatalog` reads the YAML cards of a built-in package
(``mibench.tasks``, ``mibench.methods``) and of every installed plugin (the one ``mibench.plugins``
entry-point group) without importing any code, so ``mibench ls`` stays torch-free, and namespaces the ids
of plugin cards. Each registry is its own namespace of names: a featurizer called ``pca`` and a method
called ``pca`` never meet.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from mibench.errors import MibenchError, UnknownNameError, close_matches
from mibench.plugins import card_files, check_registration, plugin_sources, qualified

T = TypeVar("T")


class UnknownItemError(UnknownNameError):
    """A name no item of its kind carries: ``unknown task 'iio'; did you mean 'ioi'? (known: ...)``."""

    def __init__(self, kind: str, name: str, known: Iterable[str] = (), suggestions: Iterable[str] = ()) -> None:
        self.known = sorted(known)
        super().__init__(kind, name, f"unknown {kind} {name!r}", list(suggestions))

    def __str__(self) -> str:
        return f"{super().__str__()} (known: {', '.join(self.known) or 'none'})"

    def __reduce__(self):
        return (type(self), (self.kind, self.name, self.known, self.suggestions))


class DuplicateNameError(MibenchError, ValueError):
    """Two different objects registered under one name of one kind."""


class NotRegisteredError(MibenchError):
    """A declared entry (a card's ``entry``) whose code does not register it under the declared name."""


def unknown_item(kind: str, name: str, known: Iterable[str],
                 error: type[UnknownItemError] = UnknownItemError) -> UnknownItemError:
    """The "did you mean" error for ``name`` among ``known`` names of ``kind``."""
    known = list(known)
    return error(kind, name, known, close_matches(name, known))


def import_entry(entry: str, kind: str, name: str) -> object:
    """The attribute a ``module:Attribute`` entry names, importing its module (user errors, not tracebacks,
    for a module or attribute that does not exist)."""
    module_name, _, attribute = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise  # the module exists but one of its own imports fails: a real bug, keep the traceback
        raise MibenchError(f"{kind} {name!r}: cannot import {module_name} (entry {entry}): {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise MibenchError(f"{kind} {name!r}: {module_name} has no attribute {attribute!r} (entry {entry})") from None


def _owner(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry(Generic[T]):
    """Names of one ``kind`` -> the classes registered under them (see the module docstring).

    ``decorator`` is the public decorator's name, quoted when a declared entry forgot to use it.
    ``declared`` returns the lazily imported declarations, ``name -> "module:Attribute"`` (cached by its
    provider; it must not import code). ``discover(name)`` imports whatever may register an undeclared name.
    ``name_attribute``, if given, is set on each registered class to the name it was registered under.
    """

    def __init__(self, kind: str, *, decorator: str, declared: Callable[[], Mapping[str, str]] | None = None,
                 discover: Callable[[str], None] | None = None, name_attribute: str | None = None,
                 error: type[UnknownItemError] = UnknownItemError) -> None:
        self.kind = kind
        self.decorator = decorator
        self._declared = declared or dict
        self._discover = discover
        self._name_attribute = name_attribute
        self._error = error
        self._items: dict[str, T] = {}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._items)} registered)"

    # ------------------------------------------------------------------------------------ registering
    def register(self, *names: str) -> Callable[[T], T]:
        """Class decorator registering the class under every one of ``names``."""

        def decorate(obj: T) -> T:
            for name in names:
                self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name`` (again is fine; a different object is a :class:`DuplicateNameError`)."""
        check_registration(name, obj)
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered by {_owner(existing)}")
        self._items[name] = obj
        if self._name_attribute is not None:
            setattr(obj, self._name_attribute, name)

    def forget(self, name: str) -> None:
        """Drop a registration, as if its module had never run (a process that re-imports a changed module)."""
        self._items.pop(name, None)

    # --------------------------------------------------------------------------------------- looking up
    def names(self) -> list[str]:
        """Every name known so far: declared (not necessarily imported yet) or registered."""
        return sorted(set(self._declared()) | set(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._declared()

    def get(self, name: str) -> T:
        """The class registered as ``name``, importing its declared entry (or discovering it) first."""
        entry = self._declared().get(name)
        if entry is not None:
            declared = import_entry(entry, self.kind, name)
            if self._items.get(name) is not declared:
                raise NotRegisteredError(f"{entry} is not registered as {self.kind} {name!r}; decorate it with "
                                         f"@{self.decorator}({name!r})")
        elif name not in self._items and self._discover is not None:
            self._discover(name)
        if name not in self._items:
            raise unknown_item(self.kind, name, self.names(), self._error)
        return self._items[name]


class Card(Protocol):
    """What a :class:`CardCatalog` needs of a card: its id and the entry point of its code."""

    id: str
    entry: str

    def model_copy(self, *, update: dict) -> Card: ...


CardT = TypeVar("CardT", bound=Card)


class CardCatalog(Generic[CardT]):
    """The cards of one kind: built-in ones from the folders of ``package`` and every installed plugin's.

    A card file is any ``pattern`` match in an immediate sub-folder of the package (``tasks/ioi/card.yaml``,
    ``methods/eap/method.yaml``) except names in ``exclude``; ``load`` reads and validates one. Plugin card
    ids get the plugin's namespace. Cards are read once and cached until :meth:`clear`.
    """

    def __init__(self, kind: str, package: str, pattern: str, load: Callable[[Path], CardT], *,
                 exclude: Iterable[str] = (), error: type[UnknownItemError] = UnknownItemError) -> None:
        self.kind = kind
        self.package = package
        self.pattern = pattern
        self._load = load
        self._exclude = frozenset(exclude)
        self._error = error
        self._cards: dict[str, tuple[CardT, Path]] | None = None

    def __repr__(self) -> str:
        return f"CardCatalog({self.kind!r}, {self.package!r})"

    def _read(self) -> dict[str, tuple[CardT, Path]]:
        cards: dict[str, tuple[CardT, Path]] = {}
        sources = [(None, self.package)] + [(p.namespace, p.package) for p in plugin_sources()]
        for namespace, package in sources:
            for path in card_files(package, self.pattern):
                if path.name in self._exclude:
                    continue
                card = self._load(path)
                card = card.model_copy(update={"id": qualified(namespace, card.id)})
                if card.id in cards:
                    raise MibenchError(f"two {self.kind} cards declare id {card.id!r}: {cards[card.id][1]} and {path}")
                cards[card.id] = (card, path)
        return cards

    def _all(self) -> dict[str, tuple[CardT, Path]]:
        if self._cards is None:
            self._cards = self._read()
        return self._cards

    def clear(self) -> None:
        """Forget the cards read so far (after installing a plugin in the same process)."""
        self._cards = None

    def cards(self) -> list[CardT]:
        """Every card, built-ins first, in folder order."""
        return [card for card, _ in self._all().values()]

    def get(self, name: str) -> CardT:
        cards = self._all()
        if name not in cards:
            raise unknown_item(self.kind, name, cards, self._error)
        return cards[name][0]

    def path(self, name: str) -> Path:
        """The file the card ``name`` was read from."""
        self.get(name)
        return self._all()[name][1]

    def entries(self) -> dict[str, str]:
        """``id -> entry`` of every card: the declarations of the matching :class:`Registry`."""
        return {card_id: card.entry for card_id, (card, _) in self._all().items()}
