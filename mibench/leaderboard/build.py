"""Build the leaderboard from committed results records: collect, check, group, render, write.

Rules (the same for every output format):

* every ``record.json`` under the records folder is read and validated; an unreadable one is listed, not fatal;
* a record is ranked only if it is leaderboard-eligible, was scored with the current scorer and the current
  comparability version of its task, and its comparability key matches its own fields; every other record
  is listed under "Not ranked" with the reasons;
* one column per comparability key: records are never compared across keys; tables gather the columns that
  agree on level, split and scorer version (the columns then differ only in task, model, counterfactual
  and model revision, which each column's note spells out);
* one row per method (its id, plus the ablation when it is not counterfactual patching); when two ranked
  records share a row, a column and a seed, the newest (by ``created``) is kept and the other is listed as
  superseded; records that differ only by seed share the cell: mean over seeds, the mean bootstrap standard
  error, and the between-seed standard deviation with the number of seeds (:func:`fold_seeds`);
* bold ("best") is the top mean of a column and every method not significantly worse than it (a paired
  bootstrap over the same examples where per-example files allow, see :mod:`mibench.leaderboard.significance`);
* position-aware circuit methods get tables of their own (their graph has other edges), and causal columns
  whose records carry the no-op IIA get a floor row that is never ranked;
* comparison files (``comparisons/`` beside the records folder, e.g. PEAP against EAP at matched edge budgets
  from ``benchmarks/peap_vs_eap.py --json``) are rendered as sections of their own;
* the output depends only on the records (no clock, no absolute paths), so rebuilding from the same records
  gives byte-identical files and CI can check the committed tables with ``--check``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mibench.errors import MibenchError
from mibench.io_utils import atomic_write_bytes
from mibench.leaderboard.comparisons import read_comparisons
from mibench.leaderboard.render import render_csv, render_html, render_latex, render_markdown
from mibench.leaderboard.significance import rank_column
from mibench.leaderboard.tables import Column, Leaderboard, Table
from mibench.leaderboard.tracks import TRACKS, Entry

DEFAULT_RECORDS_DIR = "leaderboard/records"
DEFAULT_OUT_DIR = "leaderboard"
#: the comparisons folder's name beside the records folder (leaderboard/comparisons by default)
COMPARISONS_DIR = "comparisons"
RECORD_NAME = "record.json"
PLOTS_DIR = "plots"
TABLE_FILES = ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "index.html")


@dataclass
class BuildResult:
    leaderboard: Leaderboard
    out_dir: Path
    written: list[Path]  # files whose content changed
    removed: list[Path]  # plots no longer referenced


def _created_order(entry: Entry) -> tuple[float, str]:
    try:
        when = datetime.fromisoformat(entry.created.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        stamp = when.timestamp()
    except ValueError:
        stamp = float("-inf")
    return (stamp, entry.record)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-.") or "x"


def _plot_name(entry: Entry) -> str:
    digest = hashlib.sha256(f"{entry.track}|{entry.column_key}|{entry.method}".encode()).hexdigest()[:8]
    return f"{PLOTS_DIR}/{_slug(entry.task)}__{_slug(entry.model)}__{_slug(entry.method)}__{digest}.png"


def _read_entries(records_dir: Path) -> tuple[list[Entry], list[tuple[str, str]], list[tuple[str, str]]]:
    entries: list[Entry] = []
    unreadable: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(records_dir.rglob(RECORD_NAME)):
        if not path.is_file():
            continue
        rel = path.relative_to(records_dir).as_posix()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            unreadable.append((rel, f"cannot read results record: {exc.strerror or type(exc).__name__}"))
            continue
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            unreadable.append((rel, f"cannot read results record: {exc}"))
            continue
        if not isinstance(raw, dict):
            unreadable.append((rel, "invalid results record: expected a JSON object"))
            continue
        track_name = raw.get("track", "circuit")
        track = TRACKS.get(track_name) if isinstance(track_name, str) else None
        if track is None:
            skipped.append((rel, f"track {track_name!r} has no leaderboard table in this version; record skipped"))
            continue
        try:
            entries.append(track.read(path, rel))
        except MibenchError as exc:
            unreadable.append((rel, str(exc).removeprefix(f"{rel}: ")))
            continue
        for derived in TRACKS.values():  # tables drawn from this track's records (AUROC of known circuits)
            if derived.source == track.name:
                entry = derived.read(path, rel)
                if entry is not None and not entry.reasons:  # an unrankable record is listed once, by its track
                    entries.append(entry)
    return entries, unreadable, skipped


def _column_labels(entries: list[Entry]) -> list[Column]:
    first: dict[str, Entry] = {}
    for entry in entries:
        first.setdefault(entry.column_key, entry)
    ordered = sorted(first.values(), key=lambda e: (e.task, e.model, e.column_key))
    base = [f"{e.task} / {e.model}" for e in ordered]
    columns = []
    for entry, label in zip(ordered, base):
        if base.count(label) > 1:  # same task and model, different counterfactual or revision
            label = f"{label} ({entry.column_details})"
        columns.append(Column(entry.column_key, entry.task, entry.model, label, entry.column_details))
    return columns


def fold_seeds(entries: list[Entry]) -> Entry:
    """One cell from records that differ only by seed: each metric's mean over seeds, with the mean of their
    bootstrap standard errors beside the between-seed standard deviation and the number of seeds.

    The cell links to (and shows the plot of) the lowest seed's record. A single record is returned as is."""
    if len(entries) == 1:
        return entries[0]
    entries = sorted(entries, key=lambda e: e.seed)
    values: dict[str, tuple[float, float | None]] = {}
    spread: dict[str, tuple[float, int]] = {}
    for metric in entries[0].values:
        numbers = [e.values[metric][0] for e in entries]
        errors = [e.values[metric][1] for e in entries]
        finite = all(math.isfinite(v) for v in numbers)
        mean = statistics.fmean(numbers) if finite else float("nan")
        stderr = statistics.fmean(errors) if all(x is not None for x in errors) else None
        values[metric] = (mean, stderr)
        spread[metric] = (statistics.stdev(numbers) if finite else float("nan"), len(numbers))
    newest = max(entries, key=_created_order)
    empty = tuple(f for f in entries[0].empty_sizes if all(f in e.empty_sizes for e in entries))
    inert = tuple(m for m in entries[0].inert if all(m in e.inert for e in entries))
    examples = tuple(s for e in entries for s in e.examples) if all(e.examples for e in entries) else ()
    return dataclasses.replace(entries[0], values=values, spread=spread, seeds=tuple(e.seed for e in entries),
                               created=newest.created, reasons=[], empty_sizes=empty, inert=inert,
                               no_effect=all(e.no_effect for e in entries), examples=examples,
                               floors=tuple(f for e in entries for f in e.floors),
                               sources=tuple(s for e in entries for s in e.sources))


