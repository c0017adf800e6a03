"""Saved interventions: one safetensors file of tensors plus one JSON card per site, never pickled code.

Layout of a featurizer folder (what ``mibench evaluate --track causal`` writes beside its record, and what
a submission provides)::

    L1_correct_symbol.json          card: registered featurizer/selection classes and their arguments,
    L1_correct_symbol.safetensors   site (layer, role), model, task, variable, method
    ...

Loading rebuilds the modules from *registered* class names (built-in or installed plugin) and loads the
tensors with ``strict=True``. Fixed weights that exist elsewhere (an embedded or SAELens-folder SAE) are
referenced by the card (``featurizer.config.source``) instead of being copied into every site's file; a file that names an unknown class, misses a field or has tensors of the
wrong shape fails with an error naming the file and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mibench.causal.featurizer import Interchange
from mibench.errors import FileFieldError
from mibench.io_utils import atomic_write_text

CARD_FORMAT = "mibench-featurizer"
CARD_VERSION = 1


class FeaturizerFileError(FileFieldError):
    """A saved featurizer that cannot be used; ``path`` is the file, ``field`` the place in it (or None)."""

    kind = "featurizer file"


class FeaturizerCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    version: int
    layer: int = Field(ge=0, strict=True)
    role: str
    model: str | None = None
    task: str | None = None
    variable: str | None = None
    method: str | None = None
    arguments: dict[str, Any] = {}
    featurizer: dict[str, Any]
    selection: dict[str, Any]
    n_features: int
    n_selected: int


def site_stem(layer: int, role: str) -> str:
    return f"L{layer}_{role}"


def save_interchange(interchange: Interchange, folder: str | Path, *, layer: int, role: str,
                     **context: Any) -> Path:
    """Write ``L{layer}_{role}.safetensors`` and ``.json`` into ``folder``; returns the JSON path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = site_stem(layer, role)
    card, tensors = interchange_payload(interchange, layer=layer, role=role, **context)
    tmp = folder / f".{stem}.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / f"{stem}.safetensors")
    path = folder / f"{stem}.json"
    atomic_write_text(path, card)
    return path


def interchange_payload(interchange: Interchange, *, layer: int, role: str,
                        **context: Any) -> tuple[str, dict[str, Any]]:
    """What a saved intervention consists of: the JSON card's text and the tensors its file stores."""
    card = {"format": CARD_FORMAT, "version": CARD_VERSION, "layer": layer, "role": role, **context,
            **interchange.describe()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in interchange.state_dict().items()
               if not _by_reference(interchange, k)}
    return json.dumps(card, indent=2, default=_jsonable) + "\n", tensors


def load_interchange(card_path: str | Path) -> tuple[FeaturizerCard, Interchange]:
    """Rebuild a saved intervention from its JSON card and the safetensors file beside it.

    The card's class arguments are checked against the classes' declared schemas before anything is built
    (:func:`mibench.causal.description_check.check_description`); files from outside go through
    :mod:`mibench.submissions.file_rules` first, which also checks them against the model and the header.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card_path = Path(card_path)
    card = read_card(card_path)
    tensors_path = card_path.with_suffix(".safetensors")
    _check_arguments(card, card_path)
    if not tensors_path.exists():
        raise FeaturizerFileError(tensors_path, None, "missing (every card needs its tensors beside it)")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as exc:
        raise FeaturizerFileError(tensors_path, None, f"not a safetensors file: {exc}") from None
    return card, rebuild_interchange(card, tensors, tensors_path)


def _check_arguments(card: FeaturizerCard, card_path: Path) -> None:
    from mibench.causal.arguments import SiteDimensions
    from mibench.causal.description_check import check_description

    checked = check_description(card.model_dump(), SiteDimensions())
    if checked.problems:
        field, message = checked.problems[0]
        raise FeaturizerFileError(card_path, field, message)


def rebuild_interchange(card: FeaturizerCard, tensors: dict[str, Any], tensors_path: Path) -> Interchange:
    """Build the card's registered classes and load ``tensors`` into them (strictly: every key, every shape)."""
    interchange = Interchange.from_description(card.model_dump())
    if interchange.featurizer.weights_by_reference:  # the featurizer loaded its fixed weights itself
        own = {k: v for k, v in interchange.state_dict().items() if _by_reference(interchange, k)}
        stray = sorted(k for k in tensors if _by_reference(interchange, k))
        if stray:
            raise FeaturizerFileError(tensors_path, stray[0], "a featurizer tensor although the card's featurizer "
                                      "names where its weights come from")
        tensors = {**tensors, **own}
    try:
        interchange.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise FeaturizerFileError(tensors_path, None, f"tensors do not fit the card's featurizer: {exc}") from None
    interchange.eval()
    return interchange


def _by_reference(interchange: Interchange, key: str) -> bool:
    """A featurizer tensor that the card references rather than the safetensors file stores."""
    return interchange.featurizer.weights_by_reference and key.startswith("featurizer.")


def read_card(path: Path) -> FeaturizerCard:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeaturizerFileError(path, None, f"cannot read featurizer card: {exc.strerror or exc}") from None
    return parse_card(path, data)


def parse_card(path: Path, data: bytes) -> FeaturizerCard:
    """Validate the bytes of a featurizer card; every error names the field."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FeaturizerFileError(path, None, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FeaturizerFileError(path, None, f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise FeaturizerFileError(path, None, "expected a JSON object (format, version, layer, role, ...)")
    try:
        card = FeaturizerCard.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise FeaturizerFileError(path, field, "unknown field" if err["type"] == "extra_forbidden"
                                  else err["msg"]) from None
    if card.format != CARD_FORMAT:
        raise FeaturizerFileError(path, "format", f"expected {CARD_FORMAT!r}, got {card.format!r}")
    if card.version != CARD_VERSION:
        raise FeaturizerFileError(path, "version", f"this mibench reads version {CARD_VERSION}, got {card.version}")
    for part in ("featurizer", "selection"):
        spec = getattr(card, part)
        if not isinstance(spec.get("class"), str) or not isinstance(spec.get("config"), dict):
            raise FeaturizerFileError(path, part, "needs 'class' (a registered name) and 'config'")
    return card


def find_cards(folder: str | Path) -> dict[tuple[int, str], Path]:
    """Every ``L{layer}_{role}.json`` card in ``folder`` by site."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeaturizerFileError(folder, None, "not a folder of saved featurizers")
    found: dict[tuple[int, str], Path] = {}
    for path in sorted(folder.glob("L*_*.json")):
        match = re.fullmatch(r"L(\d+)_(.+)\.json", path.name)
        if match:
            found[(int(match.group(1)), match.group(2))] = path
    return found


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
