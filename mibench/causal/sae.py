"""Sparse autoencoders as featurizers, and the SAELens folder layout they are loaded from and saved in.

An SAE featurizer keeps its reconstruction error, so it is exactly invertible like every featurizer::

    f = encode(x)                 # [..., d_sae] sparse latents
    e = x - decode(f)             # what the SAE does not explain
    inverse(f, e) = decode(f) + e # == x (up to float rounding), whatever the weights

An interchange of SAE latents therefore changes only the part of the hidden vector the SAE reconstructs;
the base keeps its own error term (MIB's SAE baseline). The SAE's weights are *fixed*: they are buffers, not
parameters, so featurizer training never updates them (a learned mask over latents is the trainable part).

Architectures (the inference-time maths of SAELens' ``StandardSAE``, ``JumpReLUSAE`` and ``TopKSAE``,
``sae_lens/saes/*.py``; we never import SAELens, it is not a dependency)::

    x' = x - b_dec if apply_b_dec_to_input else x
    h  = x' @ W_enc + b_enc                            # "hidden_pre"
    standard:  f = ReLU(h)
    jumprelu:  f = ReLU(h) * (h > threshold)           # threshold [d_sae], one per latent
    topk:      f = ReLU of the k largest h, 0 elsewhere
               (rescale_acts_by_decoder_norm: h is multiplied by ||W_dec[i]|| before the top-k, and
                decode divides f by the same norms; newer SAELens TopK configs carry this flag)
    decode(f) = f @ W_dec + b_dec

Folder layout, as SAELens writes it (``SAE.save_model`` / ``save_inference_model``; the constants
``SAE_CFG_FILENAME = "cfg.json"`` and ``SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"``):

* ``sae_weights.safetensors``: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in], ``b_dec``
  [d_in], and ``threshold`` [d_sae] for jumprelu. Training checkpoints of a JumpReLU SAE store
  ``log_threshold`` instead (SAELens converts it with ``exp``; so do we). A ``scaling_factor`` tensor of
  all ones is dropped (SAELens' ``read_sae_components_from_disk`` does the same); any other value means an
  un-folded fine-tuning scale, refused here.
* ``cfg.json``: ``d_in``, ``d_sae``, ``architecture`` ("standard" when absent, SAELens'
  ``handle_config_defaulting``), ``apply_b_dec_to_input`` (default true, as in SAELens),
  ``normalize_activations`` ("none"; legacy files use a bool, false == "none"), ``dtype``, and metadata:
  ``model_name``, ``hook_name`` (older files: ``hook_point``), ``hook_layer``, ``prepend_bos``. SAELens 6
  nests the metadata under ``metadata`` (early 6.0 releases: ``meta``) and writes ``sae_lens_version``;
  older files keep it flat. TopK's ``k`` is a top-level field in SAELens 6 and
  ``activation_fn_kwargs.k`` before (``handle_pre_6_0_config`` moves it). Both are read here.

Refused with :class:`SAEFolderError` (naming the file and the field): a missing file, a missing or
ill-typed field, an unknown architecture, missing / unexpected / mis-shaped tensors, ``d_in`` different
from the model's ``d_model``, and ``normalize_activations`` other than "none": "expected_average_only_in"
needs a dataset norm that SAELens keeps outside the folder (its ``load_from_disk`` silently skips it), and
"constant_norm_rescale" / "layer_norm" rescale each input, which has no fixed decoder for the
interchanged features. Fold the scale into the weights first (SAELens: ``fold_activation_norm_scaling_factor``).

Files are read with ``safetensors`` only (never pickle). :func:`save_sae` writes a flat, pre-6 style
``cfg.json`` (all fields at the top level plus ``activation_fn_kwargs`` for topk, no ``sae_lens_version``)
because every SAELens release reads that form.

Embedded SAEs for the zoo models live in ``mibench/zoo/saes/<model>/layer_<L>/`` (trained by
:mod:`training.sae`; ``mibench/zoo/saes/README.md`` has their numbers). They read the residual
stream *after* block ``L`` (``blocks.L.hook_resid_post``, what :class:`~mibench.engine.residual.ResidualRunner`
returns for layer ``L``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mibench.causal.featurizer import Featurizer, register_featurizer
from mibench.errors import FileFieldError, MibenchError

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "jumprelu", "topk")
#: Where the embedded SAEs of the zoo models live inside the installed package.
EMBEDDED_SAE_DIR = Path(__file__).resolve().parents[1] / "zoo" / "saes"
_NO_NORMALIZATION = ("none", None, False)
_METADATA_KEYS = ("model_name", "hook_name", "hook_layer", "hook_head_index", "prepend_bos", "context_size",
                  "dataset_path")


class SAEFolderError(FileFieldError):
    """An SAE folder that cannot be used; ``path`` is the file, ``field`` the place in it (or None)."""

    kind = "SAE file"


# ============================================================================================ featurizer
@register_featurizer("sae")
class SAEFeaturizer(Featurizer):
    """A fixed sparse autoencoder; its latents are the features and its reconstruction error the error term.

    ``config()`` holds the shapes and scalar settings; the weights travel in the state dict (all
    persistent buffers, float32 unless moved). ``threshold`` exists for ``jumprelu`` only.
    """

    def __init__(self, d_model: int, d_sae: int, architecture: str = "standard", k: int | None = None,
                 apply_b_dec_to_input: bool = True, rescale_acts_by_decoder_norm: bool = False,
                 source: str | None = None) -> None:
        super().__init__(d_model)
        _check_settings(d_model, d_sae, architecture, k, rescale_acts_by_decoder_norm)
        self.d_sae = int(d_sae)
        self.architecture = architecture
        self.k = int(k) if k is not None else None
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.rescale_acts_by_decoder_norm = bool(rescale_acts_by_decoder_norm)
        self.register_buffer("W_enc", torch.zeros(self.d_model, self.d_sae))
        self.register_buffer("b_enc", torch.zeros(self.d_sae))
        self.register_buffer("W_dec", torch.zeros(self.d_sae, self.d_model))
        self.register_buffer("b_dec", torch.zeros(self.d_model))
        if architecture == "jumprelu":
            self.register_buffer("threshold", torch.zeros(self.d_sae))
        #: where the weights come from ("embedded:<model>/layer_<L>" or an SAELens folder), or None
        self.source = source
        if source is not None:
            self._load_from_source(source)

    def _load_from_source(self, source: str) -> None:
        """Fill the buffers from ``source``, refusing an SAE whose settings differ from this one's."""
        folder = resolve_sae_source(source)
        loaded = load_sae(folder, d_model=self.d_model)
        mine, theirs = self.config(), loaded.config()
        mine.pop("source", None)
        theirs.pop("source", None)
        if mine != theirs:
            raise SAEFolderError(folder / SAE_CFG_FILENAME, None, f"the SAE there has settings {theirs}, but the "
                                 f"saved featurizer expects {mine}")
        self.load_state_dict(loaded.state_dict())

    @property
    def n_features(self) -> int:
        return self.d_sae

    @property
    def weights_by_reference(self) -> bool:
        return self.source is not None

    # ------------------------------------------------------------------ SAE maths
    def pre_activations(self, x: Tensor) -> Tensor:
        """``h = (x - b_dec) W_enc + b_enc`` in the buffers' dtype (the top-k rescaling included)."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        h = x @ self.W_enc + self.b_enc
        if self.rescale_acts_by_decoder_norm:
            h = h * self.W_dec.norm(dim=-1)
        return h

    def encode(self, x: Tensor) -> Tensor:
        """Sparse latents ``[..., d_sae]`` of ``x`` ``[..., d_model]``."""
        h = self.pre_activations(x)
        if self.architecture == "standard":
            return torch.relu(h)
        if self.architecture == "jumprelu":
            return torch.relu(h) * (h > self.threshold).to(h.dtype)
        top = torch.topk(h, k=self.k, dim=-1)
        return torch.zeros_like(h).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, features: Tensor) -> Tensor:
        """Reconstruction ``f W_dec + b_dec`` ``[..., d_model]`` in the buffers' dtype."""
        features = features.to(self.W_dec.dtype)
        if self.rescale_acts_by_decoder_norm:
            features = features / self.W_dec.norm(dim=-1)
        return features @ self.W_dec + self.b_dec

    # ------------------------------------------------------------- featurizer API
    def featurize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return f, x - self.decode(f).to(x.dtype)

    def inverse(self, features: Tensor, error: Tensor) -> Tensor:
        return self.decode(features).to(error.dtype) + error

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"d_model": self.d_model, "d_sae": self.d_sae, "architecture": self.architecture,
                               "apply_b_dec_to_input": self.apply_b_dec_to_input}
        if self.architecture == "topk":
            cfg["k"] = self.k
            cfg["rescale_acts_by_decoder_norm"] = self.rescale_acts_by_decoder_norm
        if self.source is not None:
            cfg["source"] = self.source
        return cfg