def default_comparisons_dir(records_dir: str | Path) -> Path:
    """Where the comparison files of a records folder live: ``comparisons/`` beside it."""
    return Path(records_dir).parent / COMPARISONS_DIR


def collect_leaderboard(records_dir: str | Path, comparisons_dir: str | Path | None = None) -> Leaderboard:
    """Read every record under ``records_dir`` and arrange them into tables, and every comparison file in
    ``comparisons_dir`` (default: :func:`default_comparisons_dir`; a missing folder has none). Nothing is written."""
    records_dir = Path(records_dir)
    if not records_dir.is_dir():
        raise MibenchError(f"records folder {str(records_dir)!r} does not exist (expected results records "
                           f"as <anything>/{RECORD_NAME} below it)")
    entries, unreadable, skipped = _read_entries(records_dir)
    excluded = [e for e in entries if e.reasons]
    rankable: dict[tuple[str, str, str, int], list[Entry]] = {}
    for entry in entries:
        if not entry.reasons:
            rankable.setdefault((entry.track, *entry.identity, entry.seed), []).append(entry)
    per_seed: dict[tuple[str, str, str], list[Entry]] = {}
    for competing in rankable.values():
        competing.sort(key=_created_order)
        newest = competing[-1]
        per_seed.setdefault((newest.track, *newest.identity), []).append(newest)
        for older in competing[:-1]:
            older.reasons.append(f"superseded by {newest.record} (created {newest.created})")
            excluded.append(older)
    ranked = [fold_seeds(group) for group in per_seed.values()]

    groups: dict[tuple[str, tuple[str, ...]], list[Entry]] = {}
    for entry in ranked:
        groups.setdefault((entry.track, entry.group), []).append(entry)
    tables = []
    for (track_name, group), members in sorted(groups.items()):
        methods = sorted({e.method for e in members}, key=lambda m: (m.casefold(), m))
        table = Table(track=TRACKS[track_name], group=group, title=members[0].group_title,
                      columns=_column_labels(members), methods=methods,
                      cells={(e.method, e.column_key): e for e in members}, note=members[0].group_note)
        for column in table.columns:
            ranked_column = rank_column(table.track, column.key, {m: e for (m, key), e in table.cells.items()
                                                                  if key == column.key})
            table.verdicts.update({(metric, column.key): v for metric, v in ranked_column.items()})
        tables.append(table)
    excluded.sort(key=lambda e: (e.record, e.method))
    plots = {e.record: _plot_name(e) for e in sorted(ranked, key=lambda e: e.record) if e.plot is not None}
    comparisons = read_comparisons(default_comparisons_dir(records_dir) if comparisons_dir is None else comparisons_dir)
    return Leaderboard(tables=tables, excluded=excluded, unreadable=unreadable, skipped=skipped, plots=plots,
                       comparisons=comparisons)


