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

:func:`check_description` runs all of it and returns ``(field, message)`` problems, the field spelt as in
the JSON card (``featurizer.config.n_features``). Torch-free apart from the registry look-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


@dataclass
class CheckedDescription:
    """The outcome of :func:`check_description`: problems, and (when there are none) what the file must hold."""

    problems: list[tuple[str, str]]
    tensor_shapes: dict[str, tuple[int, ...]]
    n_features: int | None = None


Shapes = Mapping[str, tuple[int, ...]]


def _validate(schema: type[BaseModel], config: Any, where: str,
              problems: list[tuple[str, str]]) -> BaseModel | None:
    if not isinstance(config, dict):
        problems.append((where, "must be a mapping of constructor arguments"))
        return None
    try:
        return schema.model_validate(config)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = "unknown argument" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] not in ("extra_forbidden", "missing") and "input" in err:
                message += f" (got {_short(err['input'])})"
            problems.append((f"{where}.{field}" if field else where, message))
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_description(description: Mapping[str, Any], dims: SiteDimensions) -> CheckedDescription:
    """Check a saved intervention's ``featurizer`` / ``selection`` parts against the classes' declared schemas
    and the model's dimensions, without building anything. Unknown class names are problems too."""
    from mibench.causal.featurizer import featurizer_class, selection_class
    from mibench.errors import MibenchError

    problems: list[tuple[str, str]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    n_features = None
    parts = (("featurizer", featurizer_class), ("selection", selection_class))
    checked: dict[str, tuple[type, BaseModel]] = {}
    for part, lookup in parts:
        spec = description.get(part)
        name = spec.get("class") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            problems.append((f"{part}.class", "needs the name of a registered class"))
            continue
        try:
            cls = lookup(name)
        except (MibenchError, KeyError) as exc:
            problems.append((f"{part}.class", str(exc).strip("'\"")))
            continue
        schema = getattr(cls, "Arguments", None)
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            problems.append((f"{part}.class", f"{name!r} declares no argument schema ('Arguments'), so a saved file "
                             "cannot be checked before it is built"))
            continue
        args = _validate(schema, spec.get("config"), f"{part}.config", problems)
        if args is not None:
            for field, message in cls.check_arguments(args, dims):
                problems.append((f"{part}.config.{field}", message))
            checked[part] = (cls, args)
    if "featurizer" in checked:
        cls, args = checked["featurizer"]
        n_features = cls.feature_count(args)
        shapes.update({f"featurizer.{k}": tuple(v) for k, v in cls.stored_tensor_shapes(args).items()})
    if "selection" in checked:
        cls, args = checked["selection"]
        if n_features is not None and args.n_features != n_features:
            problems.append(("selection.config.n_features", f"{args.n_features}, but the featurizer has "
                             f"{n_features} features"))
        shapes.update({f"selection.{k}": tuple(v) for k, v in cls.stored_tensor_shapes(args).items()})
    if n_features is not None and description.get("n_features") not in (None, n_features):
        problems.append(("n_features", f"{description.get('n_features')!r}, but the featurizer's arguments give "
                         f"{n_features}"))
    selected = description.get("n_selected")
    if n_features is not None and isinstance(selected, int) and not 0 <= selected <= n_features:
        problems.append(("n_selected", f"{selected} is outside 0..{n_features}"))
    return CheckedDescription(problems, shapes if not problems else {}, n_features)


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
