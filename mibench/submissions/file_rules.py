"""The file rules every path that reads files from outside applies first, before any model is loaded.

``mibench submission check``, ``mibench submission evaluate`` and ``mibench score`` (both tracks) all call
this module, so a file refused by one is refused by all three, with the same ``file: field: message``:

* no symbolic links, anywhere (a link can point a checker at any file on the machine);
* no stray or unknown files: a featurizer folder holds ``L<layer>_<role>.json`` cards and their
  ``.safetensors`` tensors only (no ``.py``, no pickles, no sub-folders); a score file has a known suffix;
* what a featurizer card says must equal where it sits: its layer and role equal the file name's, its
  model, task and variable equal the ones the folder (or the command line) stands for;
* a card's class arguments are checked against the registered class's declared schema and the model's
  dimensions (:mod:`mibench.causal.arguments`) before any constructor runs;
* the safetensors header is read by hand first: every tensor must be one the card's classes declare, with
  the declared shape and an allowed dtype (float32), so nothing bigger than the site needs is ever
  allocated; then the values must be finite;
* an SAE named by reference must be one of the embedded SAEs; other paths are refused with the same words
  whether or not they exist.

Torch is imported only to read tensor values, after their header has passed.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mibench.causal.arguments import SiteDimensions
from mibench.errors import MibenchError
from mibench.submissions.card import Problem

#: safetensors dtypes a saved featurizer may hold (what mibench itself writes: float32).
ALLOWED_TENSOR_DTYPES: tuple[str, ...] = ("F32",)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
#: A featurizer card is a few hundred bytes; anything much larger is refused unread.
MAX_CARD_BYTES = 1 << 20
MAX_HEADER_BYTES = 1 << 24
CIRCUIT_SUFFIXES: tuple[str, ...] = (".json", ".pt", ".pth", ".safetensors")
SITE_FILE = re.compile(r"L(\d+)_([A-Za-z0-9_\-]+)\.(json|safetensors)")


class SubmissionFilesError(MibenchError):
    """Files from outside broke the file rules; ``problems`` lists every one (``file: field: message``).

    One problem is the message itself (one line after ``mibench: error:``); several are listed one a line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"{self.problems[0]} (nothing was scored)"
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            message = f"{len(self.problems)} problems with the given files, nothing was scored:\n{lines}"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class SiteExpectations:
    """Where a featurizer folder sits: what its cards must say, and the model it is for."""

    model: str
    task: str
    variable: str
    roles: tuple[str, ...]
    dims: SiteDimensions
    #: other names of the same model a card may carry (a hub id for MIB's short name, and back)
    model_aliases: tuple[str, ...] = ()


# ============================================================================================ generic
def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


def link_problems(root: Path) -> list[Problem]:
    """Every symbolic link, and every entry that is neither a folder nor a regular file (a named pipe would
    block the reader forever, a device is no file from anyone), at or below ``root``; nothing is followed."""
    problems = []
    for path in [root, *_walk(root)]:
        info = _lstat(path)
        if info is None:
            continue
        if stat.S_ISLNK(info.st_mode):
            problems.append(Problem(str(path), None, "symbolic links are not accepted"))
        elif not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            problems.append(Problem(str(path), None, "not a regular file (a pipe, socket or device)"))
    return problems


