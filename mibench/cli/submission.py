"""``mibench submission check|evaluate``: validate submission folders, or score them into records."""

from __future__ import annotations

import argparse
import logging

from mibench.cli.command import Command, action_parser
from mibench.cli.options import JSON_FORMAT, add_run_arguments, progress

log = logging.getLogger("mibench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="submission_action", metavar="<action>", title="actions", required=True)
    check = action_parser(
        actions, "check", "validate submission folders (card, coverage, file formats and graph sizes); runs no model",
        "Validate each submission folder: submission.yaml, coverage (at least 2 models and 2 tasks), every "
        "importance / circuit file's format and graph size, circuit size limits. Prints one 'file: field: "
        "message' line per problem; exit status 1 if there are any.",
        EXAMPLES[:2],
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="submission folder(s), e.g. submissions/my-method")
    evaluate = action_parser(
        actions, "evaluate", "check a submission, then score it into results records (as 'mibench score' does)",
        "Check the submission and score every cell on the evaluation split; records go to "
        "<output-dir>/<submission>/<task>/<model>/.../record.json with method id 'submission:<name>'.",
        EXAMPLES[2:],
    )
    evaluate.add_argument("path", metavar="PATH", help="submission folder")
    add_run_arguments(evaluate)
    evaluate.add_argument("--format", default="text", choices=("text", JSON_FORMAT),
                          help="text lines (default) or one JSON list of record summaries on stdout")


def run(args: argparse.Namespace) -> int:
    if args.submission_action == "check":
        return _check(args.paths)
    return _evaluate(args)


def _check(paths: list[str]) -> int:
    from mibench.submissions import inspect_submission

    failed = False
    for path in paths:
        report = inspect_submission(path)
        for problem in report.problems:
            print(problem)
        if report.problems:
            failed = True
            log.error("%s: %d problem(s)", path, len(report.problems))
        else:
            card = report.card
            what = (f"plugin {card.plugin.method}" if card.contains == "plugin" and card.plugin
                    else f"{card.contains} for {len(report.cells)} cell(s)")
            print(f"{path}: ok ({what}; {len(card.models)} models, {len(card.tasks)} tasks)")
    return 1 if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from mibench.cli.output import print_json, record_summary
    from mibench.submissions import InvalidSubmissionError, evaluate_submission

    try:
        results = evaluate_submission(args.path, args.output_dir, split=args.split, limit=args.limit,
                                      seed=args.seed, bootstrap=args.bootstrap, batch_size=args.batch_size,
                                      device=args.device, dtype=args.dtype, progress=progress(args))
    except InvalidSubmissionError as exc:
        for problem in exc.problems:
            print(problem)
        log.error("%s: %d problem(s); nothing was scored", args.path, len(exc.problems))
        return 1
    if args.format == JSON_FORMAT:
        print_json([record_summary(result) for result in results])
        return 0
    for result in results:
        record, m = result.record, result.record.metrics
        if record.track == "causal":
            average = "-" if m.average is None else f"{m.average:.3f}"
            scores = f"{record.task.variable}: IIA average {average}, best {m.best:.3f}"
        else:
            scores = f"CPR {m.cpr:.3f}, CMD {m.cmd:.3f}"
        print(f"{record.task.id} / {record.model.id}: {scores}  ({result.record_path})")
    return 0


EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench submission check submissions/example-random", "validate a submission; runs no model"),
    ("mibench submission check submissions/*", "validate every submission"),
    ("mibench submission evaluate submissions/example-random --output-dir leaderboard/records",
     "score it into records for the leaderboard"),
    ("mibench submission evaluate submissions/example-random --limit 20 --format json", "a quick JSON summary"),
)

COMMAND = Command(
    name="submission",
    help="check a submission folder, or score it into results records",
    description="Validate third-party submission folders (card, coverage, file formats, graph sizes, circuit "
    "size limits) and score them: importance files and circuits as 'mibench score' does, featurizers as "
    "'mibench score --track causal' does, plugin methods as 'mibench evaluate' does.",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
