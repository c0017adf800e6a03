"""Leaderboard build: ranking per comparability key, exclusions, superseded records, formats, determinism."""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import shutil
import subprocess
import sys

import pytest

from mibench.circuits.scorer import SCORER_VERSION
from mibench.cli.leaderboard import add_arguments as leaderboard_arguments
from mibench.cli.leaderboard import run as run_leaderboard
from mibench.data.registry import get_card
from mibench.errors import MibenchError
from mibench.leaderboard import build_leaderboard, check_leaderboard, collect_leaderboard
from mibench.results.record import (
    CircuitMetrics,
    CircuitRecord,
    CurveRecord,
    EnvironmentInfo,
    MethodInfo,
    ModelInfo,
    ScorerInfo,
    TaskInfo,
    comparability_key,
    write_record,
)

FRACTIONS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
FAKE_PNG = b"\x89PNG\r\n\x1a\n" + b"not really an image"
OUTPUTS = ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "index.html")


def _curve(ranking: str, level: float) -> CurveRecord:
    return CurveRecord(ranking=ranking, fractions=FRACTIONS, nominal_sizes=[int(f * 1000) for f in FRACTIONS],
                       edge_counts=[float(int(f * 1000)) for f in FRACTIONS],
                       faithfulness=[min(1.0, level + f) for f in FRACTIONS[:-1]] + [1.0],
                       mean_logit_difference=[2.0] * len(FRACTIONS))


def make_record(method: str = "eap", task: str = "ioi", model: str = "gpt2-tasks", cpr: float = 0.5,
                cmd: float = 0.2, *, stderr: float | None = 0.01, ablation: str = "patching", level: str = "edge",
                split: str = "test", counterfactual: str | None = None, revision: str | None = None,
                created: str = "2025-06-01T12:00:00+00:00", eligible: bool = True, notes: tuple[str, ...] = (),
                scorer_version: str = SCORER_VERSION, task_version: str | None = None,
                weights: str | None = "sha256:0123456789abcdef", position_aware: bool = False,
                n_items: int = 1000) -> CircuitRecord:
    """A valid circuit record with made-up numbers (nothing is run)."""
    try:
        card = get_card(task)
        version, default_cf = str(card.version), card.default_counterfactual
    except MibenchError:
        version, default_cf = "1.0", "default"
    task_info = TaskInfo(id=task, version=task_version or version, split=split,
                         counterfactual=counterfactual or default_cf, n_examples=500, data_hash="sha256:0123456789abcdef")
    model_info = ModelInfo(id=model, revision=revision, dtype="float32", family="gpt2", n_layers=3, n_heads=6,
                           d_model=192, n_edges=n_items, weights_sha256=weights)
    scorer = ScorerInfo(version=scorer_version, fractions=FRACTIONS, bootstrap_replicates=1000)
    metrics = CircuitMetrics(cpr=cpr, cpr_stderr=stderr, cmd=cmd, cmd_stderr=stderr, full_logit_difference=2.0,
                             empty_logit_difference=-1.0, n_items=n_items, signed=_curve("signed", cpr / 2),
                             absolute=_curve("absolute", 1 - cmd))
    return CircuitRecord(
        created=created, invocation=["mibench", "evaluate"],
        environment=EnvironmentInfo(mibench_version="0.0.0", git_commit=None, python="3.12", packages={},
                                    hardware={}),
        model=model_info, task=task_info,
        method=MethodInfo(id=method, level=level, ablation=ablation, position_aware=position_aware),
        scorer=scorer, seed=0, timings={"evaluation": 1.0}, metrics=metrics,
        comparability_key=comparability_key(task_info, model_info, scorer, level, position_aware=position_aware,
                                            n_items=n_items),
        leaderboard_eligible=eligible, eligibility_notes=list(notes),
    )


def save(records_dir, record: CircuitRecord, run: str | None = None, plot: bool = True):
    """Write ``record`` (and a stand-in plot) where ``mibench evaluate`` would put it."""
    run = run or f"{record.method.id}_{record.method.level}_{record.method.ablation}_{record.task.split}_seed0"
    folder = records_dir / record.task.id / record.model.id.replace("/", "__") / run
    folder.mkdir(parents=True, exist_ok=True)
    if plot:
        (folder / "faithfulness.png").write_bytes(FAKE_PNG + run.encode())
        record.artifacts["plot"] = "faithfulness.png"
    write_record(record, folder / "record.json")
    return folder / "record.json"


