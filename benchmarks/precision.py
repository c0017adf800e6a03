"""How far scores move when the model runs in a half-precision dtype instead of float32.

Runs the same circuit-track and causal-track evaluations on the embedded models twice -- float32 and the
dtype asked for (bfloat16 by default) -- through :func:`mibench.evaluate` / :func:`mibench.evaluate_causal`,
and prints the per-run scores and their absolute differences (CPR, CMD, the faithfulness curve's largest
point difference, IIA average and best). Only scores are compared: timings on a shared machine mean nothing.

    python benchmarks/precision.py                        # bfloat16 vs float32, embedded models
    python benchmarks/precision.py --dtype float16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile

import mibench

CIRCUIT_RUNS = [("gpt2-tasks", "ioi", "eap-ig-inputs"), ("gpt2-tasks", "mcqa", "eap"),
                ("llama-tasks", "arithmetic_addition", "eap"), ("llama-tasks", "ioi", "eap-ig-inputs")]
CAUSAL_RUNS = [("gpt2-tasks", "mcqa", "answer_pointer", "das"), ("llama-tasks", "ioi", "output_token", "das")]


def circuit_scores(model: str, task: str, method: str, dtype: str, options: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        record = mibench.evaluate(method, task, model, dtype=dtype, output_dir=out, **options).record
    return {"cpr": record.metrics.cpr, "cmd": record.metrics.cmd,
            "faithfulness": list(record.metrics.signed.faithfulness)}


def causal_scores(model: str, task: str, variable: str, method: str, dtype: str, options: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        record = mibench.evaluate_causal(method, task, variable, model, dtype=dtype, output_dir=out,
                                         **options).record
    return {"iia_average": record.metrics.average, "iia_best": record.metrics.best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", help="the dtype compared with float32 (default: bfloat16)")
    parser.add_argument("--limit", type=int, default=200, help="evaluation examples per run (default: 200)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    common = {"limit": args.limit, "bootstrap": 0, "progress": False}
    rows = []
    for model, task, method in CIRCUIT_RUNS:
        runs = {d: circuit_scores(model, task, method, d, {**common, "attribution_examples": 100})
                for d in ("float32", args.dtype)}
        a, b = runs["float32"], runs[args.dtype]
        rows.append({"track": "circuit", "model": model, "task": task, "method": method, "float32": a,
                     args.dtype: b, "diff": {
                         "cpr": abs(a["cpr"] - b["cpr"]), "cmd": abs(a["cmd"] - b["cmd"]),
                         "faithfulness_max": max(abs(x - y) for x, y in zip(a["faithfulness"], b["faithfulness"]))}})
        print(json.dumps(rows[-1]["diff"]), model, task, method, flush=True)
    for model, task, variable, method in CAUSAL_RUNS:
        options = {**common, "train_examples": 200, "method_args": {"epochs": 1}}
        runs = {d: causal_scores(model, task, variable, method, d, options) for d in ("float32", args.dtype)}
        a, b = runs["float32"], runs[args.dtype]
        rows.append({"track": "causal", "model": model, "task": task, "variable": variable, "method": method,
                     "float32": a, args.dtype: b,
                     "diff": {k: abs(a[k] - b[k]) for k in a if a[k] is not None and b[k] is not None}})
        print(json.dumps(rows[-1]["diff"]), model, task, variable, method, flush=True)
    bound = {}
    for row in rows:
        for key, value in row["diff"].items():
            bound[key] = max(bound.get(key, 0.0), value)
    print("largest difference over all runs:", json.dumps(bound))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dtype": args.dtype, "runs": rows, "bound": bound}, f, indent=1)


if __name__ == "__main__":
    main()
