"""The RAVEL task: entity table, determinism, entity-disjoint splits, counterfactuals, causal labels, span
schema, tokenization, and the official rows."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from mibench.causal.causal_model import CausalModelError
from mibench.data.registry import get_card, load_task
from mibench.data.splits import SPLITS, partition_of
from mibench.tasks.ravel.entities import ATTRIBUTES, CITIES_PER_COUNTRY, COUNTRIES, city_table
from mibench.tasks.ravel.task import COUNTERFACTUALS, TEMPLATES, TEMPLATES_PER_ATTRIBUTE, ravel_prompt

SPLIT_NAMES = ("train", "validation", "test")
FIXTURE = Path(__file__).parent / "fixtures" / "official" / "ravel" / "test.jsonl"


@pytest.fixture(scope="module")
def task():
    return load_task("ravel")


@pytest.fixture(scope="module")
def splits(task):
    return {split: task.examples(split) for split in SPLIT_NAMES}


@pytest.fixture(scope="module")
def word_tokenizer(splits):
    """The zoo's word tokenizer, built the way the trainer builds it (the words of the card-sized splits)."""
    from training.vocab import build_tokenizer, words_of

    return build_tokenizer(set().union(*(words_of(examples) for examples in splits.values())))


def _cities(example) -> set[str]:
    return {example.variables["entity"]} | {cf.variables["entity"] for cf in example.counterfactuals.values()}


# ------------------------------------------------------------------------------------ entity table
def test_city_table_is_consistent_within_each_country():
    table = city_table()
    assert len(table) == len(COUNTRIES) * CITIES_PER_COUNTRY
    by_country = defaultdict(set)
    for name, city in table.items():
        assert name == city.name and name.isalpha() and name[0].isupper()
        by_country[city.Country].add((city.Continent, city.Language))
    assert {country: values.pop() for country, values in by_country.items()} == dict(COUNTRIES)
    reserved = set(COUNTRIES) | {v for pair in COUNTRIES.values() for v in pair}
    assert not reserved & set(table)
    # languages are shared across countries, so Language is not a relabelling of Country
    assert len({lang for _, lang in COUNTRIES.values()}) < len(COUNTRIES)
    assert all(len(v.split()) == 1 for pair in COUNTRIES.values() for v in pair)


def test_city_table_is_fixed():
    """The table is part of the task's definition (a shipped model knows these cities): pin it."""
    names = list(city_table())
    assert names[:3] == ["Stebrou", "Bakur", "Neidren"] and len(set(names)) == 612


# ---------------------------------------------------------------------------------------- card
def test_card(task):
    card = get_card("ravel")
    assert card.counterfactuals == list(COUNTERFACTUALS) and card.default_counterfactual == "entity"
    assert card.causal is not None and card.causal.variables == list(ATTRIBUTES)
    assert card.causal.positions == ["entity", "END"]
    assert card.official is not None and card.official.hf_repo == "mib-bench/ravel"
    assert card.span_schema is not None and card.span_schema.anchors == ["entity", "END"]
    assert set(card.splits) == set(SPLIT_NAMES)
    assert all(len(templates) == TEMPLATES_PER_ATTRIBUTE for templates in TEMPLATES.values())
    assert task.model_training_splits == SPLIT_NAMES


def test_same_seed_same_examples(task):
    assert task.examples("test", 40) == task.examples("test", 40)
    assert [e.prompt for e in task.examples("test", 40, seed=9)] != [e.prompt for e in task.examples("test", 40)]
    random.seed(1)
    first = task.examples("validation", 20)
    random.seed(2)
    assert task.examples("validation", 20) == first


# -------------------------------------------------------------------------------------- splits
def test_splits_are_disjoint_by_city_counterfactuals_included(splits):
    cities = {split: set().union(*map(_cities, examples)) for split, examples in splits.items()}
    for split, names in cities.items():
        assert all(partition_of("ravel", name) == split for name in names), split
    assert not cities["train"] & cities["test"] and not cities["validation"] & cities["test"]
    assert len(splits["test"]) == 500 and len({e.prompt for e in splits["test"]}) == 500
    assert len(cities["test"]) >= 40  # hundreds of prompts over dozens of held-out cities
    # every city a model is taught (train, validation, test partitions) is in the card-sized splits, so the
    # trainer's vocabulary, collected from them, covers every city it draws
    taught = {n for n in city_table() if partition_of("ravel", n) in SPLIT_NAMES}
    assert set().union(*cities.values()) == taught


