"""The Python entry points: run a benchmark from a script or notebook, on a model you name or one you loaded.

:func:`evaluate` (circuit track) and :func:`evaluate_causal` (causal track) build the same requests the
``mibench evaluate`` command builds and run them through the same pipeline, so they write the same files
(``record.json``, ``scores.json`` or the featurizers, the plots) under ``output_dir`` and return the same
typed record. The model is an embedded model name, a local folder or a hub id -- loaded exactly as the
command line loads it -- or an already loaded Hugging Face causal LM with its tokenizer, used as it is, on
whatever device (and in whatever dtype) it already lives::

    import mibench
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained("gpt2").to("cuda")
    result = mibench.evaluate("eap-ig-inputs", "ioi", model, AutoTokenizer.from_pretrained("gpt2"))
    print(result.record.metrics.cpr, result.folder)

Every other request field (``split``, ``limit``, ``batch_size``, ``seed``, ``level``, ``ablation``,
``method_args`` ...) is a keyword argument with the command line's default; see
:class:`~mibench.pipeline.EvaluationRequest` and :class:`~mibench.pipeline.CausalRequest`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from mibench.errors import MibenchError, UnknownNameError, close_matches
from mibench.pipeline import (
    CausalRequest,
    CausalResult,
    EvaluationRequest,
    EvaluationResult,
    run_causal_evaluation,
    run_evaluation,
)

#: Request fields the API sets itself (from its positional arguments or the loaded model).
_SET_BY_API = {"method", "task", "variable", "model", "preloaded", "invocation"}
#: Options that say how to load a model by name; meaningless for a model object the caller already loaded.
_LOADING_OPTIONS = ("device", "dtype", "revision")


def evaluate(method: str, task: str, model: Any = None, tokenizer: Any = None, *, model_name: str | None = None,
             **options: Any) -> EvaluationResult:
    """Run circuit method ``method`` on ``task`` and score it, like ``mibench evaluate --method ... --task ...``.

    ``model``: an embedded model name, a model folder or a hub id (default: the embedded zoo model), or a
    loaded HF causal LM (then ``tokenizer`` is required and ``model_name`` names it in the record and the
    output folder). Returns the published run: ``.record`` (a :class:`~mibench.results.record.CircuitRecord`),
    ``.folder`` and ``.record_path``.
    """
    fields = _request_fields(EvaluationRequest, model, tokenizer, model_name, options)
    invocation = _invocation("evaluate", method=method, task=task, **_shown(fields, options))
    return run_evaluation(EvaluationRequest(method=method, task=task, invocation=invocation, **fields))


def evaluate_causal(method: str, task: str, variable: str, model: Any = None, tokenizer: Any = None, *,
                    model_name: str | None = None, **options: Any) -> CausalResult:
    """Localise ``variable`` of ``task`` with featurizer ``method``, like ``mibench evaluate --track causal``.

    ``model``/``tokenizer``/``model_name`` as in :func:`evaluate`. Returns the published run, whose
    ``.record`` is a :class:`~mibench.results.causal_record.CausalRecord`.
    """
    fields = _request_fields(CausalRequest, model, tokenizer, model_name, options)
    invocation = _invocation("evaluate_causal", method=method, task=task, variable=variable,
                             **_shown(fields, options))
    return run_causal_evaluation(CausalRequest(method=method, task=task, variable=variable, invocation=invocation,
                                               **fields))


def _request_fields(request_type: type, model: Any, tokenizer: Any, model_name: str | None,
                    options: dict[str, Any]) -> dict[str, Any]:
    """The request's keyword arguments: the caller's options (checked by name) and the model's fields."""
    allowed = sorted(f.name for f in dataclasses.fields(request_type) if f.name not in _SET_BY_API)
    for name in options:
        if name not in allowed:
            raise UnknownNameError("option", name, f"unknown option {name!r} (options: {', '.join(allowed)})",
                                   close_matches(name, allowed))
    if model is None or isinstance(model, (str, os.PathLike)):
        if tokenizer is not None:
            raise MibenchError("a tokenizer is passed only with a loaded model; a model name or folder brings its own")
        from mibench.zoo.catalog import DEFAULT_MODEL

        return {**options, "model": str(model) if model is not None else DEFAULT_MODEL}
    given = [name for name in _LOADING_OPTIONS if options.get(name) is not None]
    if given:
        raise MibenchError(f"{', '.join(given)}: options for loading a model by name; a loaded model is used on "
                           "its own device and in its own dtype (move or cast it before passing it)")
    loaded = wrap_loaded(model, tokenizer, model_name)
    return {**options, "model": loaded.model_id, "device": str(loaded.adapter.device), "preloaded": loaded}


def wrap_loaded(model: Any, tokenizer: Any, model_name: str | None = None):
    """A caller's HF causal LM and tokenizer as the pipeline's :class:`~mibench.models.loading.LoadedModel`.

    The model is put in eval mode (as the loader does); nothing else about it changes. Its name defaults to
    the ``name_or_path`` it was loaded from, else its ``model_type``.
    """
    from torch import nn

    from mibench.models.adapter import adapter_for
    from mibench.models.loading import LoadedModel

    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise MibenchError(f"model must be a name, a folder or a loaded Hugging Face causal LM, "
                           f"not {type(model).__name__}")
    if tokenizer is None:
        raise MibenchError("a loaded model needs its tokenizer: pass tokenizer=... (mibench encodes task prompts)")
    config = model.config
    name = model_name or getattr(config, "name_or_path", "") or getattr(config, "model_type", "model")
    adapter = adapter_for(model)  # refuses unsupported families with a clear error
    model.eval()
    return LoadedModel(adapter=adapter, tokenizer=tokenizer, model_id=str(name), revision=None)


def _shown(fields: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """What the recorded invocation shows: the options given and the model's name (not the object)."""
    return {"model": fields["model"], **options}


def _invocation(function: str, **arguments: Any) -> list[str]:
    """The call as a record's ``invocation``: ``["mibench.evaluate(...)"]``."""
    shown = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
    return [f"mibench.{function}({shown})"]
