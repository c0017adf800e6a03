"""Sweeps: spec validation, expansion (impossible combinations named), the published spec, and local-Ray runs
(records equal to ``mibench evaluate``'s, resumed without duplicates, failures reported, Ctrl-C safe)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mibench.cli import main
from mibench.sweep.execute import evaluate_namespace, run_one
from mibench.sweep.expand import expand
from mibench.sweep.resume import RecordIndex
from mibench.sweep.spec import SweepSpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "leaderboard" / "sweep.yaml"
#: methods whose result depends on the seed (the others are deterministic given the data)
RANDOMIZED = {"random", "das", "dbm", "dbm-pca", "dbm-sae", "ugs", "edge-pruning"}


def _spec(tmp_path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _expand(path: Path):
    return expand(load_spec(path), path)


# ------------------------------------------------------------------------------------------------ spec
@pytest.mark.parametrize("body, field, message", [
    ("version: 2\nmodels: [m]\ntasks: [ioi]\nentries: [{methods: [eap]}]", "version", "version 1, not 2"),
    ("version: 1\nmodels: [m]\ntasks: [ioi]\nentries: [{methods: [{id: eap, level: edgy}]}]",
     "entries.0.methods.0.level", "'edge', 'node' or 'neuron'"),
    ("version: 1\nmodels: [m]\ntasks: [ioi]\nentries: [{methods: [eap], colour: red}]", "entries.0.colour",
     "Extra inputs"),
    ("version: 1\nmodels: [m]\ntasks: [ioi]\nentries: [{methods: [eap]}]\noptions: {limit: 0}", "options.limit",
     "greater than or equal to 1"),
    ("version: 1\nmodels: [m]\nentries: [{methods: [eap]}]", "<top>", "entries.0 has no tasks"),
    ("version: 1\nmodels: [m]\ntasks: [ioi]\nentries: [{track: causal, methods: [{id: das, level: node}]}]",
     "entries.0", "circuit-track settings"),
])
def test_a_bad_field_is_named_with_the_file(tmp_path, body, field, message):
    path = _spec(tmp_path, body)
    with pytest.raises(SweepSpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: {field}: ") and message in str(caught.value)


@pytest.mark.parametrize("entry, field, message", [
    ("{methods: [eapp]}", "entries.0.methods.0.id", "did you mean"),
    ("{methods: [das]}", "entries.0.methods.0.id", "causal-track method"),
    ("{methods: [{id: eap-ig-inputs, args: {ig_stepz: 3}}]}", "entries.0.methods.0.args", "ig_steps"),
    ("{methods: [eap], tasks: [iio]}", "entries.0.tasks", "iio"),
    ("{track: causal, methods: [das], variables: [answer_pointr]}", "entries.0.variables", "answer_pointer"),
])
def test_unknown_names_are_errors_naming_the_field(tmp_path, entry, field, message):
    path = _spec(tmp_path, f"version: 1\nmodels: [gpt2-tasks]\ntasks: [mcqa]\nentries: [{entry}]")
    with pytest.raises(SweepSpecError) as caught:
        _expand(path)
    assert str(caught.value).startswith(f"{path}: {field}: ") and message in str(caught.value)


def test_expansion_skips_impossible_combinations_and_says_why(tmp_path):
    path = _spec(tmp_path, """
version: 1
models: [gpt2-tasks, planted-ioi]
tasks: [ioi, induction]
seeds: [0, 1]
entries:
  - methods: [random, {id: eap, level: node}, {id: nap, level: neuron, args: {ig_steps: 2}, seeds: [7]}]
  - track: causal
    methods: [full-vector]
    variables: [output_token]
  - methods: [random]
""")
    expansion = _expand(path)
    reasons = {(s.what, s.reason) for s in expansion.skipped}
    assert ("eap node", "the eap card has no node level (levels: edge)") in reasons
    assert ("planted-ioi x induction", "planted-ioi ships a planted circuit for ioi only") in reasons
    assert ("gpt2-tasks x induction", "task induction has no causal variables") in reasons
    assert sum("the same run as in entries.0" in r for _, r in reasons) == 6  # entry 2 repeats entry 0's randoms
    labels = [r.label for r in expansion.runs]
    assert labels[:3] == ["gpt2-tasks ioi random edge seed 0", "gpt2-tasks ioi random edge seed 1",
                          "gpt2-tasks ioi nap neuron ig_steps=2 seed 7"]
    assert len(labels) == len(set(labels)) == 2 * 3 + 3 + 2 * 2  # gpt2 x 2 tasks, planted x ioi, causal x 2 models x 2 seeds
    assert not any("planted-ioi induction" in label for label in labels)


def test_two_runs_that_would_overwrite_one_record_are_an_error(tmp_path):
    path = _spec(tmp_path, "version: 1\nmodels: [gpt2-tasks]\ntasks: [ioi]\n"
                           "entries: [{methods: [eap-ig-inputs, {id: eap-ig-inputs, args: {ig_steps: 9}}]}]")
    with pytest.raises(SweepSpecError, match="same record folder"):
        _expand(path)


def test_a_run_is_exactly_one_evaluate_command_line(tmp_path):
    path = _spec(tmp_path, """