EMBEDDED_PREFIX = "embedded:"


def resolve_sae_source(source: str) -> Path:
    """The folder a featurizer's ``source`` names: ``embedded:<model>/layer_<L>`` (an SAE shipped with
    mibench) or an SAELens folder path."""
    if source.startswith(EMBEDDED_PREFIX):
        relative = Path(source[len(EMBEDDED_PREFIX):])
        if relative.is_absolute() or ".." in relative.parts:
            raise MibenchError(f"SAE source {source!r}: an embedded SAE is named <model>/layer_<L>")
        return EMBEDDED_SAE_DIR / relative
    return Path(source)


def _check_settings(d_model: int, d_sae: int, architecture: str, k: int | None, rescale: bool) -> None:
    """Refuse settings that would only fail later inside ``encode`` (bad k, unknown architecture)."""
    if architecture not in ARCHITECTURES:
        raise MibenchError(f"unknown SAE architecture {architecture!r} (supported: {', '.join(ARCHITECTURES)})")
    if int(d_model) < 1 or int(d_sae) < 1:
        raise MibenchError(f"an SAE needs positive sizes, got d_model={d_model}, d_sae={d_sae}")
    if architecture == "topk":
        if k is None or not 1 <= int(k) <= int(d_sae):
            raise MibenchError(f"a topk SAE needs k in 1..{d_sae}, got {k!r}")
    elif k is not None:
        raise MibenchError(f"k applies to topk SAEs only, not {architecture!r}")
    if rescale and architecture != "topk":
        raise MibenchError("rescale_acts_by_decoder_norm applies to topk SAEs only")


