"""``mibench leaderboard build``: rank results records into tables and a static page (or check them)."""

from __future__ import annotations

import argparse
import logging

from mibench.cli.command import Command, action_parser

log = logging.getLogger("mibench")

DEFAULT_RECORDS = "leaderboard/records"
DEFAULT_OUT = "leaderboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="leaderboard_action", metavar="<action>", title="actions", required=True)
    build = action_parser(
        actions, "build", "build the tables (Markdown, LaTeX, CSV) and the static HTML page from results records",
        "Read every record.json under --records, rank the eligible, current ones per comparability key (one "
        "column per key, the newest record per method, column and seed; records that differ only by seed share "
        "one cell: mean, bootstrap error and between-seed spread), and write leaderboard.md, leaderboard.tex, "
        "leaderboard.csv, index.html and plots/ to --out. Bold marks the top of each column and every method not "
        "significantly worse than it at 5 % (paired bootstrap over the records' per-example files; a normal "
        "approximation, marked, where a record has none). Position-aware methods get tables of their own; the "
        "comparison files in --comparisons (e.g. benchmarks/peap_vs_eap.py --json) become sections of their own. "
        "The same inputs always give the same bytes.",
        COMMAND_EXAMPLES,
    )
    build.add_argument("--records", default=DEFAULT_RECORDS, metavar="DIR",
                       help=f"folder of results records (default: {DEFAULT_RECORDS})")
    build.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    build.add_argument("--comparisons", metavar="DIR",
                       help="folder of comparison files (*.json) to render as sections (default: comparisons/ "
                            "beside --records, i.e. leaderboard/comparisons; a missing folder has none)")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if the files in --out differ from a fresh build (for CI)")


def run(args: argparse.Namespace) -> int:
    from mibench.leaderboard import build_leaderboard, check_leaderboard

    if args.check:
        differences = check_leaderboard(args.records, args.out, args.comparisons)
        for line in differences:
            print(line)
        if differences:
            log.error("leaderboard files in %s are out of date; run 'mibench leaderboard build --records %s "
                      "--out %s' and commit the result", args.out, args.records, args.out)
            return 1
        print(f"leaderboard files in {args.out} are up to date")
        return 0
    result = build_leaderboard(args.records, args.out, args.comparisons)
    board = result.leaderboard
    for path, problem in board.unreadable:
        log.warning("%s: %s", path, problem)
    print(f"{board.n_ranked} ranked record(s) in {board.n_cells} cell(s) of {len(board.tables)} table(s); "
          f"{len(board.excluded)} not ranked, "
          f"{len(board.unreadable)} unreadable, {len(board.skipped)} of other tracks")
    changed = [str(p) for p in result.written] + [f"{p} (removed)" for p in result.removed]
    print(f"updated in {result.out_dir}: " + (", ".join(changed) if changed else "nothing (already up to date)"))
    return 0


COMMAND_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench leaderboard build", "leaderboard/records -> leaderboard/{leaderboard.md,.tex,.csv,index.html}"),
    ("mibench leaderboard build --check", "exit 1 if the committed tables are out of date (CI)"),
    ("mibench leaderboard build --records results --out /tmp/site", "a page from your own runs"),
)

COMMAND = Command(
    name="leaderboard",
    help="build the leaderboard tables and static HTML page from results records",
    description="Rank committed results records per comparability key and write Markdown, LaTeX and CSV tables "
    "plus a sortable static HTML page; --check verifies the committed files.",
    examples=COMMAND_EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