version: 1
output_dir: out
models: [gpt2-tasks]
tasks: [mcqa]
options: {limit: 5, bootstrap: 0, threads: 2}
entries:
  - methods: [{id: eap-ig-inputs, ablation: mean, args: {ig_steps: 3}}]
    options: {attribution_examples: 7, device: cuda:0}
  - track: causal
    variables: [answer]
    methods: [das]
    options: {layers: [0, 2], save_featurizers: false}
""")
    circuit, causal = _expand(path).runs
    args = evaluate_namespace(circuit.argv())
    assert (args.track, args.method, args.task, args.model, args.level, args.ablation, args.method_arg, args.limit,
            args.bootstrap, args.attribution_examples, args.device, args.output_dir, args.seed) == (
        "circuit", "eap-ig-inputs", "mcqa", "gpt2-tasks", "edge", "mean", ["ig_steps=3"], 5, 0, 7, "cuda:0", "out", 0)
    assert (circuit.threads, circuit.gpus, causal.gpus) == (2, 1.0, 0.0)  # a CUDA run asks Ray for a GPU
    args = evaluate_namespace(causal.argv())
    assert (args.track, args.variable, args.layers, args.no_featurizers, args.batch_size) == (
        "causal", "answer", [0, 2], True, 32)  # unset options keep mibench evaluate's defaults


QUEUED = ROOT / "leaderboard" / "sweep-next.yaml"


def test_the_published_spec_covers_exactly_the_committed_records_with_seeds_for_random_methods():
    """leaderboard/sweep.yaml is what is published: every committed record is one of its runs and every seed-0 run
    has a committed record. sweep-next.yaml, when there is one, queues runs not published yet: none of its runs
    may be. In both, every method with randomness runs with at least three seeds."""
    expansion = _expand(PUBLISHED)
    runs = {r.identity for r in expansion.runs}
    queued_runs = _expand(QUEUED).runs if QUEUED.exists() else []
    queued = {r.identity for r in queued_runs}
    published = set()
    for path in (ROOT / "leaderboard" / "records").rglob("record.json"):
        record = json.loads(path.read_text())
        method, task = record["method"], record["task"]
        published.add((record.get("track", "circuit"), record["model"]["id"], task["id"], task.get("variable"),
                       method["id"], method.get("level"), method.get("ablation"), task["split"], record["seed"]))
    assert published <= runs
    assert {r for r in runs if r[-1] == 0} - published == set()
    assert not queued & runs
    seeds: dict[tuple, set[int]] = {}
    for run in [*expansion.runs, *queued_runs]:
        seeds.setdefault(run.identity[:-1], set()).add(run.seed)
    for identity, values in seeds.items():
        assert len(values) >= (3 if identity[4] in RANDOMIZED else 1), identity
    assert {identity[4] for identity, values in seeds.items() if len(values) >= 3} == RANDOMIZED


def test_a_causal_record_is_found_again_where_the_task_fixes_its_mix(tmp_path):
    """RAVEL scores each attribute on MIB's rebalanced mix of the split: the resume check hashes that mix (not the
    plain split), so a rerun skips a RAVEL record instead of making it again."""
    path = _spec(tmp_path, f"""
version: 1
output_dir: {tmp_path / 'out'}
models: [gpt2-medium-tasks]
tasks: [ravel]
options: {{limit: 120, bootstrap: 0}}
entries:
  - track: causal
    variables: [Continent]
    methods: [full-vector]
    options: {{layers: [0], save_featurizers: false}}
