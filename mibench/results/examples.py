"""The per-example sidecar of a results record: ``examples.safetensors`` beside ``record.json``.

A record keeps aggregates (CPR/CMD, IIA best/average) with bootstrap errors. Ranking methods against each
other is a *paired* comparison on the same examples, so every run also stores the per-example numbers the
aggregates are computed from; anyone can recompute the record's metrics from them
(:func:`mibench.circuits.areas.circuit_metrics_from_examples`,
:func:`mibench.causal.iia.causal_metrics_from_examples`) and resample two records' examples jointly.

Format ``mibench-examples/1`` (a safetensors file: reading it never executes code). Metadata: ``format``,
``track`` (``circuit`` | ``causal``), ``data_hash`` (the record's ``task.data_hash``), ``n`` (examples or
pairs). Tensors:

* circuit track, float32, examples in evaluation order: ``full`` ``[n]`` (m of the full model), ``empty``
  ``[n]`` (m of the empty circuit), ``signed`` and ``absolute`` ``[n_sizes, n]`` (m of each ranking's circuit
  at each size), ``baseline`` ``[n_sizes, n]`` when the record has a baseline curve; all finite.
* causal track: ``correct`` uint8 ``[n_sites, n]`` (1/0: the interchange intervention's output was right),
  rows in the order of the record's ``sites``, the pairs that count (after the model-correctness filter);
  ``kind`` uint8 ``[n]``, each pair's counterfactual kind as an index into the metadata ``kinds`` (a JSON
  list of names), because a site's IIA is the unweighted mean over kinds. Without ``kind`` (and ``kinds``)
  every pair is of one kind.

A record without a sidecar (older or external records) stays valid; a record that has one lists it in
``artifacts["examples"]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mibench.errors import FileFieldError

FORMAT = "mibench-examples/1"
FILE_NAME = "examples.safetensors"
#: the key of the sidecar in a record's ``artifacts``
ARTIFACT_KEY = "examples"
TRACKS = ("circuit", "causal")

_CIRCUIT_CURVES = ("signed", "absolute", "baseline")
_REQUIRED = {"circuit": ("full", "empty", "signed", "absolute"), "causal": ("correct",)}
_OPTIONAL = {"circuit": ("baseline",), "causal": ("kind",)}


class ExamplesFileError(FileFieldError):
    """A per-example sidecar that cannot be used (``field``: a tensor name or ``__metadata__.<key>``)."""

    kind = "examples file"


def write_examples(path: str | os.PathLike[str], track: str, data_hash: str, arrays: Mapping[str, np.ndarray],
                   *, kinds: list[str] | None = None) -> Path:
    """Validate ``arrays`` and write them as a sidecar at ``path`` (atomically: a temporary file, then a rename).

    Circuit arrays are stored as float32, causal ``correct``/``kind`` as uint8. ``kinds`` names the causal
    ``kind`` indices. A malformed array raises :class:`ExamplesFileError` naming ``path`` and the tensor.
    """
    from safetensors.numpy import save

    path = Path(path)
    tensors = {name: _stored(track, name, value) for name, value in arrays.items()}
    metadata = {"format": FORMAT, "track": track, "data_hash": data_hash, "n": str(_count(track, tensors))}
    if kinds is not None:
        metadata["kinds"] = json.dumps(list(kinds))
    validate_examples(path, metadata, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(save(tensors, metadata=metadata))
    os.replace(temporary, path)
    return path


def read_examples(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """``(metadata, arrays)`` of a sidecar, validated; anything malformed raises :class:`ExamplesFileError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ExamplesFileError(path, None, "no such file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExamplesFileError(path, None, f"not a safetensors file: {exc}") from None
    validate_examples(path, metadata, arrays)
    return metadata, arrays


def validate_examples(path: str | os.PathLike[str], metadata: Mapping[str, str],
                      arrays: Mapping[str, np.ndarray]) -> None:
    """The sidecar rules (see the module docstring); raises :class:`ExamplesFileError` on the first break."""
    if metadata.get("format") != FORMAT:
        raise ExamplesFileError(path, "__metadata__.format", f"is {metadata.get('format')!r}, expected {FORMAT!r}")
    track = metadata.get("track")
    if track not in TRACKS:
        raise ExamplesFileError(path, "__metadata__.track", f"is {track!r}, expected one of {', '.join(TRACKS)}")
    if not metadata.get("data_hash"):
        raise ExamplesFileError(path, "__metadata__.data_hash", "missing")
    n_text = metadata.get("n", "")
    if not n_text.isdigit():
        raise ExamplesFileError(path, "__metadata__.n", f"is {n_text!r}, expected a count of examples")
    n = int(n_text)
    for name in _REQUIRED[track]:
        if name not in arrays:
            raise ExamplesFileError(path, name, f"missing: a {track}-track sidecar needs "
                                    f"{', '.join(_REQUIRED[track])}")
    for name in arrays:
        if name not in _REQUIRED[track] + _OPTIONAL[track]:
            raise ExamplesFileError(path, name, f"not a {track}-track tensor (expected "
                                    f"{', '.join(_REQUIRED[track] + _OPTIONAL[track])})")
    if track == "circuit":
        _check_circuit(path, arrays, n)
    else:
        _check_causal(path, metadata, arrays, n)


def _check_circuit(path, arrays: Mapping[str, np.ndarray], n: int) -> None:
    signed = arrays["signed"]
    n_sizes = signed.shape[0] if signed.ndim == 2 else None  # every curve has as many sizes as ``signed``
    for name, value in arrays.items():
        if value.dtype != np.float32:
            raise ExamplesFileError(path, name, f"dtype {value.dtype}, expected float32")
        if name in _CIRCUIT_CURVES:
            if value.ndim != 2 or value.shape != (n_sizes, n):
                same = f" and n_sizes = {n_sizes} (as signed)" if n_sizes is not None and name != "signed" else ""
                raise ExamplesFileError(path, name, f"shape {list(value.shape)}, expected [n_sizes, n] with n = {n}"
                                        f"{same}")
        elif value.shape != (n,):
            raise ExamplesFileError(path, name, f"shape {list(value.shape)}, expected [n] with n = {n}")
        if not np.isfinite(value).all():
            raise ExamplesFileError(path, name, "holds NaN or infinite values")


def _check_causal(path, metadata: Mapping[str, str], arrays: Mapping[str, np.ndarray], n: int) -> None:
    correct = arrays["correct"]
    if correct.dtype != np.uint8:
        raise ExamplesFileError(path, "correct", f"dtype {correct.dtype}, expected uint8")
    if correct.ndim != 2 or correct.shape[1] != n:
        raise ExamplesFileError(path, "correct", f"shape {list(correct.shape)}, expected [n_sites, n] with n = {n}")
    if correct.size and correct.max() > 1:
        raise ExamplesFileError(path, "correct", "holds values other than 0 and 1")
    if "kind" not in arrays:
        if "kinds" in metadata:
            raise ExamplesFileError(path, "kind", "missing, but __metadata__.kinds names the kinds")
        return
    kind = arrays["kind"]
    try:
        kinds = json.loads(metadata.get("kinds", ""))
    except json.JSONDecodeError:
        kinds = None
    if not isinstance(kinds, list) or (not kinds and kind.size) or not all(isinstance(k, str) for k in kinds):
        raise ExamplesFileError(path, "__metadata__.kinds", "expected a JSON list of counterfactual kind names "
                                "(the kind tensor indexes it)")
    if kind.dtype != np.uint8 or kind.shape != (n,):
        raise ExamplesFileError(path, "kind", f"{kind.dtype} of shape {list(kind.shape)}, expected uint8 [n] "
                                f"with n = {n}")
    if kind.size and int(kind.max()) >= len(kinds):
        raise ExamplesFileError(path, "kind", f"indexes kind {int(kind.max())}, but only {len(kinds)} are named")


def _stored(track: str, name: str, value) -> np.ndarray:
    dtype = np.float32 if track == "circuit" else np.uint8
    return np.ascontiguousarray(np.asarray(value), dtype=dtype)


def _count(track: str, tensors: Mapping[str, np.ndarray]) -> int:
    main = tensors.get("full" if track == "circuit" else "correct")
    return 0 if main is None or main.ndim == 0 else int(main.shape[-1])


def publish_examples(folder: Path, artifacts: dict[str, str], track: str, data_hash: str,
                     arrays: Mapping[str, np.ndarray], *, kinds: list[str] | None = None) -> None:
    """Write the sidecar into a run's (staging) folder and list it in the record's ``artifacts``."""
    write_examples(folder / FILE_NAME, track, data_hash, arrays, kinds=kinds)
    artifacts[ARTIFACT_KEY] = FILE_NAME


def record_examples(record, folder: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, np.ndarray]] | None:
    """The sidecar of ``record`` (a circuit or causal record read from ``folder``), checked against it, or None
    when the record lists none (older or external records are valid without one).

    Beyond :func:`read_examples`' rules the sidecar must belong to the record: same track and data hash, as
    many examples as the record evaluated (pairs for the causal track, rows = its sites), curves with the
    record's number of sizes, and a baseline exactly when the record has a baseline curve."""
    name = record.artifacts.get(ARTIFACT_KEY)
    if name is None:
        return None
    folder = Path(folder)
    path = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ExamplesFileError(path, None, f"artifacts.{ARTIFACT_KEY} must name a file inside the record's folder")
    metadata, arrays = read_examples(path)
    if metadata["track"] != record.track:
        raise ExamplesFileError(path, "__metadata__.track", f"is {metadata['track']!r}, but the record is a "
                                f"{record.track}-track record")
    if metadata["data_hash"] != record.task.data_hash:
        raise ExamplesFileError(path, "__metadata__.data_hash", f"is {metadata['data_hash']!r}, but the record's "
                                f"task.data_hash is {record.task.data_hash!r}")
    n = int(metadata["n"])
    if record.track == "circuit":
        expected_n, rows = record.task.n_examples, len(record.metrics.signed.fractions)
        if arrays["signed"].shape[0] != rows:
            raise ExamplesFileError(path, "signed", f"{arrays['signed'].shape[0]} sizes, but the record's curve has "
                                    f"{rows}")
        if ("baseline" in arrays) != (record.metrics.baseline is not None):
            raise ExamplesFileError(path, "baseline", "present without a baseline curve in the record"
                                    if "baseline" in arrays else "missing, but the record has a baseline curve")
    else:
        expected_n, rows = sum(record.task.test_pairs.values()), len(record.sites)
        if "kinds" in metadata and json.loads(metadata["kinds"]) != list(record.task.counterfactuals):
            raise ExamplesFileError(path, "__metadata__.kinds", f"is {metadata['kinds']}, but the record's "
                                    f"task.counterfactuals are {list(record.task.counterfactuals)}")
        if arrays["correct"].shape[0] != rows:
            raise ExamplesFileError(path, "correct", f"{arrays['correct'].shape[0]} rows, but the record has "
                                    f"{rows} sites")
    if n != expected_n and (record.track == "circuit" or rows):  # a causal record without sites has no pairs here
        raise ExamplesFileError(path, "__metadata__.n", f"is {n}, but the record evaluated {expected_n}")
    return metadata, arrays
