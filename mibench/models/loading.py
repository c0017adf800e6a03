"""Load any supported HF causal LM, from a hub id or a local folder, and wrap it in its adapter.

Weights are loaded unchanged through ``transformers`` (no folding, centring or conversion), so logits
through mibench equal logits through ``model(input_ids)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mibench.errors import MibenchError, UnknownNameError, close_matches
from mibench.models.adapter import ModelAdapter, adapter_for
from mibench.models.weights_identity import cached_snapshot_folder, weights_sha256

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


#: How close a bare name must be to an embedded model's name to be taken for a typo of it, not a hub id.
ZOO_TYPO_CUTOFF = 0.8


class ModelLoadError(MibenchError, OSError):
    """A model that cannot be loaded: a local folder that does not exist or is not a model, a hub id that
    cannot be fetched. An ``OSError`` as well, like the errors of ``from_pretrained`` it replaces."""


class ModelOptionError(MibenchError, ValueError):
    """A dtype or device this torch cannot use."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ModelOptionError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


#: ``--device auto``: the best device this machine has (see :func:`resolve_device`).
AUTO_DEVICE = "auto"


def resolve_device(device: str | torch.device) -> str:
    """``device`` as a torch device name; ``"auto"`` is CUDA when a GPU is visible, else MPS, else the CPU."""
    if str(device) != AUTO_DEVICE:
        return str(device)
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """The dtype a model is loaded in when none is asked for, by device.

    CPU and MPS: float32 (CPUs have no fast half-precision matrix units, and half precision there only loses
    accuracy). CUDA: bfloat16 where the GPU supports it, else float16 -- the only way MIB's larger models fit,
    and (benchmarks/precision.py) within a few hundredths of float32's scores on the embedded models.
    """
    resolved = torch.device(device)
    if resolved.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has; a device it lacks is refused before any loading."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelOptionError(f"device {str(device)!r} is not a torch device ({exc}); "
                               "use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible to this process")
            raise ModelOptionError(f"device {str(device)!r}: {why}; use --device cpu "
                                   "(or install a CUDA build of torch)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelOptionError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible "
                                   f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ModelOptionError(f"device {str(device)!r}: MPS is not available on this machine; use --device cpu")
    return resolved


def resolve_source(name: str) -> str:
    """Where ``name`` loads from: a local model folder, an embedded model's folder, or (as is) a hub id.

    Names that can only be meant as local paths (``./x``, ``/x``, ``~/x``, ``a/b/c``, or a path under an
    existing folder) must exist; a bare name close to an embedded model's is taken for a typo of it. Both
    fail here with a message naming the problem, instead of a hub error about a model nobody asked for.
    """
    from mibench.zoo.catalog import is_zoo_model, model_names, model_path

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name}: not a Hugging Face model folder (no config.json); pass a folder written "
                                 "by save_pretrained, an embedded model name or a hub id")
        return str(path)
    if is_zoo_model(name):
        return str(model_path(name))
    if path.exists():
        raise ModelLoadError(f"{name}: is a file; --model takes a model folder, an embedded model name or a hub id")
    if _meant_as_path(name):
        raise ModelLoadError(f"model folder {name!r} does not exist (embedded models: {', '.join(model_names())})")
    near = close_matches(name, model_names()) if "/" not in name else []
    near = [n for n in near if _similarity(name, n) >= ZOO_TYPO_CUTOFF]
    if near:
        raise UnknownNameError("model", name, f"unknown embedded model {name!r} (embedded models: "
                               f"{', '.join(model_names())})", near)
    return name


def _meant_as_path(name: str) -> bool:
    if name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1:
        return True
    first = name.split("/", 1)[0]
    return "/" in name and Path(first).is_dir()  # a path under an existing folder, not an org/name hub id


def _similarity(a: str, b: str) -> float:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio()


@dataclass
class LoadedModel:
    """An HF model, its tokenizer (if any), its adapter and where it came from."""

    adapter: ModelAdapter
    tokenizer: Any
    model_id: str
    revision: str | None
    #: the folder the weights were read from (a zoo model, a local folder, a hub snapshot), or None when the
    #: model was handed over already loaded; decides how :attr:`weights_sha256` is computed
    weights_folder: str | None = None
    _weights_sha256: str | None = field(default=None, init=False, repr=False)

    @property
    def model(self) -> torch.nn.Module:
        return self.adapter.model

    @property
    def weights_sha256(self) -> str:
        """The weights' content hash (see :mod:`mibench.models.weights_identity`), computed once."""
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model, self.weights_folder)
        return self._weights_sha256