def _walk(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        found += [Path(folder) / name for name in sorted(dirs + files)]
    return found


def regular_file_problems(path: Path, suffixes: Iterable[str]) -> list[Problem]:
    """A score / circuit file given on the command line or found in a cell: a plain file, known suffix."""
    info = _lstat(path)
    if info is None:
        return [Problem(str(path), None, "no such file")]
    if stat.S_ISLNK(info.st_mode):
        return [Problem(str(path), None, "symbolic links are not accepted")]
    if stat.S_ISDIR(info.st_mode):
        return [Problem(str(path), None, "it is a folder, not a file (with --track causal, score takes a folder "
                        "of saved featurizers)")]
    if not stat.S_ISREG(info.st_mode):
        return [Problem(str(path), None, "not a regular file")]
    allowed = tuple(suffixes)
    if path.suffix.lower() not in allowed:
        return [Problem(str(path), None, f"unexpected file type: expected one of {', '.join(allowed)}")]
    return []


def site_dimensions(model: str) -> SiteDimensions:
    """The model's width, layers and vocabulary without loading it: a zoo or MIB model by name, or a local
    Hugging Face folder's ``config.json``; unknown (None) otherwise, and then checked after loading."""
    from mibench.models.families import layout_from_config
    from mibench.submissions.models import _namespace, resolve_model

    config_file: Path | None = None
    try:
        target = resolve_model(model)
    except MibenchError:
        target = None
        if Path(model, "config.json").is_file():
            config_file = Path(model, "config.json")
    if target is not None and target.kind == "zoo":
        from mibench.zoo.catalog import model_path

        config_file = model_path(model) / "config.json"
    vocab = None
    layout = target.layout if target is not None else None
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            layout = layout or layout_from_config(_namespace(config))
            text = config.get("text_config") or config
            vocab = text.get("vocab_size") if isinstance(text.get("vocab_size"), int) else None
        except (OSError, ValueError, KeyError, AttributeError, MibenchError):
            pass
    if layout is None:
        return SiteDimensions(vocab_size=vocab)
    return SiteDimensions(d_model=layout.d_model, n_layers=layout.n_layers, vocab_size=vocab)


# ======================================================================================== featurizers
def featurizer_folder_problems(folder: Path, expect: SiteExpectations) -> tuple[dict[tuple[int, str], Path],
                                                                               list[Problem]]:
    """Apply the file rules to one folder of saved featurizers; returns site -> card path, and problems."""
    problems = link_problems(folder)
    if problems:
        return {}, problems
    if not folder.is_dir():
        what = "not a folder of saved featurizers" if folder.exists() else "no such folder"
        return {}, [Problem(str(folder), None, what)]
    cards: dict[tuple[int, str], Path] = {}
    tensors: set[tuple[int, str]] = set()
    for path in sorted(folder.iterdir()):
        match = SITE_FILE.fullmatch(path.name)
        if path.is_dir():
            problems.append(Problem(str(path), None, "unexpected folder: a featurizer folder holds "
                                    "L<layer>_<role>.json cards and their .safetensors only"))
        elif match is None:
            problems.append(Problem(str(path), None, "unexpected file: a featurizer folder holds "
                                    "L<layer>_<role>.json cards and their .safetensors tensors only "
                                    "(no code, no pickles, nothing else)"))
        elif match.group(3) == "json":
            cards[(int(match.group(1)), match.group(2))] = path
        else:
            tensors.add((int(match.group(1)), match.group(2)))
    for site in sorted(tensors - set(cards)):
        problems.append(Problem(str(folder / f"L{site[0]}_{site[1]}.safetensors"), None,
                                "tensors without their card (L<layer>_<role>.json)"))
    if not cards and not problems:
        problems.append(Problem(str(folder), None, "no featurizer cards (L<layer>_<role>.json + .safetensors)"))
    for (layer, role), path in sorted(cards.items()):
        problems += site_problems(path, layer, role, expect)
    return cards, problems


def site_problems(path: Path, layer: int, role: str, expect: SiteExpectations) -> list[Problem]:
    """Every rule for one ``L<layer>_<role>.json`` card and the ``.safetensors`` beside it."""
    from mibench.causal.description_check import check_description
    from mibench.causal.storage import FeaturizerFileError, parse_card

    where = str(path)
    problems: list[Problem] = []
    dims = expect.dims
    if dims.n_layers is not None and not 0 <= layer < dims.n_layers:
        problems.append(Problem(where, "layer", f"{layer} is outside the model's layers "
                                f"0..{dims.n_layers - 1}"))
    if role not in expect.roles:
        problems.append(Problem(where, "role", f"task {expect.task!r} has no token role {role!r} (from the file "
                                f"name; roles: {', '.join(expect.roles)})"))
    if (path.stat().st_size if path.is_file() else 0) > MAX_CARD_BYTES:
        return problems + [Problem(where, None, f"a featurizer card is at most {MAX_CARD_BYTES} bytes")]
    try:
        card = parse_card(path, path.read_bytes())
    except FeaturizerFileError as exc:
        return problems + [Problem(where, exc.field, exc.message)]
    if (card.layer, card.role) != (layer, role):
        field = "layer" if card.layer != layer else "role"
        problems.append(Problem(where, field, f"the card says L{card.layer}/{card.role!r} but the file name says "
                                f"L{layer}/{role!r}"))
    accepted = {"model": (expect.model, *expect.model_aliases), "task": (expect.task,),
                "variable": (expect.variable,)}
    for field, expected in (("model", expect.model), ("task", expect.task), ("variable", expect.variable)):
        value = getattr(card, field)
        if value is not None and value not in accepted[field]:
            problems.append(Problem(where, field, f"{value!r}, but the file sits in the folder for {field} "
                                    f"{expected!r}"))
    checked = check_description(card.model_dump(), dims)
    problems += [Problem(where, field, message) for field, message in checked.problems]
    if problems:
        return problems
    return tensor_problems(path.with_suffix(".safetensors"), checked.tensor_shapes)


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, read without the library (and without reading the data)."""
    from mibench.causal.storage import FeaturizerFileError

    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise FeaturizerFileError(path, None, "not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise FeaturizerFileError(path, None, "not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise FeaturizerFileError(path, None, "not a safetensors file (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise FeaturizerFileError(path, None, "not a safetensors file (the header is not a mapping)")
    data_size = size - 8 - length
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], [int(n) for n in entry["shape"]], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FeaturizerFileError(path, name, "malformed tensor entry in the header") from None
        count = 1
        for n in shape:
            count *= n
        if dtype in _DTYPE_BYTES and (end - start != count * _DTYPE_BYTES[dtype] or not 0 <= start <= end):
            raise FeaturizerFileError(path, name, "the header's offsets do not match its shape")
        ends.append(end)
    if max(ends, default=0) != data_size:
        raise FeaturizerFileError(path, None, "the header does not describe the file's data (truncated or padded)")
    return header


def tensor_problems(path: Path, declared: dict[str, tuple[int, ...]]) -> list[Problem]:
    """The tensors must be exactly the declared ones (names, shapes), float32 and finite."""
    from mibench.causal.storage import FeaturizerFileError

    where = str(path)
    info = _lstat(path)
    if info is None:
        return [Problem(where, None, "missing (every card needs its tensors beside it)")]
    try:
        header = read_safetensors_header(path)
    except FeaturizerFileError as exc:
        return [Problem(where, exc.field, exc.message)]
    problems = []
    stored = {name: entry for name, entry in header.items() if name != "__metadata__"}
    for name in sorted(set(stored) - set(declared)):
        problems.append(Problem(where, name, "a tensor the card's classes do not declare"))
    for name in sorted(set(declared) - set(stored)):
        problems.append(Problem(where, name, f"missing: the card's classes need it, shape {list(declared[name])}"))
    for name in sorted(set(declared) & set(stored)):
        entry = stored[name]
        if tuple(entry["shape"]) != declared[name]:
            problems.append(Problem(where, name, f"shape {list(entry['shape'])}, but the card's arguments give "
                                    f"{list(declared[name])}"))
        elif entry["dtype"] not in ALLOWED_TENSOR_DTYPES:
            problems.append(Problem(where, name, f"dtype {entry['dtype']}; saved featurizers hold "
                                    f"{' or '.join(ALLOWED_TENSOR_DTYPES)} tensors (convert before saving)"))
    if problems or not stored:
        return problems
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        values = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        return [Problem(where, None, f"not a safetensors file: {exc}")]
    for name, tensor in sorted(values.items()):
        if not bool(tensor.isfinite().all()):
            problems.append(Problem(where, name, "holds NaN or infinite values"))
    return problems


# ============================================================================================ `score`
def check_score_path(track: str, path: str | os.PathLike[str], *, task: str, model: str,
                     variable: str | None = None) -> None:
    """The file rules for ``mibench score``, before the model is loaded; raises :class:`SubmissionFilesError`.

    Circuit track: ``path`` is one plain score file with a known suffix that loads for the model's graph
    (when its size is known without loading it). Causal track: ``path`` is a folder of saved featurizers.
    """
    from mibench.data.registry import get_card

    path = Path(path)
    if track == "causal":
        card = get_card(task)
        if variable is None or card.causal is None or variable not in card.causal.variables:
            return  # the run reports an unknown or missing variable with its own words
        expect = SiteExpectations(model=model, task=card.id, variable=variable, roles=tuple(card.schema_roles),
                                  dims=site_dimensions(model), model_aliases=model_aliases(model))
        _, problems = featurizer_folder_problems(path, expect)
    else:
        problems = regular_file_problems(path, CIRCUIT_SUFFIXES)
        if not problems:
            problems = circuit_file_problems(path, _known_layout(model))
    if problems:
        raise SubmissionFilesError(problems)


def model_aliases(model: str) -> tuple[str, ...]:
    """The names a saved card may give ``model``: its hub id when it is one of MIB's short names, or the short
    name when it is that hub id (``evaluate`` records the name it was given)."""
    from mibench.submissions.models import MIB_MODEL_ALIASES

    return tuple({*(hub for short, hub in MIB_MODEL_ALIASES.items() if short == model),
                  *(short for short, hub in MIB_MODEL_ALIASES.items() if hub == model)} - {model})


def _known_layout(model: str):
    from mibench.submissions.models import resolve_model

    try:
        return resolve_model(model).layout
    except MibenchError:
        return None


def circuit_file_problems(path: Path, layout) -> list[Problem]:
    """Load a score / circuit file for ``layout`` (when known): format, graph size, safe unpickling."""
    if layout is None or _position_aware(path):
        return []  # position-aware files are read (and checked) by the position-aware scorer
    problem, _graph = load_circuit_file(path, layout)
    return [problem] if problem is not None else []


def _position_aware(path: Path) -> bool:
    from mibench.graph.positional import FORMAT

    if path.suffix.lower() != ".json":
        return False
    try:
        cfg = json.loads(path.read_bytes()).get("cfg")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def load_circuit_file(path: Path, layout):
    """``(problem or None, graph or None)``: :func:`mibench.graph.io.load_circuit` with its errors as a problem."""
    from mibench.errors import CircuitFileError
    from mibench.graph.io import load_circuit

    try:
        return None, load_circuit(path, layout=layout)
    except CircuitFileError as err:
        return Problem(err.path, err.field, err.message), None
    except OSError as err:
        return Problem(str(path), None, f"cannot read: {err.strerror or err}"), None
