"""Leaderboard comparison sections: PEAP against EAP at matched edge budgets, read from JSON files."""

from __future__ import annotations

import json

import pytest

from mibench.errors import MibenchError
from mibench.leaderboard import build_leaderboard, check_leaderboard, collect_leaderboard
from mibench.leaderboard.comparisons import MatchedBudget, PeapVsEap, PositionSumming, Scores, write_comparison
from tests.test_leaderboard import FRACTIONS, make_record, save


def comparison(task: str = "ioi") -> PeapVsEap:
    return PeapVsEap(task=task, model="gpt2-tasks", counterfactual="abc", attribution_examples=100, test_examples=500,
                     spans=["prefix", "END"], invariant_edges=496, positional_edges=4822,
                     eap=Scores(cpr=0.91, cpr_stderr=0.02, cmd=0.12, cmd_stderr=None),
                     peap=Scores(cpr=1.05, cpr_stderr=0.01, cmd=0.03, cmd_stderr=0.004),
                     matched=[MatchedBudget(fraction=f, edges=int(f * 496), eap=f, peap=f / 2) for f in FRACTIONS],
                     position_summing=[PositionSumming(fraction=0.01, k=4, cancellation=0.25, overestimation=0.5)])


@pytest.fixture
def site(tmp_path):
    records = tmp_path / "leaderboard" / "records"
    save(records, make_record("eap"))
    write_comparison(comparison(), tmp_path / "leaderboard" / "comparisons" / "peap_vs_eap__ioi.json")
    return tmp_path / "leaderboard"


def test_comparison_files_beside_the_records_become_a_section_in_every_format(site, tmp_path):
    out = tmp_path / "out"
    board = build_leaderboard(site / "records", out).leaderboard
    assert [c.task for c in board.comparisons] == ["ioi"]
    markdown = (out / "leaderboard.md").read_text()
    assert "## Position-aware against position-invariant circuits at matched edge budgets" in markdown
    assert "| EAP | position-invariant | 496 | 0.910 ± 0.020 | 0.120 |" in markdown
    assert "| PEAP | position-aware | 4,822 | 1.050 ± 0.010 | 0.030 ± 0.004 |" in markdown
    assert "| 10 % | 49 | 0.100 | 0.050 |" in markdown
    assert "| 1 % | 4 | 25.0 % | 50.0 % |" in markdown
    html = (out / "index.html").read_text()
    assert '<h2 id="comparisons">' in html and "<td>4,822</td>" in html
    assert r"10 \% & 49 & 0.100 & 0.050 \\" in (out / "leaderboard.tex").read_text()
    assert check_leaderboard(site / "records", out) == []
    # the section belongs to the comparisons folder: another folder (or none) changes the page
    assert collect_leaderboard(site / "records", tmp_path / "nowhere").comparisons == []
    assert check_leaderboard(site / "records", out, tmp_path / "nowhere") == [f"{out}/leaderboard.md: differs from "
                                                                              "a fresh build",
                                                                              f"{out}/leaderboard.tex: differs from "
                                                                              "a fresh build",
                                                                              f"{out}/index.html: differs from a "
                                                                              "fresh build"]


def test_without_comparison_files_there_is_no_section(tmp_path):
    records = tmp_path / "records"
    save(records, make_record("eap"))
    build_leaderboard(records, tmp_path / "out")
    assert "matched edge budgets" not in (tmp_path / "out" / "leaderboard.md").read_text()


def test_a_malformed_comparison_file_is_an_error_naming_the_file_and_field(site, tmp_path):
    path = site / "comparisons" / "peap_vs_eap__ioi.json"
    raw = json.loads(path.read_text())
    raw["matched"][2]["edges"] = "many"
    path.write_text(json.dumps(raw))
    with pytest.raises(MibenchError, match=r"peap_vs_eap__ioi\.json: invalid comparison: .*matched.*2.*edges"):
        collect_leaderboard(site / "records")
    path.write_text("{not json")
    with pytest.raises(MibenchError, match=r"peap_vs_eap__ioi\.json: cannot read comparison"):
        collect_leaderboard(site / "records")


def test_the_command_takes_a_comparisons_folder(site, tmp_path, capsys):
    from tests.test_leaderboard import _cli

    moved = tmp_path / "elsewhere"
    (site / "comparisons").rename(moved)
    out = tmp_path / "out"
    args = ("build", "--records", str(site / "records"), "--out", str(out))
    assert _cli(*args) == 0 and "matched edge budgets" not in (out / "leaderboard.md").read_text()
    assert _cli(*args, "--comparisons", str(moved), "--check") == 1
    assert _cli(*args, "--comparisons", str(moved)) == 0
    assert "matched edge budgets" in (out / "leaderboard.md").read_text()
    assert _cli(*args, "--comparisons", str(moved), "--check") == 0
    capsys.readouterr()