# ----------------------------------------------------------------------------- prompts and spans
def test_prompts_answers_and_spans(splits):
    table = city_table()
    for e in splits["validation"]:
        v = e.variables
        city = table[v["entity"]]
        assert e.template in TEMPLATES[v["queried_attribute"]]
        assert e.prompt == e.template.format(city=city.name)
        assert e.answer == " " + city.attribute(v["queried_attribute"]) == " " + v["answer"]
        assert v["attributes"] == {a: city.attribute(a) for a in ATTRIBUTES}
        assert e.span_text("entity") == city.name
        assert e.spans["END"][1] == len(e.prompt)


def test_counterfactual_kinds(splits):
    table = city_table()
    for e in splits["validation"]:
        v = e.variables
        queried = v["queried_attribute"]
        for kind in COUNTERFACTUALS:
            cf = e.counterfactual(kind)
            cv = cf.variables
            other = table[cv["entity"]]
            assert (cf.prompt, cf.spans, cf.variables) == ravel_prompt(other, cv["queried_attribute"], cv["template"])
            assert cf.answer == " " + other.attribute(cv["queried_attribute"])
            assert other.attribute(queried) != v["attributes"][queried]  # the base's attribute changes
        assert e.counterfactual("entity").variables["template"] == e.template
        assert e.counterfactual("entity").prompt.replace(e.counterfactual("entity").variables["entity"], "") == \
            e.prompt.replace(v["entity"], "")
        pt = e.counterfactual("prompt_template").variables
        assert pt["queried_attribute"] == queried and pt["template"] != e.template
        assert e.counterfactual("attribute").variables["queried_attribute"] != queried


# ------------------------------------------------------------------------------------ causal model
def test_causal_labels_follow_mibs_rule(task, splits):
    """Independent oracle: interchanging attribute X changes the output to the source city's X exactly when
    the base asks for X; otherwise the base's answer stands (isolation)."""
    model = task.causal_model()
    table = city_table()
    seen = defaultdict(int)
    for e in splits["validation"][:200]:
        base_city, queried = table[e.variables["entity"]], e.variables["queried_attribute"]
        assert model.output(e.variables) == e.answer
        for kind in ("prompt_template", "attribute"):
            source_city = table[e.counterfactual(kind).variables["entity"]]
            for variable in ATTRIBUTES:
                label = model.interchange_label(e.variables, e.counterfactual(kind).variables, variable)
                expected = source_city.attribute(variable) if variable == queried else base_city.attribute(queried)
                assert label == " " + expected
                seen["cause" if variable == queried else "isolate"] += 1
                if variable == queried:
                    assert label != e.answer  # the source city differs in the queried attribute
    assert seen["cause"] and seen["isolate"]
    with pytest.raises(CausalModelError):
        model.output({"entity": "X", "queried_attribute": "Country", "attributes": {"Language": "French"}})


# ------------------------------------------------------------------------------- span schema, tokens
def test_span_schema_fits_every_prompt(splits, word_tokenizer, gpt2_bpe):
    from mibench.data.span_schema import check_schema

    schema = get_card("ravel").span_schema
    for tokenizer in (word_tokenizer, gpt2_bpe):
        report = check_schema(schema, splits["test"][:200], tokenizer, counterfactuals=list(COUNTERFACTUALS))
        assert not report.failures, report.failures[:3]
        assert report.names == ["prefix", "entity", "query", "END"]


