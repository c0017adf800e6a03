"""Plan one ``mibench evaluate`` run: resolve the model's shape, the task's sequence length and the method's
settings, then estimate every phase and the largest batch that fits a budget. Shared by ``mibench plan``
and ``mibench evaluate --batch-size auto``; nothing here loads weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mibench.planning.configs import ModelShape, resolve_config, shape_of
from mibench.planning.memory import DTYPE_BYTES, PhaseEstimate, PlanSettings, fits, largest_batch, plan

#: Tokens per word-or-punctuation mark assumed when the model's tokenizer is not available offline
#: (subword tokenizers split rare names; English prompts average well under this).
TOKENS_PER_WORD = 1.3


@dataclass
class RunPlan:
    model: str
    shape: ModelShape
    settings: PlanSettings
    dtype: str
    seq_len_source: str  # how the sequence length was found
    phases: list[PhaseEstimate]
    budget: int | None = None
    largest_batch: int | None = None

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else fits(self.phases, self.budget, self.settings.device_type)


def plan_run(model: str, task: str, method: str, *, batch_size: int = 32, seq_len: int | None = None,
             dtype: str | None = None, device: str = "cpu", level: str | None = None,
             method_args: dict[str, Any] | None = None, baseline: bool = True, attribution_examples: int = 100,
             split: str = "test", limit: int | None = None, train_examples: int = 400,
             budget: int | None = None) -> RunPlan:
    """Estimate the run ``mibench evaluate --model model --task task --method method ...`` would make."""
    from mibench.method_registry import get_method_card, resolve_arguments

    card = get_method_card(method)
    arguments = resolve_arguments(card, method_args or {})
    device_type = _device_type(device)
    dtype = dtype or ("bfloat16" if device_type == "cuda" else "float32")
    shape = shape_of(resolve_config(model))
    if seq_len is None:
        seq_len, source = task_seq_len(model, task, split=split, limit=limit,
                                       attribution_examples=attribution_examples)
    else:
        source = "--seq-len"
    causal = card.track == "causal"
    settings = PlanSettings(
        batch_size=batch_size, seq_len=seq_len, method=card.id, dtype_bytes=DTYPE_BYTES[dtype.lower()],
        device_type=device_type, level=level or card.levels[0], ig_steps=int(arguments.get("ig_steps", 5)),
        baseline=baseline, train_pairs=train_examples * (_causal_kinds(task) if causal else 1),
        train_batch_size=int(arguments.get("batch_size", 64)),
    )
    result = RunPlan(model=model, shape=shape, settings=settings, dtype=dtype, seq_len_source=source,
                     phases=plan(shape, settings), budget=budget)
    if budget is not None:
        result.largest_batch = largest_batch(shape, settings, budget)
    return result


def with_batch(run_plan: RunPlan, batch_size: int) -> RunPlan:
    """The same plan at another batch size."""
    settings = replace(run_plan.settings, batch_size=batch_size)
    return replace(run_plan, settings=settings, phases=plan(run_plan.shape, settings))


def _device_type(device: str) -> str:
    if device == "auto":
        from mibench.models.loading import resolve_device

        device = resolve_device(device)
    return device.split(":", 1)[0]


def _causal_kinds(task: str) -> int:
    from mibench.data.registry import get_card

    causal = get_card(task).causal
    return len(causal.counterfactuals) if causal is not None else 1


def task_seq_len(model: str, task: str, *, split: str = "test", limit: int | None = None,
                 attribution_examples: int = 100) -> tuple[int, str]:
    """The longest prompt (clean or counterfactual) of the evaluation split and the attribution examples, in
    the model's tokens when its tokenizer is available offline (an embedded model or a local folder), else
    estimated from the prompts' words (``TOKENS_PER_WORD`` per word or punctuation mark, plus BOS)."""
    from mibench.data.registry import load_task

    loaded = load_task(task)
    examples = loaded.examples(split, limit) + loaded.examples("train", attribution_examples)
    prompts = {p for ex in examples for p in [ex.prompt, *(cf.prompt for cf in ex.counterfactuals.values())]}
    tokenizer = _offline_tokenizer(model)
    if tokenizer is not None:
        return max(len(tokenizer(p)["input_ids"]) for p in prompts), "the model's tokenizer"
    words = max(len(re.findall(r"\w+|[^\w\s]", p)) for p in prompts)
    return math.ceil(words * TOKENS_PER_WORD) + 1, f"estimated from word counts (x{TOKENS_PER_WORD}); see --seq-len"


def _offline_tokenizer(model: str):
    from mibench.zoo.catalog import is_zoo_model, model_path

    folder = model_path(model) if is_zoo_model(model) else Path(model).expanduser()
    if not (folder.is_dir() and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))):
        return None
    from mibench.models.loading import tokenizer_from

    try:
        return tokenizer_from(str(folder))
    except (OSError, ValueError):
        return None