""")
    (run,) = _expand(path).runs
    made = run_one(run)  # what a sweep worker runs
    assert RecordIndex([run]).find(run) == made


def test_dry_run_prints_the_matrix_without_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # no Ray installed
    path = _spec(tmp_path, "version: 1\nmodels: [gpt2-tasks]\ntasks: [ioi, induction]\n"
                           "entries: [{track: causal, methods: [pca]}]")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "task induction has no causal variables" in out
    assert "output_token" in out and "output_position" in out and "2 runs: 2 to run" in out


def test_without_ray_the_command_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    path = _spec(tmp_path, f"version: 1\noutput_dir: {tmp_path}\nmodels: [gpt2-tasks]\ntasks: [ioi]\n"
                           "entries: [{methods: [random]}]")
    assert main(["sweep", str(path)]) == 2
    assert 'pip install "mibench[sweep]"' in capsys.readouterr().err


def test_a_worker_keeps_only_the_model_it_loaded_last():
    from mibench.models import loading

    loading.keep_loaded_models()
    try:
        first = loading.load_model("gpt2-tasks")
        assert loading.load_model("gpt2-tasks") is first
        other = loading.load_model("gpt2-tasks", dtype="float64")
        assert other is not first and loading.load_model("gpt2-tasks") is not first  # one model kept at a time
    finally:
        loading.keep_loaded_models(False)


# ------------------------------------------------------------------------------------------- local Ray
SMALL = """
version: 1
output_dir: {out}
models: [gpt2-tasks]
tasks: [ioi, mcqa]
options: {{limit: 4, attribution_examples: 4, bootstrap: 10, batch_size: 4}}
entries:
  - methods: [random, eap, {{id: eap, level: node}}]
"""
FAILING = """
  - name: broken
    tasks: [ioi]
    methods: [{id: random, seeds: [5]}]
    options: {counterfactual: no_such_kind}
"""


def _records(out: Path) -> dict[str, dict]:
    return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.rglob("record.json"))}


def _scores(record: dict) -> dict:
    metrics = record["metrics"]
    return {"cpr": metrics["cpr"], "cmd": metrics["cmd"], "cpr_stderr": metrics["cpr_stderr"],
            "signed": metrics["signed"]["faithfulness"], "absolute": metrics["absolute"]["faithfulness"],
            "baseline": metrics["baseline"]["faithfulness"], "data_hash": record["task"]["data_hash"]}


@pytest.mark.slow
def test_local_ray_sweep_matches_evaluate_resumes_and_reports_a_failing_run(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    import torch

    monkeypatch.chdir(tmp_path)  # the spec's relative output_dir means the same on the workers
    out = tmp_path / "sweep"
    good = _spec(tmp_path, SMALL.format(out="sweep"), "good.yaml")
    full = _spec(tmp_path, SMALL.format(out="sweep") + FAILING, "full.yaml")
    assert main(["sweep", str(full), "--cpus", "2", "--quiet", "--retries", "0"]) == 1  # one run failed
    text = capsys.readouterr().out
    assert "skipped (entries.0) eap node: the eap card has no node level" in text
    assert "no counterfactual 'no_such_kind'" in text and "4 done, 1 failed" in text
    swept = _records(out)
    assert len(swept) == 4

    # the same runs one by one with `mibench evaluate` (one torch thread, as each sweep run had)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for run in _expand(good).runs:
            argv = run.argv()[1:]
            argv[argv.index("--output-dir") + 1] = str(tmp_path / "alone")
            assert main([*argv, "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    alone = _records(tmp_path / "alone")
    assert alone.keys() == swept.keys()
    for name, record in swept.items():
        assert _scores(record) == _scores(alone[name]), name
        assert record["invocation"][:2] == ["mibench", "evaluate"]
    capsys.readouterr()

    # a second invocation finds every record (no Ray needed) and leaves them untouched
    assert main(["sweep", str(good), "--quiet"]) == 0
    assert "4 skipped" in capsys.readouterr().out
    assert _records(out) == swept
    # --force runs them again
    assert main(["sweep", str(good), "--quiet", "--force", "--dry-run"]) == 0
    assert "4 runs: 4 to run, 0 with a record already" in capsys.readouterr().out


def _seeded_ioi_spec(tmp_path, out: Path, method: str, runs: int, *, limit: int) -> Path:
    """A spec of ``runs`` quick runs of ``method`` on IOI with gpt2-tasks, one per seed, writing into ``out``."""
    return _spec(tmp_path, f"""