# ======================================================================================== statistics
@torch.no_grad()
def reconstruction_stats(sae: SAEFeaturizer, activations: Tensor, batch_size: int = 8192) -> dict[str, float]:
    """How well ``sae`` reconstructs ``activations`` ``[N, d]``: explained variance, FVU, L0, dead fraction.

    ``explained_variance = 1 - FVU`` with ``FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over all
    rows (SAEBench's variance-explained, not a per-dimension average); ``l0`` is the mean number of non-zero
    latents per row and ``dead_fraction`` the fraction of latents never active on these rows.
    """
    x = activations.reshape(-1, activations.shape[-1]).to(sae.W_enc.dtype)
    if x.shape[0] == 0:
        raise MibenchError("reconstruction_stats needs at least one activation")
    mean = x.mean(0)
    sq_err, sq_dev, l0 = 0.0, 0.0, 0.0
    active = torch.zeros(sae.d_sae, dtype=torch.bool, device=x.device)
    for chunk in x.split(batch_size):
        f = sae.encode(chunk)
        sq_err += float((chunk - sae.decode(f)).double().pow(2).sum())
        sq_dev += float((chunk - mean).double().pow(2).sum())
        nonzero = f != 0
        l0 += float(nonzero.sum())
        active |= nonzero.any(0)
    fvu = sq_err / sq_dev if sq_dev > 0 else math.inf
    return {"explained_variance": 1.0 - fvu, "fvu": fvu, "mse": sq_err / x.numel(), "l0": l0 / x.shape[0],
            "dead_fraction": float((~active).float().mean()), "n_activations": int(x.shape[0])}


# ============================================================================================= reading
def load_sae(folder: str | os.PathLike[str], d_model: int | None = None) -> SAEFeaturizer:
    """The SAE in a SAELens-layout ``folder``; ``d_model`` (the model's width) is checked against ``d_in``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SAEFolderError(folder, None, "no such folder (an SAE folder holds cfg.json and sae_weights.safetensors)")
    cfg_path, weights_path = folder / SAE_CFG_FILENAME, folder / SAE_WEIGHTS_FILENAME
    settings = read_sae_config(cfg_path)
    if d_model is not None and settings["d_model"] != int(d_model):
        raise SAEFolderError(cfg_path, "d_in", f"the SAE reads {settings['d_model']}-dimensional vectors but the "
                                               f"model's d_model is {d_model}")
    sae = SAEFeaturizer(**settings)
    sae.load_state_dict(_read_weights(weights_path, sae))
    sae.source = _source_name(folder)
    return sae


def _source_name(folder: Path) -> str:
    """How a saved featurizer refers to ``folder``: relative to the embedded SAEs when it is one of them."""
    folder = folder.resolve()
    try:
        return EMBEDDED_PREFIX + folder.relative_to(EMBEDDED_SAE_DIR.resolve()).as_posix()
    except ValueError:
        return str(folder)


def read_sae_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:class:`SAEFeaturizer` keyword arguments from a SAELens ``cfg.json`` (any release's field names)."""
    path = Path(path)
    raw = _read_json(path)
    k = raw.get("k")
    kwargs = raw.get("activation_fn_kwargs") or {}
    if k is None and isinstance(kwargs, dict):
        k = kwargs.get("k")
    architecture = raw.get("architecture", "standard")
    if architecture not in ARCHITECTURES:
        raise SAEFolderError(path, "architecture", f"unknown architecture {architecture!r} (supported: "
                                                   f"{', '.join(ARCHITECTURES)})")
    _check_normalization(path, raw)
    settings: dict[str, Any] = {
        "d_model": _positive_int(path, raw, "d_in"),
        "d_sae": _positive_int(path, raw, "d_sae"),
        "architecture": architecture,
        "apply_b_dec_to_input": _bool(path, raw, "apply_b_dec_to_input", True),
    }
    if architecture == "topk":
        field = "k" if "k" in raw else "activation_fn_kwargs.k"
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings["d_sae"]:
            raise SAEFolderError(path, field, f"a topk SAE needs an integer k in 1..{settings['d_sae']}, got {k!r}")
        settings["k"] = k
        settings["rescale_acts_by_decoder_norm"] = _bool(path, raw, "rescale_acts_by_decoder_norm", False)
    return settings


