"""Check a saved intervention's description (its JSON card) against the registered classes' declared
arguments and the model's dimensions, before anything is built (:mod:`mibench.causal.arguments` says why).

It sits above the featurizers because it looks classes up by name; the schemas it checks against live below
them, in :mod:`mibench.causal.arguments`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mibench.causal.arguments import SiteDimensions
from mibench.causal.featurizer import featurizer_class, selection_class
from mibench.errors import MibenchError


@dataclass
class CheckedDescription:
    """The outcome of :func:`check_description`: problems, and (when there are none) what the file must hold."""

    problems: list[tuple[str, str]]
    tensor_shapes: dict[str, tuple[int, ...]]
    n_features: int | None = None



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
