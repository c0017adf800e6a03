"""``mibench sweep SPEC``: the benchmark matrix of a sweep spec, run on Ray (the logic is in :mod:`mibench.sweep`)."""

from __future__ import annotations

import argparse
import sys

from mibench.cli.command import Command

SWEEP_HELP = "run the benchmark matrix of a sweep spec (models x tasks x methods x seeds) on Ray, resumably"
SWEEP_DESCRIPTION = (
    "Expand SPEC (YAML: models x tasks x methods x seeds, both tracks) into runs and run each as a Ray task "
    "(an embedded local Ray, or an existing cluster with --address / RAY_ADDRESS). Each run is one 'mibench "
    "evaluate' command (it becomes the record's invocation) and writes the same record. A run whose record already exists (same "
    "settings, code commit, data and seed) is skipped, so re-running the same command completes exactly the "
    "missing runs. Needs Ray: pip install \"mibench[sweep]\".")
SWEEP_EXAMPLES = (
    ("mibench sweep leaderboard/sweep.yaml", "every published run that is missing, then 'mibench leaderboard build'"),
    ("mibench sweep leaderboard/sweep.yaml --dry-run", "the expanded matrix, and what would be skipped"),
    ("mibench sweep my_sweep.yaml --address ray://head:10001", "on an existing Ray cluster"),
    ("mibench sweep my_sweep.yaml --force --retries 2", "re-run everything, retrying failures twice"),
)


def sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="sweep spec (YAML), e.g. leaderboard/sweep.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded matrix and exit (needs no Ray)")
    parser.add_argument("--force", action="store_true", help="run even the runs whose record already exists")
    parser.add_argument("--retries", type=int, default=1, metavar="N",
                        help="run a failing run up to N more times before reporting it (default: 1; user errors "
                        "such as an unknown counterfactual are not retried)")
    parser.add_argument("--address", help="address of an existing Ray cluster (default: $RAY_ADDRESS, else an "
                        "embedded local Ray)")
    parser.add_argument("--cpus", type=int, metavar="N", help="CPUs of the embedded local Ray (default: the cores "
                        "this process may use); each run takes its 'threads' of them")
    parser.add_argument("--output-dir", help="where records go (default: the spec's output_dir)")
    parser.add_argument("--format", default="simple", help="table format (tabulate), e.g. github")


def run(args: argparse.Namespace) -> int:
    from mibench.errors import MibenchError
    from mibench.sweep.expand import expand
    from mibench.sweep.resume import RecordIndex
    from mibench.sweep.runner import Outcome, SweepInterrupted, import_ray, progress_enabled, run_on_ray
    from mibench.sweep.spec import load_spec
    from mibench.sweep.summary import matrix_table, outcome_table, skipped_lines, totals_line

    if args.retries < 0 or (args.cpus is not None and args.cpus < 1):
        raise MibenchError("--retries must be at least 0 and --cpus at least 1")
    spec = load_spec(args.spec)
    if args.output_dir:
        spec = spec.model_copy(update={"output_dir": args.output_dir})
    expansion = expand(spec, args.spec)
    runs = expansion.runs
    index = RecordIndex(runs)
    existing = {} if args.force else {i: str(p) for i, run in enumerate(runs) if (p := index.find(run)) is not None}
    for line in skipped_lines(expansion.skipped):
        print(line)
    if existing and (index.commit or "").endswith("+dirty"):
        print("note: this checkout is modified; records made from it count as existing whatever the change "
              "(use --force after changing code)")
    if args.dry_run:
        print(matrix_table(runs, existing, args.format))
        print(f"\n{len(runs)} runs: {len(runs) - len(existing)} to run, {len(existing)} with a record already")
        return 0
    todo = [run for i, run in enumerate(runs) if i not in existing]
    if todo:
        import_ray()  # say how to install it before anything starts
    skipped = {i: Outcome(run, "skipped", "record exists", None, existing[i]) for i, run in enumerate(runs)
               if i in existing}
    status = 0
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), unit="run", desc="sweep", disable=not progress_enabled(args.quiet)) as bar:
        def advance(outcome: Outcome) -> None:
            bar.update(1)
            if outcome.status == "failed":
                bar.write(f"failed: {outcome.run.label}: {outcome.reason}")
        try:
            done = run_on_ray(todo, address=args.address, cpus=args.cpus, retries=args.retries,
                              on_outcome=advance) if todo else []
        except SweepInterrupted as stop:
            done, status = stop.outcomes, 130
    ran = iter(done)
    outcomes = [skipped[i] if i in skipped else next(ran) for i in range(len(runs))]
    print(outcome_table(outcomes, args.format))
    print(f"\n{totals_line(outcomes)}")
    if status == 0 and any(o.status == "failed" for o in outcomes):
        status = 1
    sys.stdout.flush()
    return status


COMMAND = Command(name="sweep", help=SWEEP_HELP, description=SWEEP_DESCRIPTION, examples=SWEEP_EXAMPLES,
                  add_arguments=sweep_arguments, run=run)