def sae_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``model_name``, ``hook_name``, ``hook_layer``... of a ``cfg.json``, flat or nested (SAELens 6)."""
    raw = _read_json(Path(path))
    flat = dict(raw)
    if "hook_point" in flat and "hook_name" not in flat:
        flat["hook_name"] = flat["hook_point"]
    for key in ("meta", "metadata"):
        if isinstance(raw.get(key), dict):
            flat.update(raw[key])
    return {key: flat[key] for key in _METADATA_KEYS if key in flat}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SAEFolderError(path, None, "file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SAEFolderError(path, None, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SAEFolderError(path, None, f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _positive_int(path: Path, raw: dict[str, Any], field: str) -> int:
    if field not in raw:
        raise SAEFolderError(path, field, "missing")
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SAEFolderError(path, field, f"expected a positive integer, got {value!r}")
    return value


def _bool(path: Path, raw: dict[str, Any], field: str, default: bool) -> bool:
    value = raw.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SAEFolderError(path, field, f"expected true or false, got {value!r}")
    return value


def _check_normalization(path: Path, raw: dict[str, Any]) -> None:
    value = raw.get("normalize_activations", "none")
    if value not in _NO_NORMALIZATION:
        mode = "expected_average_only_in" if value is True else value
        raise SAEFolderError(path, "normalize_activations", f"{mode!r} is not supported: fold the normalisation "
                             "into W_enc/W_dec/b_dec (SAELens: fold_activation_norm_scaling_factor) and set it to 'none'")
    if raw.get("finetuning_scaling_factor") is True:
        raise SAEFolderError(path, "finetuning_scaling_factor", "a fine-tuning scale is not supported; fold it into "
                                                                "W_dec/b_dec first")


def _read_weights(path: Path, sae: SAEFeaturizer) -> dict[str, Tensor]:
    """The state dict for ``sae`` from a safetensors file, with SAELens' renames and every shape checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise SAEFolderError(path, None, "file not found")
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise SAEFolderError(path, None, f"not a readable safetensors file ({exc})") from None
    if "log_threshold" in tensors and "threshold" not in tensors:  # a JumpReLU training checkpoint
        tensors["threshold"] = torch.exp(tensors.pop("log_threshold"))
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling.float(), torch.ones_like(scaling, dtype=torch.float32)):
        raise SAEFolderError(path, "scaling_factor", "a fine-tuning scale other than 1 is not supported; fold it "
                                                     "into W_dec/b_dec first")
    expected = {name: tuple(buffer.shape) for name, buffer in sae.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise SAEFolderError(path, missing[0], f"missing tensor(s) {missing} for a {sae.architecture} SAE")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise SAEFolderError(path, unexpected[0], f"unexpected tensor(s) {unexpected} for a {sae.architecture} SAE")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise SAEFolderError(path, name, f"shape {list(tensors[name].shape)}, expected {list(shape)} "
                                             f"(d_in={sae.d_model}, d_sae={sae.d_sae} from cfg.json)")
        if not tensors[name].is_floating_point():
            raise SAEFolderError(path, name, f"expected a floating-point tensor, got {tensors[name].dtype}")
    return {name: tensors[name].to(torch.float32) for name in expected}


# ============================================================================================= writing
def save_sae(sae: SAEFeaturizer, folder: str | os.PathLike[str], **cfg_extras: Any) -> Path:
    """Write ``sae`` as ``cfg.json`` + ``sae_weights.safetensors`` in ``folder``; returns the folder.

    ``cfg_extras`` (e.g. ``model_name``, ``hook_name``, ``hook_layer``) are added to ``cfg.json`` as
    top-level fields; they may not override the fields that define the SAE.
    """
    from safetensors.torch import save_file

    from mibench.io_utils import atomic_path, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _saelens_cfg(sae)
    clash = sorted(set(cfg) & set(cfg_extras))
    if clash:
        raise MibenchError(f"save_sae: extra cfg.json fields {clash} would override the SAE's own settings")
    cfg.update(cfg_extras)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in sae.state_dict().items()}
    with atomic_path(folder / SAE_WEIGHTS_FILENAME) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(folder / SAE_CFG_FILENAME, json.dumps(cfg, indent=2) + "\n")
    return folder


