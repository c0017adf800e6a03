"""The leaderboard: tables (Markdown, LaTeX, CSV) and a static sortable HTML page built from results records.

``mibench leaderboard build`` calls :func:`build_leaderboard`; ``--check`` calls :func:`check_leaderboard`,
which CI uses to prove the committed tables match the committed records. Torch is imported only to read
the current scorer version.
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