def render_files(leaderboard: Leaderboard) -> dict[str, bytes]:
    """Every output file, by its path relative to the output folder."""
    files = {
        "leaderboard.md": render_markdown(leaderboard).encode("utf-8"),
        "leaderboard.tex": render_latex(leaderboard).encode("utf-8"),
        "leaderboard.csv": render_csv(leaderboard).encode("utf-8"),
        "index.html": render_html(leaderboard).encode("utf-8"),
    }
    sources = {e.record: e.plot for t in leaderboard.tables for e in t.cells.values() if e.plot is not None}
    for record, name in leaderboard.plots.items():
        files[name] = sources[record].read_bytes()
    return files


def _existing_plots(out_dir: Path) -> list[Path]:
    folder = out_dir / PLOTS_DIR
    return sorted(p for p in folder.glob("*.png") if p.is_file()) if folder.is_dir() else []


def build_leaderboard(records_dir: str | Path = DEFAULT_RECORDS_DIR, out_dir: str | Path = DEFAULT_OUT_DIR,
                      comparisons_dir: str | Path | None = None) -> BuildResult:
    """Write ``leaderboard.md``, ``leaderboard.tex``, ``leaderboard.csv``, ``index.html`` and ``plots/`` from the
    records in ``records_dir`` and the comparison files in ``comparisons_dir`` (see :func:`collect_leaderboard`).

    Files whose content is unchanged are not rewritten; plots under ``plots/`` that no ranked record uses
    any more are removed (the builder owns that folder). Other files in ``out_dir`` are left alone.
    """
    leaderboard = collect_leaderboard(records_dir, comparisons_dir)
    files = render_files(leaderboard)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for name, data in files.items():
        target = out_dir / name
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        written.append(target)
    removed = [p for p in _existing_plots(out_dir) if f"{PLOTS_DIR}/{p.name}" not in files]
    for path in removed:
        path.unlink()
    return BuildResult(leaderboard, out_dir, written, removed)


def check_leaderboard(records_dir: str | Path = DEFAULT_RECORDS_DIR, out_dir: str | Path = DEFAULT_OUT_DIR,
                      comparisons_dir: str | Path | None = None) -> list[str]:
    """What differs between a fresh build and the files in ``out_dir`` (empty: up to date). Writes nothing."""
    files = render_files(collect_leaderboard(records_dir, comparisons_dir))
    out_dir = Path(out_dir)
    problems = []
    for name, data in files.items():
        target = out_dir / name
        if not target.is_file():
            problems.append(f"{target}: missing")
        elif target.read_bytes() != data:
            problems.append(f"{target}: differs from a fresh build")
    for path in _existing_plots(out_dir):
        if f"{PLOTS_DIR}/{path.name}" not in files:
            problems.append(f"{path}: no ranked record uses this plot any more")
    return problems