def _saelens_cfg(sae: SAEFeaturizer) -> dict[str, Any]:
    """The flat cfg.json fields every SAELens release reads (see the module docstring)."""
    cfg: dict[str, Any] = {
        "architecture": sae.architecture,
        "d_in": sae.d_model,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "finetuning_scaling_factor": False,
        "activation_fn": "topk" if sae.architecture == "topk" else "relu",
    }
    if sae.architecture == "topk":
        cfg["k"] = sae.k
        cfg["activation_fn_kwargs"] = {"k": sae.k}
        cfg["rescale_acts_by_decoder_norm"] = sae.rescale_acts_by_decoder_norm
    return cfg


# ====================================================================================== finding SAEs
def embedded_sae_path(model_name: str, layer: int) -> Path | None:
    """The folder of the embedded SAE for zoo model ``model_name`` at ``layer``, or None if none ships."""
    if not model_name or "/" in model_name or "\\" in model_name:
        return None
    folder = EMBEDDED_SAE_DIR / model_name / f"layer_{int(layer)}"
    return folder if (folder / SAE_CFG_FILENAME).is_file() else None


def embedded_saes() -> dict[str, list[int]]:
    """Model name -> layers with an embedded SAE (for error messages and listings)."""
    found: dict[str, list[int]] = {}
    if EMBEDDED_SAE_DIR.is_dir():
        for model in sorted(p for p in EMBEDDED_SAE_DIR.iterdir() if p.is_dir()):
            layers = _layers_in(model)
            if layers:
                found[model.name] = layers
    return found


def sae_for(model_id: str, layer: int, sae_dir: str | None = None, *, d_model: int | None = None) -> SAEFeaturizer:
    """The SAE for the residual stream after block ``layer`` of ``model_id``.

    ``sae_dir`` (a folder of ``layer_<L>/`` SAE folders) wins; otherwise the embedded SAE of a zoo model.
    ``d_model`` is checked against the SAE's ``d_in``; when not given it is read, without torch, from the
    zoo catalog or a local model folder's ``config.json`` when possible.
    """
    if sae_dir is not None:
        root = Path(sae_dir)
        folder = root / f"layer_{int(layer)}"
        if not (folder / SAE_CFG_FILENAME).is_file():
            if not root.is_dir():
                raise SAEFolderError(root, None, "SAE folder not found (expected layer_<L>/cfg.json inside)")
            have = ", ".join(f"layer_{n}" for n in _layers_in(root)) or "no layer_<L> folder with a cfg.json"
            raise SAEFolderError(folder, None, f"no SAE for layer {layer} in {str(root)!r} (found: {have})")
    else:
        folder = embedded_sae_path(model_id, layer)
        if folder is None:
            listing = "; ".join(f"{name}: layers {', '.join(map(str, layers))}"
                                for name, layers in embedded_saes().items()) or "none"
            raise MibenchError(f"no embedded SAE for model {model_id!r} at layer {layer} (embedded SAEs: {listing}); "
                               "pass a folder of layer_<L>/ SAELens folders as sae_dir")
    if d_model is None:
        d_model = _model_width(model_id)
    return load_sae(folder, d_model=d_model)


def _layers_in(root: Path) -> list[int]:
    layers = []
    for sub in root.glob("layer_*"):
        suffix = sub.name.removeprefix("layer_")
        if suffix.isdigit() and (sub / SAE_CFG_FILENAME).is_file():
            layers.append(int(suffix))
    return sorted(layers)


def _model_width(model_id: str) -> int | None:
    """The hidden size of a zoo model or a local model folder (None when it cannot be read cheaply)."""
    from mibench.zoo.catalog import is_zoo_model, zoo_model

    if is_zoo_model(model_id):
        return zoo_model(model_id).width
    config = Path(model_id) / "config.json"
    if config.is_file():
        try:
            raw = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        for key in ("hidden_size", "n_embd", "d_model"):
            if isinstance(raw.get(key), int):
                return raw[key]
    return None
