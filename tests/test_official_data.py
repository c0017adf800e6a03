"""Official MIB data: conversion of each task's rows, filters, errors, offline behaviour, ARC tasks.

Nothing here touches the network: rows come from the hand-written fixtures in ``tests/fixtures/official``
(MIB's column names and nesting, laid out as ``<task>/<split>.jsonl`` like ``$MIBENCH_OFFICIAL_DATA_DIR``),
and the hub path is exercised with ``datasets.load_dataset`` replaced by a stub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from mibench.data import official
from mibench.data.official import (
    FORMATS,
    OFFICIAL_DATA_DIR_ENV,
    OfficialDataError,
    OfficialDataUnavailableError,
    load_official,
    option_symbol_span,
)
from mibench.data.registry import get_card, list_cards, load_task
from mibench.errors import MibenchError

FIXTURES = Path(__file__).parent / "fixtures" / "official"
IOI_KINDS = {
    "s2_io_flip", "s1_io_flip", "abc", "random_names", "s1_ioi_flip_s2_ioi_flip",
    "random_names_s1_ioi_flip", "random_names_s2_ioi_flip", "random_names_s1_ioi_flip_s2_ioi_flip",
}
ARITHMETIC_KINDS = {"random", "ones_op1", "ones_op2", "tens_op1", "tens_op2", "ones_carry", "tens_carry"}
CHOICE_KINDS = {"symbol", "answerPosition", "randomLetter", "answerPosition_randomLetter"}


def fixture(task: str, split: str = "test") -> Path:
    return FIXTURES / task / f"{split}.jsonl"


def load(task: str, **kwargs):
    return load_official(task, "test", data_files=fixture(task), **kwargs)


def rows(task: str) -> list[dict]:
    return [json.loads(line) for line in fixture(task).read_text().splitlines()]


def spans_text(prompt: str, spans: dict) -> dict[str, str]:
    return {role: prompt[start:end] for role, (start, end) in spans.items()}


@pytest.fixture(autouse=True)
def _no_local_dir(monkeypatch):
    monkeypatch.delenv(OFFICIAL_DATA_DIR_ENV, raising=False)


# -------------------------------------------------------------------------------------------- IOI
def test_ioi_rows_become_examples_with_mib_answers_and_roles():
    examples = load("ioi")
    assert len(examples) == 4
    first = examples[0]
    assert first.id == "ioi/official-test/000000"
    assert first.prompt == "When Mary and John went to the store, John gave an apple to"
    assert first.answer == " Mary"
    assert first.template == "When {name_A} and {name_B} went to the {place}, {name_C} gave an {object} to"
    assert first.spans["S1"] != first.spans["S2"]
    assert spans_text(first.prompt, first.spans) == {"IO": "Mary", "S1": "John", "S2": "John", "END": "to",
                                                   "N1": "Mary", "N2": "John"}
    assert first.spans["S2"][0] == first.prompt.rindex("John")
    assert first.variables == {"output_token": "Mary", "output_position": 0, "io": "Mary", "s": "John",
                               "names": ["Mary", "John"], "giver": "John"}
    assert set(first.counterfactuals) == IOI_KINDS


def test_ioi_counterfactual_answers_come_from_their_own_choices():
    first = load("ioi")[0]
    expected = {
        "s2_io_flip": " John", "s1_io_flip": " Mary", "s1_ioi_flip_s2_ioi_flip": " John", "abc": " Mary",
        "random_names": " Kate", "random_names_s1_ioi_flip": " Kate", "random_names_s2_ioi_flip": " Paul",
        "random_names_s1_ioi_flip_s2_ioi_flip": " Paul",
    }
    assert {kind: cf.answer for kind, cf in first.counterfactuals.items()} == expected
    flip = first.counterfactual("s2_io_flip")
    assert flip.prompt == "When Mary and John went to the store, Mary gave an apple to"
    assert spans_text(flip.prompt, flip.spans) == {"IO": "John", "S1": "Mary", "S2": "Mary", "END": "to",
                                                 "N1": "Mary", "N2": "John"}
    assert flip.variables == {"output_token": "John", "output_position": 1, "names": ["Mary", "John"],
                              "giver": "Mary"}
    abc = first.counterfactual("abc")  # no name repeats: there is no S2 to mark
    assert spans_text(abc.prompt, abc.spans) == {"IO": "Mary", "S1": "John", "END": "to", "N1": "Mary",
                                               "N2": "John"}
    assert "giver" not in abc.variables  # so the causal model refuses it rather than guess


def test_ioi_subject_first_and_whole_word_names():
    examples = load("ioi")
    second = examples[1]  # "Then, Michael and Sarah ...": the answer is the second-mentioned name
    assert second.answer == " Sarah" and second.variables["output_position"] == 1
    third = examples[2]  # IO "Anna", S "Ann": "Ann" must not match inside "Anna"
    assert third.prompt == "After Anna and Ann went to the school, Ann gave a ring to"
    assert spans_text(third.prompt, third.spans) == {"IO": "Anna", "S1": "Ann", "S2": "Ann", "END": "to",
                                                   "N1": "Anna", "N2": "Ann"}
    assert third.spans["S1"][0] == third.prompt.index(" Ann ") + 1


def test_ioi_counterfactual_without_choices_falls_back_to_the_kind_rule():
    row = rows("ioi")[3]
    assert row["s2_io_flip_counterfactual"]["choices"] is None
    fourth = load("ioi")[3]
    assert fourth.answer == " Daniel"
    assert fourth.counterfactual("s2_io_flip").answer == " Rachel"  # the subject
    assert fourth.counterfactual("s1_io_flip").answer == " Daniel"  # the indirect object
    assert fourth.counterfactual("s1_ioi_flip_s2_ioi_flip").answer == " Rachel"


# ------------------------------------------------------------------------------------- arithmetic
def test_arithmetic_keeps_two_digit_rows_and_answers_the_label():
    examples = load("arithmetic_addition")
    assert [e.id for e in examples] == [f"arithmetic_addition/official-test/{i:06d}" for i in (0, 1, 3, 4)]
    assert [e.answer for e in examples] == [" 68", " 55", " 85", " 24"]
    first = examples[0]
    assert first.prompt == "Q: How much is 23 plus 45? A:"
    assert spans_text(first.prompt, first.spans) == {"op1": "23", "op2": "45", "op2_last": "45", "END": "A:"}
    assert first.variables == {"op1_tens": 2, "op1_ones": 3, "op2_tens": 4, "op2_ones": 5, "ones_carry": 0,
                               "result": 68}
    assert set(first.counterfactuals) == ARITHMETIC_KINDS
    random_cf = first.counterfactual("random")
    assert random_cf.prompt == "Q: How much is 71 plus 16? A:" and random_cf.answer == " 87"
    carry = first.counterfactual("ones_carry")
    assert carry.answer == " 78" and carry.variables["ones_carry"] == 1
    assert spans_text(carry.prompt, carry.spans)["op2"] == "49"


def test_arithmetic_equal_operands_get_distinct_spans():
    equal = load("arithmetic_addition")[3]
    assert equal.prompt == "Q: How much is 12 plus 12? A:"
    assert equal.spans["op1"] != equal.spans["op2"]
    assert spans_text(equal.prompt, equal.spans)["op2"] == "12"


def test_arithmetic_subtraction_and_operator_check():
    examples = load("arithmetic_subtraction")
    assert [e.answer for e in examples] == [" 43", " 46"]
    assert examples[0].counterfactual("ones_carry").variables["ones_carry"] == 1  # 71 - 38 borrows
    with pytest.raises(OfficialDataError, match=r"row 0, column operator: expected '\+'"):
        load_official("arithmetic_addition", "test", data_files=fixture("arithmetic_subtraction"))


# ------------------------------------------------------------------------------ multiple choice
def test_mcqa_answer_is_the_label_as_a_continuation():
    examples = load("mcqa")
    assert [e.answer for e in examples] == [" C", " B", " A"]
    first = examples[0]
    assert first.prompt.startswith("Question: Coconuts are brown. What color are coconuts?\nA. red\n")
    assert spans_text(first.prompt, first.spans) == {
        "correct_symbol": "C", "correct_symbol_period": ".", "END": "Answer:", "color": "brown", "object": "Coconuts"}
    assert first.prompt[first.spans["correct_symbol"][0]:].startswith("C. brown\n")
    assert first.variables["answer_pointer"] == 2
    assert set(first.counterfactuals) == CHOICE_KINDS
    answers = {kind: cf.answer for kind, cf in first.counterfactuals.items()}
    assert answers == {"symbol": " 3", "answerPosition": " A", "randomLetter": " W",
                       "answerPosition_randomLetter": " Q"}
    moved = first.counterfactual("answerPosition_randomLetter")
    assert moved.prompt[moved.spans["correct_symbol"][0]:].startswith("Q. brown\n")
    assert first.counterfactual("symbol").variables["symbols"] == ["1", "2", "3", "4"]  # ints in MIB's data
    banana = examples[1]
    assert spans_text(banana.prompt, banana.spans)["object"] == "banana"
    assert banana.spans["object"][1] < banana.prompt.index("What")


def test_arc_keeps_four_choice_rows_and_marks_the_option_line():
    easy = load("arc_easy")
    assert [e.id.rsplit("/", 1)[1] for e in easy] == ["000000", "000001", "000003"]  # 3 and 5 choices dropped
    assert [e.answer for e in easy] == [" B", " A", " 1"]
    student = easy[1]  # the question itself starts with the word "A"
    assert student.prompt.startswith("Question: A student")
    assert student.spans["correct_symbol"][0] == student.prompt.index("\nA. gravity") + 1
    assert spans_text(student.prompt, student.spans) == {"correct_symbol": "A", "correct_symbol_period": ".",
                                                         "END": "Answer:"}
    assert set(student.counterfactuals) == CHOICE_KINDS
    cf = student.counterfactual("answerPosition")
    assert cf.answer == " C" and cf.prompt[cf.spans["correct_symbol"][0]:].startswith("C. gravity")
    challenge = load("arc_challenge")
    assert [e.answer for e in challenge] == [" A", " B"]
    assert challenge[1].counterfactual("randomLetter").answer == " M"


def test_option_symbol_span_ignores_letters_inside_the_question():
    prompt = "Question: Is A a vowel?\nA. yes\nB. no\nAnswer:"
    assert option_symbol_span(prompt, "A") == (prompt.index("\nA.") + 1, prompt.index("\nA.") + 2)
    assert option_symbol_span(prompt, "C") is None


# ------------------------------------------------------------------------------- n and sources
def test_n_counts_kept_examples():
    assert [e.answer for e in load("arc_easy", n=2)] == [" B", " A"]
    assert [e.answer for e in load("arithmetic_addition", n=3)] == [" 68", " 55", " 85"]  # past the 1-digit row
    assert load("ioi", n=0) == []
    with pytest.raises(ValueError):
        load("ioi", n=-1)


def test_data_files_by_split_and_missing_files():
    examples = load_official("ioi", "validation", data_files={"validation": str(fixture("ioi"))})
    assert examples[0].id == "ioi/official-validation/000000"
    with pytest.raises(OfficialDataError, match="no entry for split 'test'"):
        load_official("ioi", "test", data_files={"validation": str(fixture("ioi"))})
    with pytest.raises(OfficialDataError, match="not found: .*nope.jsonl"):
        load_official("ioi", "test", data_files=str(FIXTURES / "nope.jsonl"))


def test_parquet_copies_load_like_jsonl(tmp_path):
    path = tmp_path / "test.parquet"
    datasets.Dataset.from_list(rows("arc_easy")).to_parquet(str(path))
    assert load_official("arc_easy", "test", data_files=path) == load("arc_easy")


def test_unknown_task_and_split():
    with pytest.raises(MibenchError, match="did you mean 'ioi'"):
        load_official("iio", "test", data_files=fixture("ioi"))
    with pytest.raises(ValueError, match="unknown split"):
        load_official("ioi", "tset", data_files=fixture("ioi"))


def test_every_card_with_official_data_has_a_converter():
    for card in list_cards():
        if card.official is not None:
            assert card.id in FORMATS, card.id


# ----------------------------------------------------------------------------- malformed rows
def test_missing_column_names_dataset_row_and_column():
    path = FIXTURES / "malformed" / "ioi_missing_metadata.jsonl"
    with pytest.raises(OfficialDataError) as info:
        load_official("ioi", "test", data_files=path)
    message = str(info.value)
    assert str(path) in message and "mib-bench/ioi" in message
    assert "row 0, column metadata: missing" in message


@pytest.mark.parametrize("task,row_index,edit,column", [
    ("ioi", 1, lambda r: r["s2_io_flip_counterfactual"].pop("prompt"), "s2_io_flip_counterfactual.prompt"),
    ("ioi", 0, lambda r: r["metadata"].update(indirect_object="Zoe"), "prompt"),
    ("arithmetic_addition", 1, lambda r: r.pop("label"), "label"),
    ("mcqa", 2, lambda r: r.update(answerKey=7), "answerKey"),
    ("arc_easy", 1, lambda r: r["randomLetter_counterfactual"]["choices"].pop("text"),
     "randomLetter_counterfactual.choices.text"),
])
def test_malformed_rows_are_located(tmp_path, task, row_index, edit, column):
    data = rows(task)
    edit(data[row_index])
    path = tmp_path / f"{task}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    with pytest.raises(OfficialDataError) as info:
        load_official(task, "test", data_files=path)
    assert f"{path}" in str(info.value)
    assert f"row {row_index}, column {column}:" in str(info.value)


# ---------------------------------------------------------------------------------- hub path
class FakeHub:
    """Stands in for ``datasets.load_dataset``: records the call, returns fixture rows."""

    def __init__(self, task: str | None = None, error: Exception | None = None) -> None:
        self.task, self.error, self.calls = task, error, []

    def __call__(self, path, name=None, **kwargs):
        self.calls.append((path, name, kwargs))
        if self.error is not None:
            raise self.error
        return rows(self.task)


@pytest.fixture
def reachable_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(official, "_hub_unreachable", lambda: None)


def test_hub_path_uses_the_card(monkeypatch, reachable_hub):
    hub = FakeHub("ioi")
    monkeypatch.setattr(datasets, "load_dataset", hub)
    assert load_official("ioi", "validation", n=1)[0].answer == " Mary"
    assert hub.calls == [("mib-bench/ioi", None, {"split": "validation", "revision": None})]
    load_official("ioi", "private_test", revision="abc123")
    assert hub.calls[-1] == ("mib-bench/ioi_private_test", None, {"split": "test", "revision": "abc123"})


def test_hub_path_passes_the_config(monkeypatch, reachable_hub):
    hub = FakeHub("mcqa")
    monkeypatch.setattr(datasets, "load_dataset", hub)
    load_official("mcqa", "train")
    card = get_card("mcqa").official
    assert hub.calls == [(card.hf_repo, card.config, {"split": "train", "revision": card.revision})]


@pytest.mark.parametrize("split,error,expected", [
    ("test", ConnectionError("Couldn't reach 'mib-bench/arc_easy' on the Hub"), "Offline alternatives"),
    ("private_test", datasets.exceptions.DatasetNotFoundError("gated"), "gated"),
])
def test_hub_failures_become_one_clear_error(monkeypatch, reachable_hub, split, error, expected):
    monkeypatch.setattr(datasets, "load_dataset", FakeHub(error=error))
    with pytest.raises(OfficialDataUnavailableError, match=expected) as info:
        load_official("arc_easy", split)
    assert "mib-bench/arc_easy" in str(info.value)


def test_unreachable_hub_fails_before_the_hub_client_retries(monkeypatch, tmp_path):
    monkeypatch.setenv(OFFICIAL_DATA_DIR_ENV, str(tmp_path))  # set, but without an ioi/ folder
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(official, "_hub_unreachable", lambda: "huggingface.co:443: Name or service not known")
    hub = FakeHub("ioi")
    monkeypatch.setattr(datasets, "load_dataset", hub)
    with pytest.raises(OfficialDataUnavailableError, match="unreachable .*Name or service not known") as info:
        load_official("ioi", "test")
    assert hub.calls == []
    assert "holds no such file" in str(info.value) and "HF_DATASETS_OFFLINE=1" in str(info.value)


OFFLINE_SCRIPT = textwrap.dedent("""
    import sys
    from mibench.data.official import OfficialDataUnavailableError, load_official
    try:
        load_official(sys.argv[1], "test")
    except OfficialDataUnavailableError as exc:
        print(exc)
        sys.exit(3)
    sys.exit(0)
