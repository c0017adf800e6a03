"""Declared constructor arguments of featurizer and selection classes, checked before anything is built.

A saved intervention names registered classes and their constructor arguments (``featurizer.config``,
``selection.config``). Building a module from a file from outside is only safe once those arguments are
known to be well-typed, in range for the model they are used with, and no bigger than the tensors the file
actually ships: a 1 KB card asking for a 20000-wide subspace must be refused from the card, not after
allocating gigabytes. So every registered class declares

* ``Arguments``: a pydantic model of its constructor arguments (strict types, ranges, no unknown keys);
* ``stored_tensor_shapes(args)``: the persistent tensors its constructor creates and a saved file must hold
  (name -> shape), so the file's header can be compared with the card before any tensor exists;
* ``feature_count(args)`` (featurizers): the number of features, which the selection must match;
* ``check_arguments(args, dims)``: extra checks against the model's dimensions (width, layers, vocabulary)
  and against files the arguments point to (an embedded SAE's own settings).

:func:`mibench.causal.description_check.check_description` runs all of it against the registered classes and
returns ``(field, message)`` problems, the field spelt as in the JSON card (``featurizer.config.n_features``).
This module is below the featurizers (they import their schemas from it) and imports nothing of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Largest hidden size a card may name (a safety bound when the model's width is not known beforehand).
MAX_D_MODEL = 1 << 16
#: An SAE may have at most this many latents per hidden dimension (SAEBench's widest are 64x-128x).
MAX_SAE_EXPANSION = 256


class StrictArguments(BaseModel):
    """Base of declared argument schemas: no unknown keys, no silent type coercion ("abc" is not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FeaturizerArguments(StrictArguments):
    d_model: int = Field(ge=1, le=MAX_D_MODEL)


class SelectionArguments(StrictArguments):
    n_features: int = Field(ge=1, le=MAX_SAE_EXPANSION * MAX_D_MODEL)


@dataclass(frozen=True)
class SiteDimensions:
    """What is known of the model before it is loaded (None: unknown, checked after loading instead)."""

    d_model: int | None = None
    n_layers: int | None = None
    vocab_size: int | None = None


Shapes = Mapping[str, tuple[int, ...]]


def width_problems(d_model: int, dims: SiteDimensions) -> list[tuple[str, str]]:
    """The one width rule every featurizer shares: its ``d_model`` is the model's hidden size."""
    if dims.d_model is not None and d_model != dims.d_model:
        return [("d_model", f"{d_model}, but the model's hidden size is {dims.d_model}")]
    return []


def at_most_width(field: str, value: int, d_model: int) -> list[tuple[str, str]]:
    """A basis of ``value`` directions in a ``d_model``-dimensional space needs ``1 <= value <= d_model``."""
    if value > d_model:
        return [(field, f"{value} features in a {d_model}-dimensional space: at most {d_model}")]
    return []


class FeatureBasisSchema:
    """Mixin for a featurizer with ``n_features`` directions in the ``d_model``-space (subspace, PCA, a plugin's
    basis): the width must match the model's and there are at most ``d_model`` features."""

    @classmethod
    def feature_count(cls, args: Any) -> int:
        return args.n_features

    @classmethod
    def check_arguments(cls, args: Any, dims: SiteDimensions) -> list[tuple[str, str]]:
        return width_problems(args.d_model, dims) + at_most_width("n_features", cls.feature_count(args), args.d_model)
