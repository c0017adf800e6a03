"""Wall time of a fixed small benchmark matrix run sequentially and with ``mibench sweep`` on a local Ray, as a ratio.

The matrix (default: the embedded model, IOI and MCQA, four circuit methods, 100 evaluation examples) runs

* sequentially: one ``mibench evaluate`` process per run, one after another (how the tables were published
  before sweeps: every run pays its own interpreter start and model load, and one run uses every core);
* on local Ray: ``mibench sweep`` with one thread per run and ``--cpus`` CPUs (default 2: two runs at a time on
  two cores), Ray's start-up included; a worker reuses the model it loaded for the next run of that model.

Both write into fresh folders, so every run is made (nothing is skipped). The ratio is sequential / Ray.

    python benchmarks/sweep_speed.py                    # the fixed matrix
    python benchmarks/sweep_speed.py --json out.json    # also write the numbers as JSON

Run nothing else on the machine meanwhile (a second job distorts both numbers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

METHODS = ["random", "eap", "eap-ig-inputs", "ifr"]
TASKS = ["ioi", "mcqa"]


def spec_text(args: argparse.Namespace, output_dir: Path) -> str:
    spec = {"version": 1, "output_dir": str(output_dir), "models": [args.model], "tasks": args.tasks,
            "options": {"limit": args.limit, "threads": 1},
            "entries": [{"methods": args.methods}]}
    return yaml.safe_dump(spec, sort_keys=False)


def sequential(spec_path: Path) -> float:
    """Each run's own ``mibench evaluate`` command, one after another."""
    from mibench.sweep.expand import expand
    from mibench.sweep.spec import load_spec

    runs = expand(load_spec(spec_path), spec_path).runs
    start = time.perf_counter()
    for run in runs:
        subprocess.run([sys.executable, "-m", "mibench", *run.argv()[1:], "--quiet"], check=True,
                       stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def on_ray(spec_path: Path, cpus: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mibench", "sweep", str(spec_path), "--cpus", str(cpus), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2-tasks")
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--limit", type=int, default=100, help="evaluation examples per run (default: 100)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default: 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seconds = {}
        for name, measure in (("sequential", sequential), ("ray", lambda p: on_ray(p, args.cpus))):
            spec_path = tmp / f"{name}.yaml"
            spec_path.write_text(spec_text(args, tmp / name))
            seconds[name] = measure(spec_path)
            runs = len(list((tmp / name).rglob("record.json")))
    result = {"matrix": {"model": args.model, "tasks": args.tasks, "methods": args.methods, "limit": args.limit,
                         "runs": runs},
              "cpus": args.cpus, "seconds": {k: round(v, 2) for k, v in seconds.items()},
              "ratio_sequential_over_ray": round(seconds["sequential"] / seconds["ray"], 3)}
    print(f"{runs} runs ({len(args.tasks)} tasks x {len(args.methods)} methods, --limit {args.limit}, {args.model})")
    print(f"sequential mibench evaluate: {seconds['sequential']:.1f} s")
    print(f"mibench sweep, local Ray, {args.cpus} CPUs, 1 thread per run: {seconds['ray']:.1f} s")
    print(f"ratio sequential / Ray: {result['ratio_sequential_over_ray']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
