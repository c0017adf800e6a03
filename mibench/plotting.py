"""The two pieces every plot shares: a headless pyplot (or None without matplotlib) and an atomic PNG write."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), or None when matplotlib is not installed:
    plots are optional, so callers skip them instead of failing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    """Lay out, write atomically as PNG (an interrupted run never leaves half an image), and free the figure."""
    import matplotlib.pyplot as plt

    from mibench.io_utils import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
