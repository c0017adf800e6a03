"""``mibench leaderboard build`` and ``mibench submission check|evaluate``: arguments and runners.

Nothing heavy is imported here; the runners import what they need.
"""

from __future__ import annotations

import argparse
import sys

from mibench.errors import MibenchError

DEFAULT_RECORDS = "leaderboard/records"
DEFAULT_OUT = "leaderboard"

# Help texts and examples for the two ``Command`` entries in mibench.cli (every example parses).
LEADERBOARD_HELP = "build the leaderboard tables and static HTML page from results records"
LEADERBOARD_DESCRIPTION = ("Rank committed results records per comparability key and write Markdown, LaTeX and "
                           "CSV tables plus a sortable static HTML page; --check verifies the committed files.")
LEADERBOARD_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench leaderboard build", "leaderboard/records -> leaderboard/{leaderboard.md,.tex,.csv,index.html}"),
    ("mibench leaderboard build --check", "exit 1 if the committed tables are out of date (CI)"),
    ("mibench leaderboard build --records results --out /tmp/site", "a page from your own runs"),
)
SUBMISSION_HELP = "check a submission folder, or score it into results records"
SUBMISSION_DESCRIPTION = ("Validate third-party submission folders (card, coverage, file formats, graph sizes, "
                          "circuit size limits) and score importance-file submissions as 'mibench score' does.")
SUBMISSION_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench submission check submissions/example-random", "validate a submission; runs no model"),
    ("mibench submission check submissions/*", "validate every submission"),
    ("mibench submission evaluate submissions/example-random --output-dir leaderboard/records",
     "score it into records for the leaderboard"),
)


# ------------------------------------------------------------------------------------------ leaderboard
def leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="leaderboard_action", metavar="<action>", title="actions", required=True)
    build = actions.add_parser(
        "build",
        help="build the tables (Markdown, LaTeX, CSV) and the static HTML page from results records",
        description="Read every record.json under --records, rank the eligible, current ones per comparability "
        "key (one column per key, the newest record per method and column), and write leaderboard.md, "
        "leaderboard.tex, leaderboard.csv, index.html and plots/ to --out. The same records always give the "
        "same bytes.",
    )
    build.add_argument("--records", default=DEFAULT_RECORDS, metavar="DIR",
                       help=f"folder of results records (default: {DEFAULT_RECORDS})")
    build.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if the files in --out differ from a fresh build (for CI)")


def run_leaderboard(args: argparse.Namespace) -> int:
    from mibench.leaderboard import build_leaderboard, check_leaderboard

    if args.leaderboard_action != "build":  # pragma: no cover (argparse only offers build)
        raise MibenchError(f"unknown leaderboard action {args.leaderboard_action!r}")
    if args.check:
        differences = check_leaderboard(args.records, args.out)
        for line in differences:
            print(line)
        if differences:
            print(f"leaderboard files in {args.out} are out of date; run 'mibench leaderboard build "
                  f"--records {args.records} --out {args.out}' and commit the result", file=sys.stderr)
            return 1
        print(f"leaderboard files in {args.out} are up to date")
        return 0
    result = build_leaderboard(args.records, args.out)
    board = result.leaderboard
    for path, problem in board.unreadable:
        print(f"warning: {path}: {problem}", file=sys.stderr)
    print(f"{board.n_ranked} ranked record(s) in {len(board.tables)} table(s); {len(board.excluded)} not ranked, "
          f"{len(board.unreadable)} unreadable, {len(board.skipped)} of other tracks")
    changed = [str(p) for p in result.written] + [f"{p} (removed)" for p in result.removed]
    print(f"updated in {result.out_dir}: " + (", ".join(changed) if changed else "nothing (already up to date)"))
    return 0


# ------------------------------------------------------------------------------------------- submission
def submission_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="submission_action", metavar="<action>", title="actions", required=True)
    check = actions.add_parser(
        "check",
        help="validate submission folders (card, coverage, file formats and graph sizes); runs no model",
        description="Validate each submission folder: submission.yaml, coverage (at least 2 models and 2 tasks), "
        "every importance / circuit file's format and graph size, circuit size limits. Prints one "
        "'file: field: message' line per problem; exit status 1 if there are any.",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="submission folder(s), e.g. submissions/my-method")
    evaluate = actions.add_parser(
        "evaluate",
        help="check a submission, then score it into results records (as 'mibench score' does)",
        description="Check the submission and score every cell on the evaluation split; records go to "
        "<output-dir>/<submission>/<task>/<model>/.../record.json with method id 'submission:<name>'.",
    )
    evaluate.add_argument("path", metavar="PATH", help="submission folder")
    evaluate.add_argument("--output-dir", default="results", help="where records go (default: ./results)")
    evaluate.add_argument("--split", default="test", choices=("train", "validation", "test", "private_test"),
                          help="evaluation split (default: test)")
    evaluate.add_argument("--limit", type=int, help="first N examples only (records are not leaderboard-eligible)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed for the bootstrap (default: 0)")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default: 1000)")
    evaluate.add_argument("--batch-size", type=int, default=32, help="examples per forward (default: 32)")
    evaluate.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    evaluate.add_argument("--dtype", help="model dtype (default: as saved)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")


def run_submission(args: argparse.Namespace) -> int:
    if args.submission_action == "check":
        from mibench.submissions import inspect_submission

        failed = False
        for path in args.paths:
            report = inspect_submission(path)
            for problem in report.problems:
                print(problem)
            if report.problems:
                failed = True
                print(f"{path}: {len(report.problems)} problem(s)", file=sys.stderr)
            else:
                card = report.card
                what = (f"plugin {card.plugin.method}" if card.contains == "plugin" and card.plugin
                        else f"{card.contains} for {len(report.cells)} cell(s)")
                print(f"{path}: ok ({what}; {len(card.models)} models, {len(card.tasks)} tasks)")
        return 1 if failed else 0
    if args.submission_action == "evaluate":
        from mibench.submissions import InvalidSubmissionError, evaluate_submission

        if args.batch_size < 1:
            raise MibenchError("--batch-size must be at least 1")
        try:
            results = evaluate_submission(args.path, args.output_dir, split=args.split, limit=args.limit,
                                          seed=args.seed, bootstrap=args.bootstrap, batch_size=args.batch_size,
                                          device=args.device, dtype=args.dtype,
                                          progress=False if args.quiet else None)
        except InvalidSubmissionError as exc:
            for problem in exc.problems:
                print(problem)
            print(f"{args.path}: {len(exc.problems)} problem(s); nothing was scored", file=sys.stderr)
            return 1
        for result in results:
            record, m = result.record, result.record.metrics
            if getattr(record, "track", "circuit") == "causal":
                average = "-" if m.average is None else f"{m.average:.3f}"
                scores = f"{record.task.variable}: IIA average {average}, best {m.best:.3f}"
            else:
                scores = f"CPR {m.cpr:.3f}, CMD {m.cmd:.3f}"
            print(f"{record.task.id} / {record.model.id}: {scores}  ({result.record_path})")
        return 0
    raise MibenchError(f"unknown submission action {args.submission_action!r}")  # pragma: no cover
