"""``mibench submission check|evaluate|export``: validate submission folders, score them into records, or write
mibench runs in MIB's own leaderboard layout."""

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
        EXAMPLES[:3],
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="submission folder(s), e.g. submissions/my-method")
    check.add_argument("--layout", default="mibench", choices=LAYOUTS,
                       help="mibench: a submission.yaml folder (default); mib: MIB's leaderboard layout, as "
                       "'mibench submission export' writes it (no card; tasks and models in the folder names)")
    evaluate = action_parser(
        actions, "evaluate", "check a submission, then score it into results records (as 'mibench score' does)",
        "Check the submission and score every cell on the evaluation split; records go to "
        "<output-dir>/<submission>/<task>/<model>/.../record.json with method id 'submission:<name>'.",
        EXAMPLES[3:],
    )
    evaluate.add_argument("path", metavar="PATH", help="submission folder")
    add_run_arguments(evaluate)
    evaluate.add_argument("--format", default="text", choices=("text", JSON_FORMAT),
                          help="text lines (default) or one JSON list of record summaries on stdout")
    export = action_parser(
        actions, "export", "write mibench runs in MIB's leaderboard layout (circuit importances or causal featurizers)",
        "Collect the runs (record.json folders) of one method, one run per task and model, and write them in the "
        "layout MIB's leaderboard accepts. Circuit track: <task>_<model>/importances.json (the run's scores.json, "
        "already in MIB's magnitude convention). Causal track: <TASK>_<ModelClass>_<variable>/ with "
        "ResidualStream(Layer-L,Token-P)_featurizer, _inverse_featurizer and _indices per saved site, in MIB's "
        "featurizer file format. Check the result with 'mibench submission check --layout mib'.",
        EXPORT_EXAMPLES,
    )
    export.add_argument("runs", nargs="+", metavar="RUNS", help="record.json files, run folders or folders of runs")
    export.add_argument("--output", "-o", required=True, metavar="DIR", help="a new (or empty) folder to write")
    export.add_argument("--method", metavar="ID", help="export only the runs of this method (e.g. eap-ig-inputs)")
    export.add_argument("--seed", type=int, metavar="N", help="export only the runs with this seed")


def run(args: argparse.Namespace) -> int:
    if args.submission_action == "check":
        return _check(args.paths, args.layout)
    if args.submission_action == "export":
        return _export(args)
    return _evaluate(args)


def _export(args: argparse.Namespace) -> int:
    from mibench.submissions.export import export_submission

    report = export_submission(args.runs, args.output, method=args.method, seed=args.seed)
    for warning in report.warnings:
        log.warning("%s", warning)
    for cell in report.cells:
        units = f" ({cell.units} units)" if report.track == "causal" else ""
        print(f"{cell.folder}{units}  <- {cell.record.parent}")
    print(f"{report.output}: {report.method}, {report.track} track, {len(report.cells)} folder(s) in MIB's layout")
    return 0


def _check(paths: list[str], layout: str) -> int:
    """One ``file: field: message`` line per problem, an ``ok`` line per clean folder; exit status 1 on any."""
    if layout == "mib":
        from mibench.submissions.mib_check import check_mib_layout as inspect
    else:
        from mibench.submissions import inspect_submission as inspect
    failed = False
    for path in paths:
        report = inspect(path)
        for problem in report.problems:
            print(problem)
        if layout == "mib":  # (the card checker issues its own warnings as it finds them)
            for warning in report.warnings:
                log.warning("%s", warning)
        if report.problems:
            failed = True
            log.error("%s: %d problem(s)", path, len(report.problems))
        else:
            print(f"{path}: ok ({_mib_summary(report) if layout == 'mib' else _card_summary(report)})")
    return 1 if failed else 0


def _card_summary(report) -> str:
    card = report.card
    what = (f"plugin {card.plugin.method}" if card.contains == "plugin" and card.plugin
            else f"{card.contains} for {len(report.cells)} cell(s)")
    return f"{what}; {len(card.models)} models, {len(card.tasks)} tasks"


def _mib_summary(report) -> str:
    models = {c.model.name for c in report.cells}
    tasks = {c.task for c in report.cells}
    return (f"MIB {report.track} layout; {len(report.cells)} folder(s), {len(models)} models, "
            f"{len(tasks)} tasks")


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


LAYOUTS = ("mibench", "mib")

EXPORT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench submission export results/ --method eap-ig-inputs -o mib-submission",
     "every task x model run of one method, as <task>_<model>/importances.json"),
    ("mibench submission export results/ --method das --seed 0 -o mib-causal",
     "causal featurizers as <TASK>_<ModelClass>_<variable>/ unit files"),
    ("mibench submission check --layout mib mib-submission", "read the exported folder back"),
)

EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench submission check submissions/example-random", "validate a submission; runs no model"),
    ("mibench submission check submissions/*", "validate every submission"),
    ("mibench submission check --layout mib mib-submission", "a folder in MIB's own leaderboard layout"),
    ("mibench submission evaluate submissions/example-random --output-dir leaderboard/records",
     "score it into records for the leaderboard"),
    ("mibench submission evaluate submissions/example-random --limit 20 --format json", "a quick JSON summary"),
)

COMMAND = Command(
    name="submission",
    help="check a submission folder, score it into results records, or export runs in MIB's layout",
    description="Validate third-party submission folders (card, coverage, file formats, graph sizes, circuit "
    "size limits) and score them: importance files and circuits as 'mibench score' does, featurizers as "
    "'mibench score --track causal' does, plugin methods as 'mibench evaluate' does. 'export' writes runs in "
    "MIB's own leaderboard layout, and 'check --layout mib' reads that layout back.",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
)