@pytest.fixture
def records(tmp_path):
    """Two methods on three (task, model) cells, plus a random baseline on one."""
    root = tmp_path / "records"
    for method, shift in (("eap", 0.0), ("eap-ig-inputs", 0.1)):
        save(root, make_record(method, "ioi", "gpt2-tasks", cpr=0.6 + shift, cmd=0.3 - shift))
        save(root, make_record(method, "mcqa", "gpt2-tasks", cpr=0.9 - shift, cmd=0.1 + shift))
        save(root, make_record(method, "ioi", "llama-tasks", cpr=0.4 + shift, cmd=0.5 - shift, stderr=None))
    save(root, make_record("random", "ioi", "gpt2-tasks", cpr=0.01, cmd=0.75), plot=False)
    return root


def _outputs(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tables_rank_per_column_and_mark_the_best(records, tmp_path):
    out = tmp_path / "site"
    result = build_leaderboard(records, out)
    board = result.leaderboard
    assert len(board.tables) == 1 and board.n_ranked == 7
    table = board.tables[0]
    assert [c.label for c in table.columns] == ["ioi / gpt2-tasks", "ioi / llama-tasks", "mcqa / gpt2-tasks"]
    assert table.methods == ["eap", "eap-ig-inputs", "random"]
    cpr, cmd = table.track.metrics
    assert table.best(cpr, table.columns[0]) == {"eap-ig-inputs"}  # higher CPR wins
    assert table.best(cmd, table.columns[2]) == {"eap"}  # lower CMD wins

    markdown = (out / "leaderboard.md").read_text()
    # no per-example files here: a non-top cell is compared by the normal approximation (§), one without a
    # standard error (llama-tasks) cannot be tested and is not bold
    assert "| eap-ig-inputs | invariant | **0.700 ± 0.010** | **0.500** | 0.800 ± 0.010 § |" in markdown
    assert "| eap | invariant | 0.600 ± 0.010 § | 0.400 § |" in markdown
    assert "| random | invariant | 0.010 ± 0.010 § |  |  |" in markdown
    assert "| method | positions | ioi / gpt2-tasks |" in markdown
    assert "### CPR (higher is better)" in markdown and "### CMD (lower is better)" in markdown
    assert "ioi@2|test|s2_io_flip|scorer@" in markdown

    latex = (out / "leaderboard.tex").read_text()
    assert r"\textbf{0.700 $\pm$ 0.010}" in latex and r"ioi / gpt2-tasks" in latex and r"eap-ig-inputs" in latex
    assert r"\begin{tabular}{llrrr}" in latex and "Positions" in latex

    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert len(rows) == 14  # 7 ranked records x 2 metrics
    best = {(r["method"], r["task"], r["model"]) for r in rows if r["metric"] == "CPR" and r["best"] == "true"}
    assert best == {("eap-ig-inputs", "ioi", "gpt2-tasks"), ("eap-ig-inputs", "ioi", "llama-tasks"),
                    ("eap", "mcqa", "gpt2-tasks")}
    assert float(next(r for r in rows if r["method"] == "random" and r["metric"] == "CMD")["value"]) == 0.75

    page = (out / "index.html").read_text()
    assert page.count('<table class="sortable">') == 2 and "addEventListener" in page
    assert "http://" not in page and "https://" not in page  # works offline: no external assets
    plots = sorted((out / "plots").iterdir())
    assert len(plots) == 6  # the random baseline's record has no plot
    for plot in plots:
        assert f'src="plots/{plot.name}"' in page and f"(plots/{plot.name})" in markdown
    assert {p.read_bytes()[:8] for p in plots} == {FAKE_PNG[:8]}


def test_build_is_byte_identical_and_independent_of_where_records_live(records, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    build_leaderboard(records, first)
    moved = shutil.copytree(records, tmp_path / "elsewhere" / "deeper" / "records")
    build_leaderboard(moved, second)
    assert _outputs(first) == _outputs(second)
    assert set(_outputs(first)) >= set(OUTPUTS)
    again = build_leaderboard(records, first)
    assert again.written == [] and again.removed == []  # nothing changed, nothing rewritten
    for name in OUTPUTS:
        assert str(tmp_path) not in (first / name).read_text()


def test_ineligible_stale_and_inconsistent_records_are_listed_with_reasons(tmp_path):
    root = tmp_path / "records"
    save(root, make_record("eap", cpr=0.5))
    save(root, make_record("limited", eligible=False, notes=("evaluated on the first 10 examples only (--limit)",)))
    save(root, make_record("old-scorer", scorer_version="0.1"))
    save(root, make_record("old-task", task_version="0.3"))
    save(root, make_record("elsewhere", task="not-a-task"))
    tampered = make_record("tampered")
    tampered.comparability_key = tampered.comparability_key.replace("gpt2-tasks", "gpt2")
    save(root, tampered)
    out = tmp_path / "site"
    board = build_leaderboard(root, out).leaderboard
    assert board.tables[0].methods == ["eap"]
    reasons = {e.method: "; ".join(e.reasons) for e in board.excluded}
    assert reasons["limited"] == "not leaderboard-eligible: evaluated on the first 10 examples only (--limit)"
    assert reasons["old-scorer"].startswith(f"stale: scored with scorer 0.1; the current scorer is {SCORER_VERSION}")
    assert "stale: task ioi version 0.3" in reasons["old-task"]
    assert "'not-a-task' is not registered" in reasons["elsewhere"]
    assert "does not match the record's own fields" in reasons["tampered"]
    markdown = (out / "leaderboard.md").read_text()
    assert "## Not ranked" in markdown and "--limit" in markdown
    assert len(list((out / "plots").iterdir())) == 1  # only the ranked record's plot is published


def test_newest_record_wins_a_cell_and_the_other_is_superseded(tmp_path):
    root = tmp_path / "records"
    save(root, make_record("eap", cpr=0.3, created="2025-05-01T00:00:00+00:00"), run="old")
    save(root, make_record("eap", cpr=0.4, created="2025-06-01T00:00:00+00:00"), run="new")
    # a newer record that may not be ranked does not displace the older eligible one
    save(root, make_record("eap", cpr=0.9, created="2025-07-01T00:00:00+00:00", eligible=False, notes=("x",)),
         run="newest-ineligible")
    # the same method with another ablation is another row, not a duplicate
    save(root, make_record("eap", cpr=0.2, ablation="mean"), run="mean")
    board = collect_leaderboard(root)
    table = board.tables[0]
    assert table.methods == ["eap", "eap (mean)"]
    assert table.cell("eap", table.columns[0]).values["CPR"][0] == 0.4
    superseded = [e for e in board.excluded if any(r.startswith("superseded") for r in e.reasons)]
    assert [e.record for e in superseded] == ["ioi/gpt2-tasks/old/record.json"]
    assert superseded[0].reasons == ["superseded by ioi/gpt2-tasks/new/record.json (created 2025-06-01T00:00:00+00:00)"]


def test_comparability_keys_are_never_mixed(tmp_path):
    root = tmp_path / "records"
    save(root, make_record("eap", counterfactual="s2_io_flip"), run="a")
    save(root, make_record("eap", counterfactual="abc"), run="b")  # same task and model, other key
    save(root, make_record("eap", revision="abc123"), run="c")
    save(root, make_record("eap", split="private_test"), run="d")  # other split: other table
    save(root, make_record("eap", level="node"), run="e")  # other level: other table
    save(root, make_record("eap", weights="sha256:fedcba9876543210"), run="f")  # retrained: other weights
    save(root, make_record("peap", position_aware=True, n_items=9644), run="g")  # other graph
    board = collect_leaderboard(root)
    assert [t.title for t in board.tables] == [
        f"edge level, private_test split, scorer {SCORER_VERSION}",
        f"edge level, test split, scorer {SCORER_VERSION}",
        f"edge level, test split, scorer {SCORER_VERSION}, position-aware graph",
        f"node level, test split, scorer {SCORER_VERSION}",
    ]
    columns = board.tables[1].columns
    assert len(columns) == 4 and len({c.key for c in columns}) == 4
    assert len({c.label for c in columns}) == 4  # labels say what differs
    assert any("counterfactual abc" in c.label for c in columns)
    assert any("weights sha256:fedcba9876543210" in c.label for c in columns)
    (positional,) = board.tables[2].columns
    assert positional.key.endswith("|graph@positional:9644") and "position-aware graph of 9644 edges" in positional.details
    for table in board.tables:
        for (method, key), entry in table.cells.items():
            assert entry.column_key == key


def test_unreadable_records_and_other_tracks_are_reported_not_fatal(records, tmp_path):
    (records / "broken").mkdir()
    (records / "broken" / "record.json").write_text("{not json")
    (records / "invalid").mkdir()
    (records / "invalid" / "record.json").write_text(json.dumps({"track": "circuit", "created": "x"}))
    (records / "causal").mkdir()
    (records / "causal" / "record.json").write_text(json.dumps({"track": "causal", "metrics": {"iia": 0.9}}))
    (records / "future").mkdir()
    (records / "future" / "record.json").write_text(json.dumps({"track": "planted", "auroc": 0.9}))
    out = tmp_path / "site"
    board = build_leaderboard(records, out).leaderboard
    assert board.n_ranked == 7
    unreadable = dict(board.unreadable)
    assert unreadable["broken/record.json"].startswith("cannot read results record: Expecting property name")
    assert "field 'invocation': Field required" in unreadable["invalid/record.json"]
    assert str(tmp_path) not in unreadable["invalid/record.json"]
    assert "invalid results record" in unreadable["causal/record.json"]  # the causal track reads and validates it
    note = "track 'planted' has no leaderboard table in this version; record skipped"
    assert board.skipped == [("future/record.json", note)]
    markdown = (out / "leaderboard.md").read_text()
    assert "## Unreadable records" in markdown and "## Records of other tracks" in markdown


def test_plot_names_that_leave_the_record_folder_are_ignored(tmp_path):
    root = tmp_path / "records"
    (tmp_path / "secret.png").write_bytes(b"secret")
    record = make_record()
    path = save(root, record, plot=False)
    record.artifacts["plot"] = "../../../../secret.png"
    write_record(record, path)
    board = collect_leaderboard(root)
    assert board.n_ranked == 1 and board.plots == {}


def test_empty_records_folder_gives_empty_tables_and_missing_folder_is_an_error(tmp_path):
    (tmp_path / "records").mkdir()
    build_leaderboard(tmp_path / "records", tmp_path / "site")
    assert "No ranked records yet." in (tmp_path / "site" / "leaderboard.md").read_text()
    with pytest.raises(MibenchError, match="does not exist"):
        build_leaderboard(tmp_path / "nope", tmp_path / "site")


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    leaderboard_arguments(parser)
    return run_leaderboard(parser.parse_args(list(argv)))


def test_check_mode_detects_out_of_date_files(records, tmp_path, capsys):
    out = tmp_path / "site"
    args = ("build", "--records", str(records), "--out", str(out))
    assert _cli(*args, "--check") == 1
    assert "leaderboard.md: missing" in capsys.readouterr().out
    assert _cli(*args) == 0
    assert not (out / "leaderboard.md").with_suffix(".md.tmp").exists()
    assert _cli(*args, "--check") == 0
    assert check_leaderboard(records, out) == []

    save(records, make_record("new-method", cpr=0.99))
    problems = check_leaderboard(records, out)
    assert f"{out / 'leaderboard.md'}: differs from a fresh build" in problems
    assert any(p.startswith(str(out / "plots")) and p.endswith("missing") for p in problems)
    assert _cli(*args) == 0 and check_leaderboard(records, out) == []

    stray = out / "plots" / "old.png"
    stray.write_bytes(FAKE_PNG)
    assert check_leaderboard(records, out) == [f"{stray}: no ranked record uses this plot any more"]
    result = build_leaderboard(records, out)
    assert result.removed == [stray] and not stray.exists()
    assert (out / "README.md").exists() is False  # nothing else is created or touched


def test_command_module_is_torch_free():
    code = ("import sys, mibench.cli, mibench.pipeline, mibench.leaderboard, mibench.submissions.card, "
            "mibench.submissions.models; assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------ causal track
def make_causal_record(method: str = "das", task: str = "mcqa", variable: str = "answer_pointer",
                       model: str = "gpt2-tasks", average: float | None = 0.6, best: float = 0.8, *,
                       missing: tuple[str, ...] = (), eligible: bool = True):
    """A valid causal record with made-up numbers (nothing is run)."""
    from mibench.causal.iia import CHECKER
    from mibench.causal.iia import SCORER_VERSION as CAUSAL_SCORER
    from mibench.results.causal_record import (
        CausalMethodInfo,
        CausalMetrics,
        CausalRecord,
        CausalScorerInfo,
        CausalTaskInfo,
        LayerBest,
        causal_comparability_key,
    )

    card = get_card(task)
    task_info = CausalTaskInfo(id=task, version=str(card.version), split="test", variable=variable,
                               counterfactuals=list(card.causal.counterfactuals), positions=list(card.causal.positions),
                               layers=[0, 1], test_pairs={k: 100 for k in card.causal.counterfactuals}, train_pairs=300,
                               train_split="train", data_hash="sha256:0123456789abcdef")
    model_info = ModelInfo(id=model, revision=None, dtype="float32", family="gpt2", n_layers=2, n_heads=6,
                           d_model=192, n_edges=1000)
    scorer = CausalScorerInfo(version=CAUSAL_SCORER, bootstrap_replicates=1000, checker=CHECKER)
    metrics = CausalMetrics(average=average, average_stderr=None if average is None else 0.01, best=best,
                            best_stderr=0.02, per_layer=[LayerBest(layer=1, iia=best, role="END")],
                            missing_sites=list(missing))
    return CausalRecord(
        created="2025-06-01T12:00:00+00:00", invocation=["mibench", "evaluate", "--track", "causal"],
        environment=EnvironmentInfo(mibench_version="0.0.0", git_commit=None, python="3.12", packages={},
                                    hardware={}),
        model=model_info, task=task_info, method=CausalMethodInfo(id=method), scorer=scorer, seed=0,
        timings={"sites": 1.0}, sites=[], metrics=metrics,
        comparability_key=causal_comparability_key(task_info, model_info, scorer),
        leaderboard_eligible=eligible, eligibility_notes=[] if eligible else ["evaluated on 10 examples (--limit)"],
    )


def save_causal(records_dir, record) -> None:
    folder = (records_dir / record.task.id / record.model.id /
              f"causal_{record.task.variable}_{record.method.id}_test_seed0")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "iia_heatmap.png").write_bytes(FAKE_PNG + str(folder).encode())
    record.artifacts["plot"] = "iia_heatmap.png"
    write_record(record, folder / "record.json")


def test_causal_records_get_their_own_table_with_one_column_per_variable(records, tmp_path):
    save_causal(records, make_causal_record("das", average=0.7, best=0.9))
    save_causal(records, make_causal_record("full-vector", average=0.3, best=0.33))
    save_causal(records, make_causal_record("das", variable="answer", average=0.8, best=1.0))
    save_causal(records, make_causal_record("full-vector", variable="answer", average=0.8, best=1.0))
    save_causal(records, make_causal_record("submission:partial", average=None, best=0.95,
                                            missing=("L0/END", "L0/correct_symbol", "L0/correct_symbol_period")))
    save_causal(records, make_causal_record("dbm", eligible=False))
    out = tmp_path / "site"
    board = build_leaderboard(records, out).leaderboard
    circuit, causal = sorted(board.tables, key=lambda t: t.track.name != "circuit")
    assert circuit.track.name == "circuit" and causal.track.name == "causal"
    assert [c.label for c in causal.columns] == ["mcqa/answer / gpt2-tasks", "mcqa/answer_pointer / gpt2-tasks"]
    assert causal.methods == ["das", "full-vector", "submission:partial"]
    average, best = causal.track.metrics
    pointer = causal.columns[1]
    assert causal.best(average, pointer) == {"das"}  # a partial submission has no average to rank
    assert causal.best(best, pointer) == {"submission:partial"}  # but competes for "best", as in MIB
    assert causal.best(best, causal.columns[0]) == {"das", "full-vector"}  # ties share the mark
    assert [e.method for e in board.excluded] == ["dbm"]

    markdown = (out / "leaderboard.md").read_text()
    assert "## Causal variable localization: residual stream, test split" in markdown
    assert "### IIA average (higher is better)" in markdown and "### IIA best (higher is better)" in markdown
    assert "| submission:partial |  | n/a |" in markdown
    assert "IIA heatmaps (layer x token position):" in markdown
    html = (out / "index.html").read_text()
    assert "<h3>IIA heatmaps (layer x token position)</h3>" in html and "<h3>Faithfulness curves</h3>" in html
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {r["track"] for r in rows} == {"circuit", "causal"}
    assert check_leaderboard(records, out) == []


def test_position_aware_methods_get_a_table_of_their_own_that_says_why(records, tmp_path):
    peap = make_record("peap", "ioi", "gpt2-tasks", cpr=0.9, cmd=0.05, position_aware=True, n_items=4822)
    save(records, peap)
    board = build_leaderboard(records, tmp_path / "site").leaderboard
    invariant, aware = board.tables
    assert "peap" not in invariant.methods and invariant.note == ""
    assert aware.methods == ["peap"] and aware.row_value("peap") == "aware"
    assert aware.title.endswith("position-aware graph") and "1 % of 4,822 edges is not 1 % of 496" in aware.note
    cpr = invariant.track.metrics[0]
    assert invariant.best(cpr, invariant.columns[0]) == {"eap-ig-inputs"}  # peap's 0.9 is not ranked against it
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "| peap | aware | **0.900 ± 0.010** |" in markdown and "| eap-ig-inputs | invariant | **0.700" in markdown
    assert markdown.count("1 % of 4,822 edges is not 1 % of 496") == 1
    assert "1 \\% of 4,822 edges" in (tmp_path / "site" / "leaderboard.tex").read_text()
    assert "1 % of 4,822 edges" in (tmp_path / "site" / "index.html").read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    assert {r["table"] for r in rows if r["method"] == "peap"} == {aware.title}


def test_records_with_a_known_circuit_also_rank_by_auroc(records, tmp_path):
    from mibench.results.record import GroundTruthRecord

    def truth(auroc, full):
        return GroundTruthRecord(file="ground_truth/ioi.json", n_true=10, n_edges=100, auroc=auroc,
                                 fpr=[0.0, 1.0], tpr=[0.0, 1.0], auroc_full=full, curve_fpr=[0, 1], curve_tpr=[0, 1])

    for method, auroc, full in (("eap", 0.7, 0.8), ("exact", 0.95, 0.99)):
        record = make_record(method, "ioi", "planted-ioi", cpr=0.5, cmd=0.2)
        record.metrics = record.metrics.model_copy(update={"ground_truth": truth(auroc, full)})
        save(records, record)
    board = build_leaderboard(records, tmp_path / "site").leaderboard
    tables = {t.track.name: t for t in board.tables}
    auroc_table = tables["ground_truth"]
    assert auroc_table.methods == ["eap", "exact"] and [c.label for c in auroc_table.columns] == ["ioi / planted-ioi"]
    assert auroc_table.best(auroc_table.track.metrics[0], auroc_table.columns[0]) == {"exact"}
    assert {"eap", "exact"} <= set(tables["circuit"].methods)  # the same records still rank by CPR/CMD
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "## Circuit localization against known circuits" in markdown and "| exact | invariant | **0.950** |" in markdown


def test_republishing_records_does_not_mark_the_checkout_modified(tmp_path):
    """Republishing (mibench sweep) overwrites committed records run by run; only code and data changes make a checkout dirty."""
    from mibench.leaderboard.build import PLOTS_DIR, TABLE_FILES
    from mibench.results.environment import OUTPUT_PATHS, checkout_commit

    assert {f"leaderboard/{name}" for name in (*TABLE_FILES, PLOTS_DIR)} <= set(OUTPUT_PATHS)  # what build writes

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "leaderboard" / "records").mkdir(parents=True)
    (tmp_path / "leaderboard" / "records" / "record.json").write_text("{}")
    (tmp_path / "leaderboard" / "leaderboard.md").write_text("# tables\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "files")
    clean = checkout_commit(tmp_path)
    assert clean and not clean.endswith("+dirty")
    (tmp_path / "leaderboard" / "records" / "record.json").write_text('{"new": 1}')
    (tmp_path / "leaderboard" / "leaderboard.md").write_text("# tables, rebuilt by the first track\n")
    assert checkout_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert checkout_commit(tmp_path) == clean + "+dirty"


def test_records_that_differ_only_by_seed_share_a_cell_with_mean_and_between_seed_sd(tmp_path):
    """Three seeds of one method fold into one cell: mean, mean bootstrap stderr, seed sd and n, in every format."""
    import statistics

    cprs, errors = [0.2, 0.4, 0.9], [0.01, 0.02, 0.03]
    for seed, (cpr, err) in enumerate(zip(cprs, errors)):
        record = make_record("random", cpr=cpr, stderr=err).model_copy(update={"seed": seed})
        save(tmp_path / "records", record, run=f"random_edge_patching_test_seed{seed}")
    save(tmp_path / "records", make_record("eap", cpr=0.6))
    board = collect_leaderboard(tmp_path / "records")
    (table,) = board.tables
    assert board.excluded == []  # seeds are not superseded by each other
    cell = table.cell("random", table.columns[0])
    mean, sd = statistics.fmean(cprs), statistics.stdev(cprs)
    assert cell.values["CPR"] == (pytest.approx(mean), pytest.approx(statistics.fmean(errors)))
    assert cell.spread["CPR"] == (pytest.approx(sd), 3) and cell.seeds == (0, 1, 2)
    assert cell.record.endswith("seed0/record.json")
    assert table.best(table.track.metrics[0], table.columns[0]) == {"eap"}  # 0.6 beats the 0.5 mean
    assert table.cell("eap", table.columns[0]).spread == {}  # one seed: shown as before
    build_leaderboard(tmp_path / "records", tmp_path / "out")
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert f"{mean:.3f} ± 0.020 (seed sd {sd:.3f}, n=3)" in markdown and "mean over k seeds" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    random_cpr = next(r for r in rows if r["method"] == "random" and r["metric"] == "CPR")
    assert random_cpr["n_seeds"] == "3" and float(random_cpr["seed_sd"]) == pytest.approx(sd)
    assert next(r for r in rows if r["method"] == "eap" and r["metric"] == "CPR")["n_seeds"] == "1"



def test_the_counts_are_records_not_cells_and_name_the_code_commits_that_made_them(records, tmp_path):
    """Three seeds fold into one cell but are three ranked records; a record drawn on by the AUROC table too
    counts once; the tables say which commit made how many records (a reader citing them can check it out)."""
    from mibench.results.record import GroundTruthRecord

    def made_by(record: CircuitRecord, commit: str | None) -> CircuitRecord:
        return record.model_copy(update={"environment": record.environment.model_copy(update={"git_commit": commit})})

    for seed in range(3):
        record = made_by(make_record("ugs", cpr=0.3 + seed / 10), "a" * 40).model_copy(update={"seed": seed})
        save(records, record, run=f"ugs_edge_patching_test_seed{seed}")
    planted = make_record("exact", "ioi", "planted-ioi")
    planted.metrics = planted.metrics.model_copy(update={"ground_truth": GroundTruthRecord(
        file="ground_truth/ioi.json", n_true=10, n_edges=100, auroc=0.9, fpr=[0.0, 1.0], tpr=[0.0, 1.0],
        auroc_full=0.9, curve_fpr=[0, 1], curve_tpr=[0, 1])})
    save(records, made_by(planted, "b" * 40 + "+dirty"))
    board = build_leaderboard(records, tmp_path / "site").leaderboard
    # the fixture's 7 records (made outside a git checkout), 3 seeds of ugs, 1 planted record in two tables
    assert board.n_ranked == 11 and board.n_cells == 7 + 1 + 2
    line = ("Code commits of the ranked records (records per commit): no git checkout (7), "
            f"{'a' * 12} (3), {'b' * 12}+dirty (1).")
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "Ranked records: 11 in 10 cells · not ranked: 0" in markdown and line in markdown
    assert line in (tmp_path / "site" / "leaderboard.tex").read_text()
    assert html.escape(line, quote=False) in (tmp_path / "site" / "index.html").read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    assert {r["code_commits"] for r in rows if r["method"] == "ugs"} == {"a" * 40}  # in full, for scripts


# ------------------------------------------------------------------------------------- degenerate points
def _degenerate(record: CircuitRecord, *, empty_below: int, inert_signed: bool) -> CircuitRecord:
    """``record`` on a small graph: no edge at the first ``empty_below`` sizes; a signed curve that recovers
    nothing below the whole model if ``inert_signed``."""
    metrics = record.metrics.model_copy(deep=True)
    for curve in (metrics.signed, metrics.absolute):
        curve.edge_counts = [0.0] * empty_below + curve.edge_counts[empty_below:]
        curve.faithfulness = [0.0] * empty_below + curve.faithfulness[empty_below:]
    if inert_signed:
        metrics.signed.faithfulness = [0.0, 0.0, 0.0, 0.004, -0.003, 0.0, 0.0, 0.0, 0.009, 1.0]
    return record.model_copy(update={"metrics": metrics})


def test_empty_sizes_and_curves_that_recover_nothing_are_flagged_in_every_format(tmp_path):
    import numpy as np

    from mibench.circuits.areas import area_weights, cpr

    closed = np.array([0.0] * 9 + [1.0])  # what the note quotes: CPR 0.250, CMD 0.749
    assert float(cpr(closed)) == 0.25 and float(area_weights() @ np.abs(1 - closed)) == pytest.approx(0.749)
    root = tmp_path / "records"
    save(root, _degenerate(make_record("nap", cpr=0.25, level="node"), empty_below=2, inert_signed=True))
    save(root, _degenerate(make_record("eap-ig", cpr=0.7, level="node"), empty_below=3, inert_signed=False))
    save(root, _degenerate(make_record("nap", "mcqa", cpr=0.6, level="node"), empty_below=0, inert_signed=False))
    board = collect_leaderboard(root)
    (table,) = board.tables
    ioi, mcqa = table.columns
    assert table.empty_sizes(ioi) == (0.001, 0.002)  # the sizes empty for *every* method of the column
    assert "empty circuit for every method at 0.1 %, 0.2 %" in table.column_note(ioi)
    assert table.empty_sizes(mcqa) == () and table.column_note(mcqa) == mcqa.details
    assert table.cell("nap", ioi).inert == ("CPR",) and table.cell("eap-ig", ioi).inert == ()
    assert table.cell("nap", mcqa).inert == ()

    build_leaderboard(root, tmp_path / "out")
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "0.250 ± 0.010 †" in markdown and "CMD 0.749" in markdown
    assert markdown.count("0.250 ± 0.010 †") == 1 and "empty circuit for every method at 0.1 %, 0.2 %" in markdown
    assert r"0.250 $\pm$ 0.010 $^\dagger$" in (tmp_path / "out" / "leaderboard.tex").read_text()
    html = (tmp_path / "out" / "index.html").read_text()
    assert "0.250 ± 0.010 †" in html and "recover nothing short of the whole model" in html
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    flagged = {(r["method"], r["task"], r["metric"]) for r in rows if r["recovers_nothing"] == "true"}
    assert flagged == {("nap", "ioi", "CPR")}


def test_folded_seeds_keep_only_the_flags_every_seed_has(tmp_path):
    root = tmp_path / "records"
    for seed, inert in enumerate((True, False)):
        record = _degenerate(make_record("random", cpr=0.25), empty_below=2 + seed, inert_signed=inert)
        save(root, record.model_copy(update={"seed": seed}), run=f"random_edge_patching_test_seed{seed}")
    (table,) = collect_leaderboard(root).tables
    cell = table.cell("random", table.columns[0])
    assert cell.seeds == (0, 1) and cell.inert == () and cell.empty_sizes == (0.001, 0.002)


def test_a_record_without_a_measurable_effect_is_marked_and_old_records_are_not_judged(tmp_path):
    root = tmp_path / "records"
    weak = make_record("eap", cpr=0.7)  # full - empty = 3.0
    weak.metrics.effect_stderr = 1.1  # 3.0 < 3 * 1.1
    strong = make_record("eap-ig", cpr=0.8)
    strong.metrics.effect_stderr = 0.9  # 3.0 >= 2.7
    save(root, weak)
    save(root, strong)
    save(root, make_record("random", cpr=0.3))  # no effect_stderr recorded: not judged
    (table,) = collect_leaderboard(root).tables
    column = table.columns[0]
    assert [m for m in table.methods if table.cell(m, column).no_effect] == ["eap"]
    build_leaderboard(root, tmp_path / "out")
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "0.700 ± 0.010 ‡" in markdown and "**0.800 ± 0.010**" in markdown and "within 3 bootstrap" in markdown
    assert r"$^\ddagger$" in (tmp_path / "out" / "leaderboard.tex").read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert {r["method"] for r in rows if r["no_measurable_effect"] == "true"} == {"eap"}
