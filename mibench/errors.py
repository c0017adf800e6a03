"""User-facing exceptions.

These are the errors a user is expected to read and act on (a malformed file, a misspelt name), so each
one carries the pieces needed to say *where* the problem is, not just *what* it is. They subclass the
matching built-in (``ValueError``, ``KeyError``) so generic ``except`` clauses keep working.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence


class MibenchError(Exception):
    """Base class of every exception mibench raises on purpose."""


class FileFieldError(MibenchError, ValueError):
    """A file from outside that cannot be used: ``path`` is the file, ``field`` the place in it, or ``None``
    when the file as a whole is unusable (missing, not JSON, not a tensor file). Subclasses name the kind of
    file in :attr:`kind`."""

    kind = "file"

    def __init__(self, path: str | os.PathLike[str], field: str | None, message: str) -> None:
        self.path = os.fspath(path)
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.kind} {self.path!r}"
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.message}"

    def __reduce__(self):  # keep the three-argument constructor picklable (multiprocessing, pytest-xdist)
        return (type(self), (self.path, self.field, self.message))


class CircuitFileError(FileFieldError):
    """A circuit / score file could not be used (``field``: ``cfg.n_heads``, ``edges["m10->m2"].score``,
    ``edges_scores``, ...)."""

    kind = "circuit file"


class UnknownNameError(MibenchError, KeyError):
    """A node / edge / destination name that does not exist, with "did you mean" suggestions."""

    def __init__(self, kind: str, name: str, message: str = "", suggestions: Sequence[str] = ()) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = list(suggestions)
        self.message = message or f"unknown {kind} name {name!r}"
        super().__init__(str(self))

    def __str__(self) -> str:
        # KeyError's own __str__ would repr() the message, wrapping it in quotes; users read this text.
        text = self.message
        if self.suggestions:
            text += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        return text

    def __reduce__(self):
        return (type(self), (self.kind, self.name, self.message, self.suggestions))


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The few candidates most similar to ``name`` (``difflib``), best first; empty if none is close."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
