"""The leaderboard as data: ranked tables of columns (one per comparability key) and rows (one per method).

:mod:`mibench.leaderboard.build` fills these from the records and :mod:`mibench.leaderboard.render` writes
them out; both depend on this module and neither on the other's internals, so the builder can call the
renderers without an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mibench.leaderboard.comparisons import PeapVsEap
from mibench.leaderboard.significance import Verdict
from mibench.leaderboard.tracks import Entry, Metric, Track


@dataclass(frozen=True)
class Column:
    key: str  # the comparability key every record in this column shares
    task: str
    model: str
    label: str
    details: str


@dataclass
class Table:
    track: Track
    group: tuple[str, ...]
    title: str
    columns: list[Column]
    methods: list[str]
    cells: dict[tuple[str, str], Entry]  # (method, column key) -> entry
    #: why this table stands apart from the others of its track (e.g. the position-aware graph); may be empty
    note: str = ""
    #: (metric name, column key) -> method -> how the cell was compared with the column's top (see
    #: leaderboard.significance); a column without verdicts marks the plain best value
    verdicts: dict[tuple[str, str], dict[str, Verdict]] = field(default_factory=dict)

    def cell(self, method: str, column: Column) -> Entry | None:
        return self.cells.get((method, column.key))

    def row_value(self, method: str) -> str:
        """The method's value of the track's per-method column (e.g. position-aware or not)."""
        values = sorted({e.row_value for (m, _), e in self.cells.items() if m == method})
        return "/".join(values)

    def empty_sizes(self, column: Column) -> tuple[float, ...]:
        """The sizes at which every record of ``column`` evaluates an empty circuit (under both rankings)."""
        entries = [e for (_, key), e in sorted(self.cells.items()) if key == column.key]
        if not entries:
            return ()
        return tuple(f for f in entries[0].empty_sizes if all(f in e.empty_sizes for e in entries))

    def column_note(self, column: Column) -> str:
        """What the column pins, and the sizes at which it cannot separate methods (if any)."""
        empty = self.empty_sizes(column)
        if not empty:
            return column.details
        sizes = ", ".join(f"{100 * f:g} %" for f in empty)
        return f"{column.details}; empty circuit for every method at {sizes} (f = 0 there by definition)"

    def has_inert(self, metric: Metric) -> bool:
        """Whether some cell's curve for ``metric`` recovers nothing short of the whole model."""
        return any(metric.name in e.inert for e in self.cells.values())

    def has_no_effect(self) -> bool:
        """Whether some cell's record shows no measurable effect of the full model over the empty circuit."""
        return any(e.no_effect for e in self.cells.values())

    def verdict(self, metric: Metric, column: Column, method: str) -> Verdict | None:
        """How ``method``'s cell was compared with the top of ``column`` (None: not ranked by a test)."""
        return self.verdicts.get((metric.name, column.key), {}).get(method)

    def floor(self, column: Column) -> tuple[float, float] | None:
        """The no-op IIA of ``column`` as (lowest, highest) over its records; None when no record has one."""
        floors = [f for (_, key), e in self.cells.items() if key == column.key for f in e.floors]
        return (min(floors), max(floors)) if floors else None

    def has_floor(self) -> bool:
        return any(e.floors for e in self.cells.values())

    def best(self, metric: Metric, column: Column) -> set[str]:
        """Methods marked best for ``metric`` in ``column``: by their verdicts (the top and every method not
        significantly worse), or, for a column not ranked by a test, the best finite value (all on a tie)."""
        verdicts = self.verdicts.get((metric.name, column.key))
        if verdicts is not None:
            return {m for m, v in verdicts.items() if v.best}
        values = {m: e.values[metric.name][0] for m in self.methods
                  if (e := self.cell(m, column)) is not None and math.isfinite(e.values[metric.name][0])}
        if not values:
            return set()
        target = max(values.values()) if metric.higher_is_better else min(values.values())
        return {m for m, v in values.items() if v == target}


@dataclass
class Leaderboard:
    tables: list[Table]
    excluded: list[Entry]  # readable records that are not ranked, each with its reasons
    unreadable: list[tuple[str, str]]  # (record path, problem)
    skipped: list[tuple[str, str]]  # (record path, note): records of tracks without a table
    plots: dict[str, str] = field(default_factory=dict)  # ranked entry's record path -> plot path in the output
    #: position-aware against position-invariant at matched edge budgets (sections of their own)
    comparisons: list[PeapVsEap] = field(default_factory=list)

    @property
    def ranked_sources(self) -> dict[str, str | None]:
        """Record path -> code commit, for every record behind a ranked cell (a record counts once even when
        two tracks draw on it, as the AUROC tables draw on circuit records)."""
        return {path: commit for t in self.tables for e in t.cells.values() for path, commit in e.sources}

    @property
    def n_ranked(self) -> int:
        """Ranked records (all seeds of a folded cell count): not the number of cells."""
        return len(self.ranked_sources)

    @property
    def n_cells(self) -> int:
        return sum(len(t.cells) for t in self.tables)
