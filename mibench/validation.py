"""Shared pieces of validating YAML/JSON documents (cards, records) with pydantic."""

from __future__ import annotations

import re

from pydantic import ValidationError


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