version: 1
output_dir: {out}
models: [gpt2-tasks]
tasks: [ioi]
options: {{limit: {limit}, bootstrap: 10, batch_size: 4}}
entries: [{{methods: [{{id: {method}, seeds: {list(range(runs))}}}]}}]
""")


@pytest.mark.slow
def test_an_interrupted_sweep_leaves_no_partial_record_and_a_rerun_completes_it(tmp_path):
    pytest.importorskip("ray")
    # enough runs that Ctrl-C lands mid-way: a worker that keeps its model makes each later run ~0.3 s
    RUNS = 40
    out = tmp_path / "out"
    spec = _seeded_ioi_spec(tmp_path, out, "random", RUNS, limit=4)
    command = [sys.executable, "-m", "mibench", "sweep", str(spec), "--cpus", "1", "--quiet"]
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored: restore the
    # default so Ctrl-C reaches the sweep however the test suite itself was started.
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while not list(out.rglob("record.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the sweep ended before its first record:\n{proc.communicate()}"
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C while the other runs are queued or running
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"{stdout}\n{stderr}"
    assert "interrupted" in stdout
    first = _records(out)  # every record on disk is complete JSON
    assert 1 <= len(first) < RUNS
    # nothing half-written outside the hidden staging folders of runs that were killed mid-way
    assert not [p for p in out.rglob("*.tmp") if not any(part.endswith(".partial") for part in p.parts)]

    assert main(["sweep", str(spec), "--cpus", "1", "--quiet"]) == 0
    final = _records(out)
    assert sorted(final) == sorted(f"ioi/gpt2-tasks/random_edge_patching_test_seed{s}/record.json" for s in range(RUNS))
    assert all(final[name] == record for name, record in first.items())  # finished runs were not redone
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.tmp"))  # the killed runs' staging is gone


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), e.g. the Ray processes an embedded ray.init() started."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Ray's worker processes through /proc")
def test_a_killed_worker_leaves_no_partial_record_and_its_run_is_retried(tmp_path):
    pytest.importorskip("ray")
    RUNS = 5
    out = tmp_path / "out"
    spec = _seeded_ioi_spec(tmp_path, out, "eap-ig-inputs", RUNS, limit=8)
    command = [sys.executable, "-m", "mibench", "sweep", str(spec), "--cpus", "1", "--retries", "1"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        if list(out.rglob("record.json")):  # the worker has its model loaded and is on a later run
            # a worker running a task is titled ray::<the run's label> (idle ones ray::IDLE)
            busy = [pid for pid in _descendants(proc.pid) if _cmdline(pid).startswith("ray::gpt2-tasks ioi")]
            if busy:
                killed = busy[0]
                os.kill(killed, signal.SIGKILL)  # as the kernel's OOM killer would
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, f"no busy worker was found to kill:\n{stdout}\n{stderr}"
    assert proc.returncode == 0, f"{stdout}\n{stderr}"  # the killed run was retried and finished
    final = _records(out)
    assert sorted(final) == sorted(f"ioi/gpt2-tasks/eap-ig-inputs_edge_patching_test_seed{s}/record.json"
                                   for s in range(RUNS))
    assert not list(out.rglob("*.tmp"))  # nothing half-written beside the records
    # the killed run's staging folder is removed by a later run in the same folder, or stays hidden; a rerun
    # skips every run and cleans up
    assert main(["sweep", str(spec), "--cpus", "1", "--quiet"]) == 0
    assert _records(out) == final
    assert not list(out.rglob("*.partial"))


def test_runs_go_to_ray_in_the_spec_order_grouped_by_model_within_an_entry(tmp_path):
    from mibench.sweep.runner import submission_order

    path = _spec(tmp_path, f"""
version: 1
output_dir: {tmp_path}
tasks: [ioi]
entries:
  - {{name: first, models: [llama-tasks, gpt2-tasks], methods: [random, eap]}}
  - {{name: second, models: [gpt2-tasks], tasks: [mcqa], methods: [random]}}
""")
    runs = _expand(path).runs
    order = [(runs[i].entry, runs[i].model, runs[i].method) for i in submission_order(runs)]
    assert order == [("first", "gpt2-tasks", "random"), ("first", "gpt2-tasks", "eap"),
                     ("first", "llama-tasks", "random"), ("first", "llama-tasks", "eap"),
                     ("second", "gpt2-tasks", "random")]  # its IOI twin in "first" is one run, run there


@pytest.mark.slow
def test_the_seed_of_a_run_reaches_the_method(tmp_path):
    """DAS through the sweep's run path: equal seeds give equal records, another seed another trained rotation."""
    from mibench.sweep.execute import run_one

    path = _spec(tmp_path, f"""
version: 1
output_dir: {tmp_path / 'a'}
models: [gpt2-tasks]
tasks: [mcqa]
options: {{limit: 8, train_examples: 16, bootstrap: 0, layers: [1], positions: [END], save_featurizers: false}}
entries: [{{track: causal, variables: [answer_pointer], methods: [{{id: das, args: {{epochs: 1}}, seeds: [0, 1]}}]}}]
""")
    seed0, seed1 = _expand(path).runs
    again = seed0.__class__(**{**seed0.__dict__, "output_dir": str(tmp_path / "b")})

    def trained(run) -> list:
        record = json.loads(run_one(run).read_text())
        return [site["train_loss"] for site in record["sites"]]

    first, other, repeat = trained(seed0), trained(seed1), trained(again)
    assert first == repeat
    assert first != other
