"""Position-aware span schemas: card validation, segmentation of prompts, and the fit on every task's data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import mibench.tasks
from mibench.data.card import SpanSchema, TaskCardError, load_card
from mibench.data.registry import get_card, list_cards, load_task
from mibench.data.span_schema import SchemaError, check_schema, span_names, token_spans
from mibench.data.tokenization import encode
from mibench.models.loading import tokenizer_from
from mibench.zoo.catalog import model_path

PROCEDURAL = ("ioi", "mcqa", "arithmetic_addition", "arithmetic_subtraction", "induction")


@pytest.fixture(scope="module")
def zoo_tokenizer():
    return tokenizer_from(str(model_path("gpt2-tasks")))


def test_span_names_follow_the_anchors():
    assert span_names(get_card("ioi").span_schema) == ["prefix", "N1", "and", "N2", "action1", "S2", "action2",
                                                      "END"]
    schema = SpanSchema(anchors=["a", "b", "c"], gap_names={"a": None})
    assert span_names(schema) == ["prefix", "a", "b", "b+", "c"]


@pytest.mark.parametrize("schema, message", [
    ({"anchors": ["IO", "IO", "END"]}, "anchors repeat"),
    ({"anchors": ["IO", "END"], "gap_names": {"END": "tail"}}, "not anchors followed by a gap"),
    ({"anchors": ["IO", "S2", "END"], "gap_names": {"IO": "S2"}}, "must be distinct"),
    ({"anchors": ["IO", "nowhere", "END"]}, "not roles of the card's schema"),
    ({"anchors": []}, "at least 1"),
])
def test_cards_refuse_schemas_that_cannot_segment(tmp_path, schema, message):
    raw = yaml.safe_load((Path(mibench.tasks.__file__).parent / "ioi" / "card.yaml").read_text())
    raw["span_schema"] = schema
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(TaskCardError, match=message):
        load_card(path)


def test_an_ioi_prompt_is_cut_into_its_spans(zoo_tokenizer):
    example = load_task("ioi").examples("test", 1)[0]
    schema = get_card("ioi").span_schema
    ranges = token_spans(zoo_tokenizer, example.prompt, example.spans, schema)
    ids = encode(zoo_tokenizer, example.prompt)
    assert ranges[0][0] == 0 and ranges[-1] == (len(ids) - 1, len(ids))  # from BOS to the answer position
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous: every token in one span
    text = {name: zoo_tokenizer.decode(ids[start:end]).strip() for name, (start, end) in zip(span_names(schema), ranges)}
    first, second = sorted(("IO", "S1"), key=lambda role: example.spans[role][0])
    for name, role in (("N1", first), ("N2", second), ("S2", "S2"), ("END", "END")):
        start, end = example.spans[role]
        assert text[name] == example.prompt[start:end]
    assert text["and"] == "and"


@pytest.mark.parametrize("task_id", PROCEDURAL)
def test_every_schema_fits_every_prompt_of_its_task(task_id, zoo_tokenizer, gpt2_bpe):
    task = load_task(task_id)
    examples = task.examples("test", 100) + task.examples("train", 100)
    kinds = [k for k in task.card.counterfactuals if all(e.counterfactual(k).has_answer for e in examples)]
    for tokenizer in (zoo_tokenizer, gpt2_bpe):
        report = check_schema(task.card.span_schema, examples, tokenizer, counterfactuals=kinds)
        assert report.ok, report.failures[:3]
        assert report.prompts == len(examples) * (1 + len(kinds))
        assert report.empty[report.names[-1]] == 0 and set(report.lengths[report.names[-1]]) == {1}


def test_every_task_declares_a_schema():
    assert all(card.span_schema is not None for card in list_cards())


def test_prompts_that_do_not_fit_are_reported_with_the_example_and_the_anchor(zoo_tokenizer):
    schema = get_card("ioi").span_schema
    example = load_task("ioi").examples("test", 1)[0]
    swapped = dict(example.spans, N1=example.spans["N2"], N2=example.spans["N1"])
    with pytest.raises(SchemaError, match="anchor 'N2' .* does not come after 'N1'"):
        token_spans(zoo_tokenizer, example.prompt, swapped, schema, where="example x")
    early_end = dict(example.spans, END=example.spans["S2"])
    with pytest.raises(SchemaError, match="not at the final token"):
        token_spans(zoo_tokenizer, example.prompt, early_end, schema)
    missing = {k: v for k, v in example.spans.items() if k != "S2"}
    report = check_schema(schema, [example, dataclasses.replace(example, id="broken", spans=missing)], zoo_tokenizer)
    assert report.prompts == 2 and report.failures == ["example broken: has no 'S2' span (the schema's anchors are "
                                                       "['N1', 'N2', 'S2', 'END'])"]
    adjacent = SpanSchema(anchors=["N1", "N2", "END"], gap_names={"N1": None})
    with pytest.raises(SchemaError, match="should follow 'N1' immediately"):
        token_spans(zoo_tokenizer, example.prompt, example.spans, adjacent)


@pytest.mark.parametrize("task_id", ["ioi", "mcqa", "arithmetic_addition", "arc_easy"])
def test_schemas_fit_the_official_data(task_id, gpt2_bpe):
    from tests.test_official_data import load

    task = load_task(task_id)
    examples = load(task_id)
    kinds = [k for k in (task.card.causal.counterfactuals if task.card.causal else [])
             if all(k in e.counterfactuals for e in examples)]
    report = check_schema(task.card.span_schema, examples, gpt2_bpe, counterfactuals=kinds)
    assert report.ok, report.failures[:3]
