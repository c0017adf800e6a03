"""mibench: a benchmark harness for mechanistic interpretability (circuits and causal variables).

``mibench.evaluate`` and ``mibench.evaluate_causal`` (see :mod:`mibench.api`) are imported on first use,
so ``import mibench`` stays light (no torch, no transformers).
"""

from typing import Any

__version__ = "0.1.0.dev0"

#: The Python entry points, resolved lazily from :mod:`mibench.api`.
_API = ("evaluate", "evaluate_causal")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from mibench import api

        return getattr(api, name)
    raise AttributeError(f"module 'mibench' has no attribute {name!r}")