#: Tokenizer classes that mean "the tokenizer.json as saved". AutoTokenizer would replace them with the
#: model family's own class (e.g. Qwen2Tokenizer for a qwen2 config), which mis-reads a custom vocabulary.
GENERIC_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def tokenizer_from(source: str, **kwargs: Any):
    """The model's tokenizer; a generic saved ``tokenizer.json`` is loaded as itself (see above)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_path = Path(source) / "tokenizer_config.json"
    if config_path.is_file():
        tokenizer_class = json.loads(config_path.read_text()).get("tokenizer_class")
        if tokenizer_class in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(source)
    return AutoTokenizer.from_pretrained(source, **kwargs)


#: Models kept loaded for reuse (see :func:`keep_loaded_models`): (model, dtype, device, revision, tokenizer) ->
#: LoadedModel. None: every call loads afresh (the default).
_KEPT: dict[tuple, LoadedModel] | None = None


def keep_loaded_models(enabled: bool = True) -> None:
    """Make :func:`load_model` in this process return the model it loaded last when asked for the same one.

    For processes that evaluate run after run (a sweep worker): loading dominates short runs. Only the most
    recent model is kept, so a worker never holds more than one. Safe because nothing at runtime changes a
    loaded model: it stays in eval mode, and the engines restore the ``requires_grad`` flags they change."""
    global _KEPT
    if not enabled:
        _KEPT = None
    elif _KEPT is None:
        _KEPT = {}


def load_model(
    model_id: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    load_tokenizer: bool = True,
) -> LoadedModel:
    """Load ``model_id`` (an embedded zoo model name, a local folder or a hub id) with ``transformers`` and
    wrap it in its adapter.

    A zoo name such as ``"gpt2-tasks"`` (see :mod:`mibench.zoo.catalog`) resolves to the model folder shipped
    inside the package, so it loads offline; an existing local folder of the same name takes precedence.
    A hub id that cannot be fetched (no network, gated model) raises one error that names the model and
    says how to proceed offline, instead of a stack of connection retries. ``device="auto"`` picks the best
    device (:func:`resolve_device`); without ``dtype`` the model is loaded in its device's
    :func:`default_dtype`.
    """
    device = resolve_device(device)
    if _KEPT is not None:
        key = (str(model_id), str(dtype), str(device), revision, load_tokenizer)
        if key not in _KEPT:
            _KEPT.clear()  # one model at a time
            _KEPT[key] = _load_model(model_id, dtype=dtype, device=device, revision=revision,
                                     load_tokenizer=load_tokenizer)
        return _KEPT[key]
    return _load_model(model_id, dtype=dtype, device=device, revision=revision, load_tokenizer=load_tokenizer)


def _load_model(model_id, *, dtype, device, revision, load_tokenizer) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    from mibench.zoo.catalog import model_names

    torch_dtype = resolve_dtype(dtype) or default_dtype(check_device(device))
    name = str(model_id)
    source = resolve_source(name)
    is_local = Path(source).is_dir()
    kwargs: dict[str, Any] = {"revision": revision} if revision and not is_local else {}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager", **kwargs)
        tokenizer_kwargs = {} if is_local else {"revision": revision} if revision else {}
        tokenizer = tokenizer_from(source, **tokenizer_kwargs) if load_tokenizer else None
    except OSError as exc:
        if is_local:
            raise ModelLoadError(f"{name}: cannot load the model folder: {exc}") from exc
        raise ModelLoadError(
            f"could not load model {source!r} from the Hugging Face hub ({exc.__class__.__name__}). "
            "If this machine is offline, download the model elsewhere and pass its local folder, "
            f"or use one of mibench's embedded models ({', '.join(model_names()) or 'none shipped'})."
        ) from exc
    model.to(device)
    model.eval()
    folder = source if is_local else cached_snapshot_folder(source, revision)
    return LoadedModel(adapter=adapter_for(model), tokenizer=tokenizer, model_id=name, revision=revision,
                       weights_folder=folder)
