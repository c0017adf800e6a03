"""The leaderboard: tables (Markdown, LaTeX, CSV) and a static sortable HTML page built from results records.

``mibench leaderboard build`` calls :func:`build_leaderboard`; ``--check`` calls :func:`check_leaderboard`,
which CI uses to prove the committed tables match the committed records. Bold ("best") comes from
:mod:`mibench.leaderboard.significance` (a paired bootstrap over the records' per-example files); comparison
sections from :mod:`mibench.leaderboard.comparisons`. Torch is imported only to read the current scorer
versions and to recompute causal IIA on resamples.
"""

from mibench.leaderboard.build import (
    DEFAULT_OUT_DIR,
    DEFAULT_RECORDS_DIR,
    BuildResult,
    build_leaderboard,
    check_leaderboard,
    collect_leaderboard,
    render_files,
)
from mibench.leaderboard.tables import Leaderboard
from mibench.leaderboard.tracks import TRACKS, Entry, Metric, Track

__all__ = [
    "DEFAULT_OUT_DIR",
    "DEFAULT_RECORDS_DIR",
    "TRACKS",
    "BuildResult",
    "Entry",
    "Leaderboard",
    "Metric",
    "Track",
    "build_leaderboard",
    "check_leaderboard",
    "collect_leaderboard",
    "render_files",
]