""")


@pytest.mark.parametrize("task,generated", [("ioi", True), ("arc_easy", False)])
def test_offline_mode_fails_fast_with_alternatives(tmp_path, task, generated):
    env = {k: v for k, v in os.environ.items() if k != OFFICIAL_DATA_DIR_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, task], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stdout + done.stderr
    message = done.stdout
    assert f"mib-bench/{task}" in message and "data_files=" in message and OFFICIAL_DATA_DIR_ENV in message
    assert ("procedurally generated" in message) is generated
    assert "Retrying" not in done.stderr
    assert elapsed < 60, f"offline failure took {elapsed:.0f}s"


# ------------------------------------------------------------------------------------ ARC tasks
def test_arc_task_loads_through_the_registry_from_the_official_data_dir(monkeypatch):
    monkeypatch.setenv(OFFICIAL_DATA_DIR_ENV, str(FIXTURES))
    task = load_task("arc_easy")
    assert task.card.default_counterfactual in task.card.counterfactuals
    examples = task.examples("test")
    assert [e.answer for e in examples] == [" B", " A", " 1"]
    assert all(set(task.card.counterfactuals) <= set(e.counterfactuals) for e in examples)
    assert all(set(e.spans) >= set(task.card.schema_roles) for e in examples)
    assert len(task.examples("test", 2)) == 2
    shuffled = task.examples("test", seed=5)
    assert sorted(e.id for e in shuffled) == sorted(e.id for e in examples)
    assert [e.id for e in task.examples("test", seed=5)] == [e.id for e in shuffled]
    assert [e.answer for e in load_task("arc_challenge").examples("test")] == [" A", " B"]
    with pytest.raises(NotImplementedError, match="no procedural generator"):
        task.draw(None)