def test_single_token_answers_and_cities_with_the_zoo_word_tokenizer(splits, word_tokenizer):
    from mibench.data.tokenization import answer_token, check_aligned, role_positions

    tok = word_tokenizer
    for e in splits["test"]:
        answer_token(tok, e.answer, e.id)
        for kind in COUNTERFACTUALS:
            answer_token(tok, e.counterfactual(kind).answer, e.id)
        check_aligned(tok, e, "entity")  # the circuit track patches the entity swap position by position
        positions = role_positions(tok, e.prompt, e.spans)
        ids = tok(e.prompt, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert len(positions["entity"]) == 1 and tok.decode([ids[positions["entity"][0] - 1]]) == e.variables["entity"]
    for city in city_table():
        if partition_of("ravel", city) in SPLIT_NAMES:
            answer_token(tok, " " + city, city)


# ------------------------------------------------------------------------------------ official rows
def test_official_rows_in_mibs_layout():
    from mibench.data.official import load_official

    examples = load_official("ravel", "test", data_files=FIXTURE)
    assert [e.id for e in examples] == ["ravel/official-test/000000", "ravel/official-test/000001",
                                       "ravel/official-test/000003"]  # row 2 is a Wikipedia sentence: no answer
    first, second, third = examples
    assert first.answer == " France" and first.span_text("entity") == "Lyon"
    assert first.variables["attributes"] == {"Country": "France"} and first.template == "%s is a city in the country of"
    assert first.counterfactual("prompt_template").answer == " Japan"
    assert not first.counterfactual("wikipedia").has_answer
    assert second.span_text("entity") == "Tokyo" and second.spans["entity"][0] > second.prompt.index("Paris")
    assert third.span_text("entity") == "Rio de Janeiro" and third.answer == " South America"
    assert third.span_text("END") == "A:"


def test_official_rows_label_what_they_can():
    """A row knows only its queried attribute's value: cause pairs come from prompt_template counterfactuals,
    isolation pairs from attribute counterfactuals; a label that needs an unknown value is refused."""
    from mibench.data.official import load_official

    model = load_task("ravel").causal_model()
    example = load_official("ravel", "test", data_files=FIXTURE)[0]  # asks Lyon's Country
    pt, attr = example.counterfactual("prompt_template"), example.counterfactual("attribute")
    assert model.interchange_label(example.variables, pt.variables, "Country") == " Japan"
    assert model.interchange_label(example.variables, attr.variables, "Language") == " France"  # isolation
    with pytest.raises(CausalModelError):
        model.interchange_label(example.variables, attr.variables, "Country")  # Lima's country is not in the row


@pytest.mark.parametrize("edit,column", [
    (lambda r: r.pop("entity"), "entity"),
    (lambda r: r.update(attribute="Timezone"), "attribute"),
    (lambda r: r.update(entity="Nantes"), "entity"),
    (lambda r: r["attribute_counterfactual"].pop("label"), "attribute_counterfactual.label"),
])
def test_malformed_official_rows_are_located(tmp_path, edit, column):
    import json

    from mibench.data.official import OfficialDataError, load_official

    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    edit(rows[0])
    path = tmp_path / "ravel.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(OfficialDataError, match=rf"row 0, column {column}:"):
        load_official("ravel", "test", data_files=path)


# ------------------------------------------------------------------------------- disentanglement view
def test_rebalancing_keeps_every_target_example_and_half_as_many_of_each_other(splits):
    from mibench.tasks.ravel.disentanglement import rebalanced

    examples = splits["test"]
    for variable in ATTRIBUTES:
        kept = rebalanced(examples, variable, seed=3)
        counts = {a: sum(e.variables["queried_attribute"] == a for e in kept) for a in ATTRIBUTES}
        n = sum(e.variables["queried_attribute"] == variable for e in examples)
        assert counts[variable] == n and all(counts[a] == n // 2 for a in ATTRIBUTES if a != variable)
        assert [e.id for e in kept] == sorted(e.id for e in kept)  # original order
        assert kept == rebalanced(examples, variable, seed=3)
    with pytest.raises(ValueError, match="unknown RAVEL attribute"):
        rebalanced(examples, "Timezone")


def test_disentanglement_splits_pairs_by_what_the_base_asks():
    from mibench.tasks.ravel.disentanglement import disentanglement

    queried = {"a": "Country", "b": "Country", "c": "Language", "d": "Continent"}
    # kind 1: both cause pairs right, isolation broken on c; kind 2: one cause pair wrong, isolation kept
    result = disentanglement({"attribute": [True, True, False, True], "prompt_template": [False, True]},
                             {"attribute": ["a", "b", "c", "d"], "prompt_template": ["a", "c"]}, queried, "Country")
    assert result.cause == pytest.approx((1.0 + 0.0) / 2) and result.isolate == pytest.approx((0.5 + 1.0) / 2)
    assert (result.cause_pairs, result.isolate_pairs) == (3, 3) and result.score == pytest.approx(0.625)
    with pytest.raises(ValueError, match="3 results for 4 pairs"):
        disentanglement({"attribute": [True] * 3}, {"attribute": ["a", "b", "c", "d"]}, queried, "Country")
